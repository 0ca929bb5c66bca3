"""Activation checkpointing (``with_cp``): same outputs, gradients and BatchNorm statistics.

Each test builds a backbone with and without ``with_cp`` from one state dict and runs the same
step through both. Checkpointing runs every block and downsample layer a second time inside
backward; that recomputation must neither change a gradient nor update a BatchNorm twice, and it
must only happen where autograd records the layer.
"""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from repnext_mm.models.backbones.repnext import SRP_FORWARD_MODES, RepNeXt
from repnext_mm.models.layers import activation_checkpoint
from tests.helpers import max_rel_error, randomize_norms

TINY = dict(widths=[8, 16, 32, 64], depths=[1, 2, 2, 1])
LAYERS = sum(TINY['depths']) + 3  # every block and the three downsample layers
TOLERANCE = 1e-5  # relative; the recomputation repeats the same operations on the same input

# One intra-op thread: the shared 2-core test machines make OpenMP threads wait.
pytestmark = pytest.mark.usefixtures('one_cpu_thread')


@pytest.fixture
def checkpoint_calls(monkeypatch) -> list[nn.Module]:
    """The modules passed to ``torch.utils.checkpoint.checkpoint``, one entry per call."""
    calls = []
    original = activation_checkpoint.checkpoint

    def counting(function, *args, **kwargs):
        calls.append(function)
        return original(function, *args, **kwargs)

    monkeypatch.setattr(activation_checkpoint, 'checkpoint', counting)
    return calls


def twins(**kwargs) -> tuple[RepNeXt, RepNeXt]:
    """``(without, with)`` activation checkpointing, identical weights and statistics, in train
    mode."""
    torch.manual_seed(0)
    plain = randomize_norms(RepNeXt(TINY, **kwargs))
    checkpointed = RepNeXt(TINY, with_cp=True, **kwargs)
    checkpointed.load_state_dict(plain.state_dict(), strict=True)
    return plain.train(), checkpointed.train()


def images(requires_grad: bool = False) -> Tensor:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return x.requires_grad_(requires_grad)


def training_step(model: nn.Module, x: Tensor, backward_passes: int = 1) -> list[Tensor]:
    """Forward, then backward of a fixed random projection of every output (distinct gradients
    at every position, so an error confined to some pixels cannot cancel out)."""
    outputs = model(x)
    gen = torch.Generator().manual_seed(2)
    loss = sum((out * torch.randn(out.shape, generator=gen)).sum() for out in outputs)
    if loss.requires_grad:
        for index in range(backward_passes):
            loss.backward(retain_graph=index + 1 < backward_passes)
    return [out.detach() for out in outputs]


def assert_same_step(plain: RepNeXt, checkpointed: RepNeXt, x: Tensor) -> None:
    """One step through each twin agrees in outputs, gradients and every buffer."""
    x_plain, x_cp = x.detach().clone(), x.detach().clone()
    for twin_input in (x_plain, x_cp):
        twin_input.requires_grad_(x.requires_grad)
    for a, b in zip(training_step(plain, x_plain), training_step(checkpointed, x_cp)):
        assert max_rel_error(b, a) < TOLERANCE
    if x.requires_grad:
        assert max_rel_error(x_cp.grad, x_plain.grad) < TOLERANCE
    params_cp = dict(checkpointed.named_parameters())
    for name, param in plain.named_parameters():
        grad_cp = params_cp[name].grad
        assert (param.grad is None) == (grad_cp is None), name
        if param.grad is not None:
            assert max_rel_error(grad_cp, param.grad) < TOLERANCE, name
    assert_same_buffers(plain, checkpointed)


def assert_same_buffers(expected: nn.Module, actual: nn.Module) -> None:
    actual_buffers = dict(actual.named_buffers())
    for name, buf in expected.named_buffers():
        if buf.is_floating_point():
            assert max_rel_error(actual_buffers[name], buf) < 1e-6, name
        else:  # num_batches_tracked
            assert torch.equal(actual_buffers[name], buf), name


@pytest.mark.parametrize('srp_forward', SRP_FORWARD_MODES)
def test_checkpointing_changes_no_output_gradient_or_statistic(srp_forward, checkpoint_calls):
    plain, checkpointed = twins(srp_forward=srp_forward)
    assert_same_step(plain, checkpointed, images(requires_grad=True))
    assert len(checkpoint_calls) == LAYERS
    assert checkpointed.with_cp and not plain.with_cp


@pytest.mark.parametrize('norm', ['BN', 'BN momentum=None', 'SyncBN converted'])
def test_batchnorm_statistics_are_updated_once_per_step(norm):
    """Plain checkpointing would update them again in the recomputation: num_batches_tracked 2
    and the running averages moved twice. Also with a second backward pass (retain_graph),
    which recomputes every layer once more, and with a cumulative average (momentum=None)."""
    norm_cfg = dict(type='BN', momentum=None) if norm == 'BN momentum=None' else None
    plain, checkpointed = twins(norm_cfg=norm_cfg)
    if norm == 'SyncBN converted':  # as mmdet's and mmseg's runners do for distributed training
        plain, checkpointed = map(nn.SyncBatchNorm.convert_sync_batchnorm, (plain, checkpointed))
    x = images()
    training_step(plain, x)
    training_step(checkpointed, x, backward_passes=2)
    norms = [m for m in checkpointed.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(m.num_batches_tracked.item() == 1 for m in norms)
    assert {m.momentum for m in norms} == {None if norm_cfg else 0.1}  # restored after recompute
    assert_same_buffers(plain, checkpointed)
    moved = [not torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in norms]
    assert all(moved)  # randomized, then updated: the comparison above is not vacuous


def test_nothing_is_checkpointed_where_autograd_records_nothing(checkpoint_calls):
    _, model = twins()
    with torch.no_grad():
        model(images())
        model.eval()(images())
    with torch.inference_mode():
        model(images())
    assert not checkpoint_calls
    # Independent of train / eval mode: what matters is whether gradients are needed.
    model(images())
    assert len(checkpoint_calls) == LAYERS


def test_frozen_stages_are_checkpointed_only_when_gradients_pass_through(checkpoint_calls):
    plain, checkpointed = twins(frozen_stages=2)
    assert_same_step(plain, checkpointed, images())
    # Stages 0 and 1 hold no trainable parameter and get an input that needs no gradient: autograd
    # saves nothing there. Stages 2 and 3: their downsample layers and blocks.
    stage_layers = [checkpointed.stages[2].downsample, *checkpointed.stages[2].blocks,
                    checkpointed.stages[3].downsample, *checkpointed.stages[3].blocks]
    assert [id(m) for m in checkpoint_calls] == [id(m) for m in stage_layers]

    # A gradient wanted for the input flows through the frozen stages: they save activations too.
    checkpoint_calls.clear()
    plain, checkpointed = twins(frozen_stages=2)
    assert_same_step(plain, checkpointed, images(requires_grad=True))
    assert len(checkpoint_calls) == LAYERS


def test_everything_frozen_needs_no_checkpointing(checkpoint_calls):
    _, model = twins(frozen_stages=4)
    assert not any(out.requires_grad for out in model(images()))
    assert not checkpoint_calls


def test_norm_eval(checkpoint_calls):
    plain, checkpointed = twins(norm_eval=True)
    before = {k: v.clone() for k, v in checkpointed.state_dict().items()}
    assert_same_step(plain, checkpointed, images())
    assert len(checkpoint_calls) == LAYERS
    assert all(torch.equal(before[k], v) for k, v in checkpointed.state_dict().items())


def test_fused_form_ignores_with_cp(checkpoint_calls):
    plain, checkpointed = twins()
    for model in (plain, checkpointed):
        model.eval().switch_to_deploy()
    x = images(requires_grad=True)  # autograd records: checkpointing would otherwise run
    for a, b in zip(plain(x), checkpointed(x)):
        assert max_rel_error(b, a) < TOLERANCE
    RepNeXt(TINY, deploy=True, with_cp=True)(x)
    assert not checkpoint_calls


def test_with_cp_can_be_switched_after_construction(checkpoint_calls):
    model = RepNeXt(TINY)
    model.with_cp = True
    assert model.with_cp and all(stage.with_cp for stage in model.stages)
    model(images())
    assert len(checkpoint_calls) == LAYERS
    model.with_cp = False
    model(images())
    assert len(checkpoint_calls) == LAYERS
