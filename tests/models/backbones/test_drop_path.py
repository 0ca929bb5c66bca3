"""Stochastic depth of the RepNeXt backbone (``RepNeXt(drop_path_rate=...)``): the default builds
exactly today's model, a rate drops residual branches in training only, rising linearly over
the blocks and downsample layers, and the fusion removes it."""
import copy

import pytest
import torch
from mmcv.cnn.bricks import DropPath
from mmengine.config import Config

from repnext_mm.apis.build_errors import config_errors
from repnext_mm.models.backbones.repnext import Downsample, RepNeXt, RepNeXtBlock
from repnext_mm.registry import MODELS
from repnext_mm.utils.errors import InputError
from tests.helpers import max_rel_error, randomize_norms

pytestmark = pytest.mark.usefixtures('one_cpu_thread')

DEPTHS_M0 = (2, 2, 9, 1)


@pytest.fixture(scope='module')
def x() -> torch.Tensor:
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _residual_layers(backbone: RepNeXt) -> list[torch.nn.Module]:
    """Every block and downsample layer, in the order the input passes them."""
    return [m for m in backbone.modules() if isinstance(m, (RepNeXtBlock, Downsample))]


def _rates(backbone: RepNeXt) -> list[float]:
    return [layer.drop_path.drop_prob if isinstance(layer.drop_path, DropPath) else 0.0
            for layer in _residual_layers(backbone)]


def test_the_default_builds_no_drop_path_and_the_same_state_dict():
    torch.manual_seed(0)
    plain = RepNeXt('m0')
    torch.manual_seed(0)
    dropping = RepNeXt('m0', drop_path_rate=0.3)
    assert not any(isinstance(m, DropPath) for m in plain.modules())
    assert all(isinstance(layer.drop_path, torch.nn.Identity) for layer in _residual_layers(plain))
    # a rate adds no parameter or buffer: checkpoints fit either way
    plain_state, dropping_state = plain.state_dict(), dropping.state_dict()
    assert list(plain_state) == list(dropping_state)
    assert all(torch.equal(plain_state[k], dropping_state[k]) for k in plain_state)


def test_rates_rise_linearly_from_zero_to_the_rate_over_blocks_and_downsample_layers():
    backbone = RepNeXt('m0', drop_path_rate=0.26)
    rates = _rates(backbone)
    assert len(rates) == sum(DEPTHS_M0) + 3  # three stages open with a downsample layer
    expected = [0.26 * i / (len(rates) - 1) for i in range(len(rates))]
    assert rates == pytest.approx(expected)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.26)
    # rate 0 at the first block: an identity there, DropPath everywhere after it
    assert isinstance(backbone.stages[0].blocks[0].drop_path, torch.nn.Identity)
    assert backbone.stages[1].downsample.drop_path.drop_prob == pytest.approx(0.26 * 2 / 16)
    per_stage = RepNeXt.drop_path_rates(0.26, DEPTHS_M0)
    assert [len(stage) for stage in per_stage] == [2, 3, 10, 2]


def test_drops_in_training_only_and_equals_the_plain_model_in_eval(x):
    torch.manual_seed(0)
    plain = randomize_norms(RepNeXt('m0'))
    dropping = RepNeXt('m0', drop_path_rate=0.5)
    dropping.load_state_dict(plain.state_dict())
    training = copy.deepcopy(dropping).train()  # (its forwards move the BatchNorm statistics)
    with torch.no_grad():
        first, second = training(x)[-1], training(x)[-1]
        assert not torch.allclose(first, second)  # a new draw of dropped branches each time
        plain.eval(), dropping.eval()
        assert torch.equal(dropping(x)[-1], dropping(x)[-1])
        assert all(torch.equal(a, b) for a, b in zip(dropping(x), plain(x)))


def test_the_fusion_removes_the_drop_path_and_equals_the_eval_model(x):
    torch.manual_seed(0)
    model = randomize_norms(RepNeXt('m0', drop_path_rate=0.5)).eval()
    with torch.no_grad():
        expected = model(x)
        fused = copy.deepcopy(model)
        fused.switch_to_deploy()
        assert not any(isinstance(m, DropPath) for m in fused.modules())
        for output, reference in zip(fused.train()(x), expected):  # even in training mode
            assert max_rel_error(output, reference) < 1e-5
    built_fused = RepNeXt('m0', drop_path_rate=0.5, deploy=True)
    assert not any(isinstance(m, DropPath) for m in built_fused.modules())


def test_checkpointing_replays_the_same_drops(x):
    """``with_cp`` recomputes each layer in backward: the same branches must be dropped again,
    or the gradients would belong to another network."""
    torch.manual_seed(0)
    plain = RepNeXt('m0', drop_path_rate=0.5)
    checkpointed = copy.deepcopy(plain)
    checkpointed.with_cp = True
    for net in (plain, checkpointed):
        torch.manual_seed(1)
        net(x)[-1].square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize('rate', [1.0, -0.1, 'abc', True, None])
def test_a_rate_outside_0_to_1_is_refused(rate):
    with pytest.raises(ValueError, match=rf'drop_path_rate={rate!r}: expected a number in '
                                         r'\[0, 1\)'):
        RepNeXt('m0', drop_path_rate=rate)


def test_a_bad_rate_in_a_config_is_one_line_naming_its_key():
    cfg = Config(dict(model=dict(type='ImageClassifier', backbone=dict(
        type='repnext_mm.RepNeXt', arch='m0', drop_path_rate=1.5))))
    with pytest.raises(InputError) as error, config_errors(cfg):
        MODELS.build(cfg.model.backbone)
    assert str(error.value).startswith('model.backbone.drop_path_rate=1.5: expected a number '
                                       'in [0, 1)'), str(error.value)
