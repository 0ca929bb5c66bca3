"""The fast training path (``srp_forward='merged'``) must be the literal multi-branch form.

``'merged'`` rebuilds each SRP branch set's single equivalent kernel from the branch weights on
every forward and runs one depthwise convolution; ``'branches'`` runs every branch and sums. Both
own exactly the same parameters, so with one state dict loaded into both, outputs, every parameter
gradient, the input gradient and the BatchNorm running statistics must agree up to float rounding.
"""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from repnext_mm.models.backbones.repnext import (SRP_FORWARD_MODES, LargeStripConv, RepDWConvM,
                                                 RepDWConvS, RepNeXt, RepNeXtBlock)
from tests.helpers import first_quick_rest_slow, max_rel_error, randomize_norms

TOLERANCE = 1e-4  # max relative error; summation order is the only difference between the forms
ARCHS = tuple(RepNeXt.arch_settings)

# One intra-op thread: with two OpenMP threads on two busy cores, every parallel region waits
# for a descheduled thread, which made this module 10-50x slower (and its run time erratic).
pytestmark = pytest.mark.usefixtures('one_cpu_thread')


@torch.no_grad()
def randomize_parameters(module: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every parameter O(1) random values (zero or near-zero init would hide a missing
    branch: e.g. a dropped bias-free strip pair with tiny weights changes the output by little)."""
    gen = torch.Generator().manual_seed(seed)
    for param in module.parameters():
        param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return module


def twin_pair(build, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Builds ``build('merged')`` and ``build('branches')`` holding identical weights."""
    merged = build('merged')
    branches = build('branches')
    branches.load_state_dict(merged.state_dict(), strict=True)  # same layout in both forms
    return merged, branches


def forward_backward(module: nn.Module, x: Tensor, seed: int = 1) -> tuple[list[Tensor], Tensor]:
    """Runs forward + backward of a fixed random projection of the outputs.

    A random projection (not ``sum()``) makes every output element's gradient distinct, so an
    error confined to some positions (e.g. a border) cannot cancel out.
    """
    x = x.clone().requires_grad_(True)
    outputs = module(x)
    outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    gen = torch.Generator().manual_seed(seed)
    loss = sum((out * torch.randn(out.shape, generator=gen)).sum() for out in outputs)
    loss.backward()
    return [out.detach() for out in outputs], x.grad


def bias_gradient_vanishes(model: RepNeXt, name: str) -> bool:
    """True for a bias whose exact gradient is zero in a backbone with train-mode BatchNorms.

    A train-mode BN subtracts the batch mean, so a per-channel constant added before it (and
    carried to it only by per-channel or 1x1 linear maps without padding) cancels. That holds for
    every SRP branch bias and the bias of the second (kx1) conv of the large strip pair (the
    token mixer's output goes straight into a BN), and for the block BN's own bias (it reaches
    only the first 1x1 conv of the channel mixer, itself followed by a BN). Both forms return
    float noise for these, which a relative comparison cannot judge. The first strip conv's
    bias does not vanish: it passes through the second conv's zero padding.
    """
    if model.norm_eval or not name.endswith('.bias'):
        return False
    owner_name, child_name, _ = name.rsplit('.', 2)
    owner = model.get_submodule(owner_name)
    return (isinstance(owner, (RepDWConvS, RepDWConvM)) or
            (isinstance(owner, LargeStripConv) and child_name == 'convkx1') or
            (isinstance(owner, RepNeXtBlock) and child_name == 'norm'))


def assert_twins_agree(merged: nn.Module, branches: nn.Module, x: Tensor) -> None:
    outs_merged, input_grad_merged = forward_backward(merged, x)
    outs_branches, input_grad_branches = forward_backward(branches, x)

    assert len(outs_merged) == len(outs_branches)
    for i, (a, b) in enumerate(zip(outs_merged, outs_branches)):
        assert a.shape == b.shape
        assert max_rel_error(a, b) < TOLERANCE, f'output {i}: rel. error {max_rel_error(a, b):.2e}'
    assert max_rel_error(input_grad_merged, input_grad_branches) < TOLERANCE

    params_branches = dict(branches.named_parameters())
    checked = 0
    for name, param in merged.named_parameters():
        if not param.requires_grad:
            continue
        grad_merged, grad_branches = param.grad, params_branches[name].grad
        assert grad_merged is not None and grad_branches is not None, f'{name} got no gradient'
        checked += 1
        if isinstance(merged, RepNeXt) and bias_gradient_vanishes(merged, name):
            # Exactly zero in theory: both forms must be at rounding level relative to the
            # gradient of the weight that this bias belongs to.
            scale = dict(merged.named_parameters())[name[:-len('bias')] + 'weight'].grad.abs().max()
            for grad in (grad_merged, grad_branches):
                assert grad.abs().max() < TOLERANCE * scale, f'{name}: gradient should vanish'
            continue
        assert grad_merged.abs().max() > 0, f'{name}: zero gradient would make this check vacuous'
        err = max_rel_error(grad_merged, grad_branches)
        assert err < TOLERANCE, f'gradient of {name}: rel. error {err:.2e}'
    assert checked == sum(p.requires_grad for p in params_branches.values()) > 0

    buffers_branches = dict(branches.named_buffers())
    for name, buf in merged.named_buffers():  # BN running statistics saw the same batches
        if buf.is_floating_point():
            assert max_rel_error(buf, buffers_branches[name]) < TOLERANCE, name
        else:
            assert torch.equal(buf, buffers_branches[name]), name


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('conv_type', [RepDWConvS, RepDWConvM])
def test_rep_dw_conv_merged_equals_branches(conv_type: type, stride: int) -> None:
    channels = 6
    merged, branches = twin_pair(
        lambda mode: randomize_parameters(conv_type(channels, stride=stride, srp_forward=mode)))
    # Odd and even sizes: at stride 2 they place the last window differently against the padding.
    for size in [(9, 9), (10, 7), (16, 16)]:
        for module in (merged, branches):
            module.zero_grad(set_to_none=True)
        x = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(sum(size)))
        assert_twins_agree(merged, branches, x)
        expected_size = tuple((s + stride - 1) // stride for s in size)
        assert merged(x).shape == (2, channels, *expected_size)


@pytest.mark.parametrize('conv_type', [RepDWConvS, RepDWConvM])
def test_merged_forward_skips_the_branches(conv_type: type) -> None:
    """'merged' must run one convolution, not the branch modules (else it is no faster), and
    'branches' must run every one of them (else it is no reference)."""
    for mode, expect_calls in (('merged', False), ('branches', True)):
        module = conv_type(4, srp_forward=mode)
        called = set()
        for name, child in module.named_children():
            child.register_forward_hook(lambda *_, name=name: called.add(name))
        module(torch.randn(1, 4, 8, 8))
        if expect_calls:
            assert called == {name for name, _ in module.named_children()}
        else:
            assert not called


@pytest.mark.parametrize('arch', first_quick_rest_slow(ARCHS))
def test_backbone_merged_equals_branches_in_train_mode(arch: str) -> None:
    torch.manual_seed(0)

    def build(mode: str) -> RepNeXt:
        model = RepNeXt(arch, srp_forward=mode)
        randomize_norms(model)
        return model.train()

    merged, branches = twin_pair(build)
    assert merged.training and branches.training
    # 64x64 keeps M5 cheap (stage 3 is 2x2) while every stride-2 layer still sees padding.
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert_twins_agree(merged, branches, x)


def test_backbone_forms_agree_with_frozen_norms() -> None:
    """With ``norm_eval`` the BNs are fixed affines, so the SRP biases get real gradients that
    flow through the whole backbone: they are compared like every other parameter."""
    merged, branches = twin_pair(
        lambda mode: randomize_norms(RepNeXt('m1', srp_forward=mode, norm_eval=True)).train())
    assert not any(m.training for m in merged.modules() if isinstance(m, nn.BatchNorm2d))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    assert_twins_agree(merged, branches, x)


def test_backbone_forms_agree_with_frozen_stages() -> None:
    """Frozen parameters get no gradient in either form and the rest still agree."""
    merged, branches = twin_pair(
        lambda mode: randomize_norms(RepNeXt('m0', srp_forward=mode, frozen_stages=2)).train())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    assert_twins_agree(merged, branches, x)
    for model in (merged, branches):
        frozen = [model.stem, model.stages[0], model.stages[1]]
        assert all(p.grad is None for module in frozen for p in module.parameters())
        assert all(p.grad is not None for p in model.stages[2].parameters())


@pytest.mark.parametrize('mode', SRP_FORWARD_MODES)
def test_backbone_passes_srp_forward_to_every_rep_conv(mode: str) -> None:
    model = RepNeXt('m0', srp_forward=mode)
    rep_convs = [m for m in model.modules() if isinstance(m, (RepDWConvS, RepDWConvM))]
    # m0: 14 blocks x (S + M) + 3 downsamples x (S + M)
    assert len(rep_convs) == 2 * (14 + 3)
    assert {m.srp_forward for m in rep_convs} == {mode}
    assert model.srp_forward == mode


@pytest.mark.parametrize('bad', ['fused', 'Merged', 'branch', '', None, 1])
def test_backbone_rejects_unknown_srp_forward(bad) -> None:
    with pytest.raises(ValueError, match='srp_forward must be one of'):
        RepNeXt('m0', srp_forward=bad)


@pytest.mark.parametrize('conv_type', [RepDWConvS, RepDWConvM])
def test_rep_dw_conv_rejects_unknown_srp_forward(conv_type: type) -> None:
    with pytest.raises(ValueError, match='srp_forward must be one of'):
        conv_type(4, srp_forward='reparam')


@pytest.mark.parametrize('mode', SRP_FORWARD_MODES)
def test_both_forms_fuse_to_the_same_deploy_model(mode: str) -> None:
    """srp_forward only changes how the training form runs: switch_to_deploy gives the same
    fused model from either form, and the switched state dict loads strictly into deploy=True."""
    reference = randomize_norms(RepNeXt('m0', srp_forward='merged')).eval()
    model = RepNeXt('m0', srp_forward=mode)
    model.load_state_dict(reference.state_dict(), strict=True)
    model.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = reference(x)
        model.switch_to_deploy()
        fused = model(x)
    for a, b in zip(fused, expected):
        assert max_rel_error(a, b) < TOLERANCE
    RepNeXt('m0', deploy=True, srp_forward=mode).load_state_dict(model.state_dict(), strict=True)
