"""RepNeXt backbone: sizes against the reference facts, exact fusion, and the mmpretrain-style
arguments (out_indices, frozen_stages, norm_eval, init_cfg) that the authors' factory ignored."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

from repnext_mm.models import RepNeXt
from repnext_mm.models.backbones.repnext import ChannelMixer, CopyConv
from tests.helpers import TINY_ARCH, first_quick_rest_slow, max_rel_error, randomize_norms

ARCHS = tuple(RepNeXt.arch_settings)

# reference-facts.md: authors' training-form backbone parameters (classifier minus two BN1d+Linear heads).
BACKBONE_PARAMS = dict(m0=2_073_200, m1=4_551_780, m2=6_149_290, m3=7_438_512, m4=13_052_432,
                       m5=21_424_300)
# reference-facts.md: authors' fused classifier (one Linear head, block/downsample BN left unfolded).
AUTHORS_FUSED_CLASSIFIER_PARAMS = dict(m0=2_333_200, m1=4_829_560, m2=6_473_200, m3=7_818_920,
                                       m4=13_342_120, m5=21_737_560)
GMACS_224_WITH_HEAD = dict(m0=0.388, m1=0.822, m2=1.111, m3=1.340, m4=2.289, m5=4.544)
GMACS_512_BACKBONE = dict(m0=2.02, m1=4.29, m2=5.80, m3=7.00, m4=11.96, m5=23.74)
SIZES = ((224, 224), (512, 512), (250, 333), (97, 129))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, size: int) -> float:
    """Conv + linear MACs of one forward; on a ``meta`` module nothing is actually computed."""
    counter = FlopCounterMode(display=False)
    device = next(module.parameters()).device
    with counter, torch.no_grad():
        module(torch.randn(1, 3, size, size, device=device))
    return counter.get_total_flops() / 2  # FlopCounterMode counts a multiply-add as 2 FLOPs


@pytest.mark.parametrize('arch', ARCHS)
def test_training_form_params_match_authors_exactly(arch):
    assert count_params(RepNeXt(arch)) == BACKBONE_PARAMS[arch]


@pytest.mark.parametrize('arch', ARCHS)
def test_fully_fused_params_are_authors_fused_minus_folded_norms(arch):
    widths, depths = RepNeXt.arch_settings[arch].values()
    authors_fused_backbone = AUTHORS_FUSED_CLASSIFIER_PARAMS[arch] - (widths[-1] * 1000 + 1000)
    # Folding removes each block BN (2C: weight, bias) and each downsample BN (2 * 2C_in = 2C_out).
    folded = sum(2 * w * d for w, d in zip(widths, depths)) + sum(2 * w for w in widths[1:])
    assert count_params(RepNeXt(arch, deploy=True)) == authors_fused_backbone - folded


@pytest.mark.parametrize('arch', ARCHS)
def test_fused_gmacs_match_reference_within_2_percent(arch):
    with torch.device('meta'):
        model = RepNeXt(arch, deploy=True).eval()
    head_macs = RepNeXt.arch_settings[arch]['widths'][-1] * 1000
    gmacs_224 = (count_macs(model, 224) + head_macs) / 1e9
    gmacs_512 = count_macs(model, 512) / 1e9
    assert gmacs_224 == pytest.approx(GMACS_224_WITH_HEAD[arch], rel=0.02)
    assert gmacs_512 == pytest.approx(GMACS_512_BACKBONE[arch], rel=0.02)


def test_stage_outputs_have_strides_4_to_32():
    model = RepNeXt('m4').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 512, 512))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 128, 128), (1, 128, 64, 64), (1, 256, 32, 32),
                                              (1, 512, 16, 16)]


@pytest.fixture(scope='module', params=first_quick_rest_slow(ARCHS))
def trained_and_fused(request):
    """A backbone in eval mode with non-trivial BN statistics, and its fused copy."""
    torch.manual_seed(ARCHS.index(request.param))
    model = randomize_norms(RepNeXt(request.param), seed=1).eval()
    fused = copy.deepcopy(model)
    fused.switch_to_deploy()
    return model, fused


@pytest.mark.parametrize('size', SIZES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_fused_outputs_equal_unfused(trained_and_fused, size):
    model, fused = trained_and_fused
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected, actual = model(x), fused(x)
    assert [o.shape for o in actual] == [o.shape for o in expected]
    for stage, (a, e) in enumerate(zip(actual, expected)):
        assert max_rel_error(a, e) < 1e-4, f'stage {stage} differs after fusion'


def test_fusion_leaves_no_batchnorm_and_no_branches(trained_and_fused):
    _, fused = trained_and_fused
    assert not any(isinstance(m, _BatchNorm) for m in fused.modules())
    names = [name for name, _ in fused.named_modules()]
    assert not any(name.endswith(('conv7x7', 'conv1x3', 'conv2x2_dilated')) for name in names)
    assert fused.deploy and all(getattr(m, 'deploy', True) for m in fused.modules())


def test_switched_state_dict_loads_strictly_into_deploy_model(trained_and_fused):
    model, fused = trained_and_fused
    arch = RepNeXt.arch_name(**model.arch)
    rebuilt = RepNeXt(arch, deploy=True).eval()
    rebuilt.load_state_dict(fused.state_dict(), strict=True)
    x = torch.randn(1, 3, 97, 129)
    with torch.no_grad():
        for a, e in zip(rebuilt(x), model(x)):
            assert max_rel_error(a, e) < 1e-4


def test_switch_to_deploy_is_idempotent():
    model = randomize_norms(RepNeXt('m0')).eval()
    model.switch_to_deploy()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.switch_to_deploy()
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_module_level_switch_to_deploy_matches_whole_model_switch():
    model = randomize_norms(RepNeXt('m0')).eval()
    whole = copy.deepcopy(model)
    whole.switch_to_deploy()
    block = model.stages[1].blocks[0]
    x = torch.randn(1, 80, 9, 11)
    with torch.no_grad():
        expected = block(x)
        block.switch_to_deploy()
        assert max_rel_error(block(x), expected) < 1e-5
        assert max_rel_error(whole.stages[1].blocks[0](x), expected) < 1e-5


def _random_affine(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(channels) + 0.5, torch.rand(channels) - 0.5


def test_copy_conv_folds_the_affine_on_its_output():
    copy_conv = CopyConv(8).eval()
    copy_conv.switch_to_deploy()
    scale, shift = _random_affine(16)
    x = torch.randn(2, 8, 13, 10)
    with torch.no_grad():
        expected = copy_conv(x) * scale[:, None, None] + shift[:, None, None]
        copy_conv.fold_output_affine(scale, shift)
        assert max_rel_error(copy_conv(x), expected) < 1e-5


def test_channel_mixer_folds_the_affine_on_its_input():
    mixer = randomize_norms(ChannelMixer(8, mlp_ratio=2, norm_cfg=None, deploy=False)).eval()
    mixer.switch_to_deploy()
    scale, shift = _random_affine(8)
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        expected = mixer(x * scale[:, None, None] + shift[:, None, None])
        mixer.fold_input_affine(scale, shift)
        assert max_rel_error(mixer(x), expected) < 1e-5


@pytest.mark.parametrize('build, fold, channels', [
    (lambda: CopyConv(8), 'fold_output_affine', 16),
    (lambda: ChannelMixer(8, 2, None, False), 'fold_input_affine', 8),
], ids=['copy_conv', 'channel_mixer'])
def test_folding_an_affine_needs_the_fused_form(build, fold, channels):
    with pytest.raises(RuntimeError, match='switch_to_deploy'):
        getattr(build(), fold)(*_random_affine(channels))


# ----------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize('out_indices, expected', [((3, ), (3, )), ((-1, ), (3, )), ((0, 2), (0, 2)),
                                                   (1, (1, )), ((-4, -1), (0, 3))])
def test_out_indices(out_indices, expected):
    model = RepNeXt('m0', out_indices=out_indices).eval()
    assert model.out_indices == expected
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [model.widths[i] for i in expected]


@pytest.mark.parametrize('bad, message', [
    ((0, 1, 2, 7), 'out_indices=(0, 1, 2, 7): stage 7 does not exist; RepNeXt has stages 0..3 '
                   '(-4..-1 count from the last)'),
    (4, 'out_indices=4: stage 4 does not exist'),
    ((-5, ), 'out_indices=(-5,): stage -5 does not exist'),
    ((1, 1), 'out_indices=(1, 1): stage 1 is named twice'),
    ((0, -4), 'out_indices=(0, -4): stage 0 is named twice'),
    (('1', ), "out_indices=('1',): '1' is not a stage index; RepNeXt has stages 0..3"),
    ((True, ), 'out_indices=(True,): True is not a stage index'),
    ('abc', "out_indices='abc': expected a stage index or a sequence of distinct ones; RepNeXt "
            'has stages 0..3'),
    ((), 'out_indices=(): expected a stage index or a sequence of distinct ones'),
    (None, 'out_indices=None: expected a stage index'),
])
def test_bad_out_indices_name_the_accepted_stages(bad, message):
    with pytest.raises(ValueError) as error:
        RepNeXt('m0', out_indices=bad)
    assert str(error.value).startswith(message), error.value


@pytest.mark.parametrize('arguments, message', [
    (dict(frozen_stages=9), 'frozen_stages=9: expected an int in -1..4 (-1: nothing, 0: the stem'),
    (dict(frozen_stages=-2), 'frozen_stages=-2: expected an int in -1..4'),
    (dict(frozen_stages='1'), "frozen_stages='1': expected an int in -1..4"),
    (dict(with_cp=1), 'with_cp=1: expected True or False'),
    (dict(deploy='yes'), "deploy='yes': expected True or False"),
    (dict(norm_eval=None), 'norm_eval=None: expected True or False'),
    (dict(in_channels=0), 'in_channels=0: expected a positive int'),
    (dict(mlp_ratio=1.5), 'mlp_ratio=1.5: expected a positive int'),
    (dict(norm_cfg='BN'), "norm_cfg='BN': expected a dict with a norm layer type, e.g. "
                          "dict(type='BN')"),
    (dict(norm_cfg=dict(eps=1e-3)), "norm_cfg={'eps': 0.001}: expected a dict with a norm layer "
                                    'type'),
    (dict(norm_cfg=dict(type='BNN')), "norm_cfg={'type': 'BNN'}: 'BNN' is not a norm layer; "
                                      "did you mean 'BN'?"),
    (dict(norm_cfg=dict(type='Conv2d')), "norm_cfg={'type': 'Conv2d'}: 'Conv2d' is not a norm "
                                         'layer; choose one of BN, '),
])
def test_bad_arguments_name_what_they_accept(arguments, message):
    with pytest.raises(ValueError) as error:
        RepNeXt('m0', **arguments)
    assert str(error.value).startswith(message), error.value


@pytest.mark.parametrize('norm_cfg', [None, dict(type='BN', requires_grad=True),
                                      dict(type='GN', num_groups=4), dict(type=nn.BatchNorm2d)])
def test_norm_cfgs_that_build_are_accepted(norm_cfg):
    assert RepNeXt(TINY_ARCH, norm_cfg=norm_cfg).out_indices == (0, 1, 2, 3)


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 2, 4])
def test_frozen_stages_freeze_params_and_norms(frozen_stages):
    model = RepNeXt('m0', frozen_stages=frozen_stages)
    model.train()
    frozen = ([model.stem] if frozen_stages >= 0 else []) + list(model.stages[:max(frozen_stages, 0)])
    active = [m for m in [model.stem, *model.stages] if all(m is not f for f in frozen)]
    for module in frozen:
        assert not _trainable(module)
        assert all(not m.training for m in module.modules() if isinstance(m, _BatchNorm))
    for module in active:
        assert all(p.requires_grad for p in module.parameters())
        assert all(m.training for m in module.modules() if isinstance(m, _BatchNorm))

    # Frozen statistics stay put through a training step; active ones move.
    before = copy.deepcopy(model.state_dict())
    loss = sum(o.mean() for o in model(torch.randn(2, 3, 64, 64)))
    if active:  # with every stage frozen there is nothing to differentiate
        loss.backward()
    after = model.state_dict()
    for name, tensor in after.items():
        if name.endswith('running_mean'):
            frozen_part = name.startswith('stem') and frozen_stages >= 0 or any(
                name.startswith(f'stages.{i}.') for i in range(max(frozen_stages, 0)))
            assert torch.equal(before[name], tensor) == frozen_part, name
    for module in frozen:
        assert all(p.grad is None for p in module.parameters())


def test_frozen_stages_out_of_range():
    with pytest.raises(ValueError, match='frozen_stages'):
        RepNeXt('m0', frozen_stages=5)


def test_norm_eval_keeps_every_norm_in_eval_and_stats_fixed():
    model = RepNeXt('m0', norm_eval=True)
    model.train()
    assert model.training and model.stages[0].blocks[0].channel_mixer.act.training
    assert all(not m.training for m in model.modules() if isinstance(m, _BatchNorm))
    before = copy.deepcopy(model.state_dict())
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_norm_eval_still_applies_after_syncbn_conversion():
    """The authors' BN freeze was lost once the detector converted BN to SyncBN."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(RepNeXt('m0', norm_eval=True, frozen_stages=1))
    model.train()
    sync_norms = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert sync_norms and all(not m.training for m in sync_norms)
    assert not _trainable(model.stem) and not _trainable(model.stages[0])


def test_syncbn_norm_cfg_builds_syncbn_and_fuses():
    model = RepNeXt('m0', norm_cfg=dict(type='SyncBN')).eval()
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    model.switch_to_deploy()
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())


@pytest.mark.parametrize('arch, message', [
    ('m9', "unknown RepNeXt arch 'm9'; choose one of"),
    (dict(widths=(40, 80, 160, 322), depths=(1, 1, 1, 1)), 'multiple of 4'),
    (dict(widths=(40, 80, 160, 360), depths=(1, 1, 1, 1)), 'double'),
    (dict(widths=(40, 80, 160), depths=(1, 1, 1)), '4 stages'),
    (dict(widths=(40, 80, 160, 320), depths=(1, 1, 1)), '4 entries each'),
    (dict(widths=(40, 80, 160, 320), depths=(1, 0, 1, 1)), 'positive int'),
    (dict(widths=(40, 80, 160, 320)), "missing \\['depths'\\]"),
    (dict(widths=(40, 80, 160, 320), depths=(1, 1, 1, 1), heads=2), "unexpected \\['heads'\\]"),
    (['m0'], 'must be a name in'),
])
def test_bad_arch_errors_name_the_problem(arch, message):
    with pytest.raises(ValueError, match=message):
        RepNeXt(arch)


def test_reference_tables_cover_every_arch():
    # A new entry in arch_settings must come with its reference sizes (CONTRIBUTING.md).
    for table in (BACKBONE_PARAMS, AUTHORS_FUSED_CLASSIFIER_PARAMS, GMACS_224_WITH_HEAD,
                  GMACS_512_BACKBONE):
        assert set(table) == set(ARCHS)


@pytest.mark.parametrize('arch', ARCHS)
def test_arch_name_inverts_arch_settings(arch):
    setting = RepNeXt.arch_settings[arch]
    assert RepNeXt.arch_name(setting['widths'], setting['depths']) == arch
    assert RepNeXt.arch_name(list(setting['widths']), list(setting['depths'])) == arch  # any sequence
    assert RepNeXt.arch_name(**RepNeXt(arch, deploy=True).arch) == arch


def test_arch_name_of_a_custom_arch_is_none():
    m3 = RepNeXt.arch_settings['m3']
    assert RepNeXt.arch_name(m3['widths'], (3, 3, 13, 3)) is None
    assert RepNeXt.arch_name((8, 16, 32, 64), m3['depths']) is None
    # M3 and M4 share widths: the depths decide.
    assert RepNeXt.arch_name(m3['widths'], RepNeXt.arch_settings['m4']['depths']) == 'm4'


def test_custom_arch_dict():
    model = RepNeXt(dict(widths=[8, 16, 32, 64], depths=[1, 1, 2, 1]))
    with torch.no_grad():
        outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [8, 16, 32, 64]


def test_bad_srp_forward():
    with pytest.raises(ValueError, match='srp_forward'):
        RepNeXt('m0', srp_forward='fast')


def test_odd_input_sizes_give_same_shapes_in_both_forms():
    for size in ((97, 129), (250, 333), (33, 65)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            train_form = [o.shape for o in RepNeXt('m0').eval()(x)]
            deploy_form = [o.shape for o in RepNeXt('m0', deploy=True).eval()(x)]
        assert train_form == deploy_form
        assert train_form[-1][-2:] == tuple(-(-s // 32) for s in size)


# ------------------------------------------------------------------------------------ init_cfg


def test_pretrained_init_cfg_with_prefix_loads_weights(tmp_path):
    source = randomize_norms(RepNeXt('m0'), seed=3)
    checkpoint = tmp_path / 'detector.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()},
                'meta': {'epoch': 1}}, checkpoint)
    model = RepNeXt('m0', init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint), prefix='backbone.'))
    model.init_weights()
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_pretrained_checkpoint_matching_nothing_is_an_error(tmp_path):
    source = RepNeXt('m0')
    checkpoint = tmp_path / 'backbone_only.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}}, checkpoint)
    model = RepNeXt('m0', init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint), prefix='encoder.'))
    with pytest.raises(ValueError, match="prefix 'encoder.'.*prefix='backbone.'"):
        model.init_weights()


def test_pretrained_checkpoint_of_another_arch_is_an_error(tmp_path):
    checkpoint = tmp_path / 'm1.pth'
    torch.save({f'backbone.{k}': v for k, v in RepNeXt('m1').state_dict().items()}, checkpoint)
    model = RepNeXt('m0', init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint), prefix='backbone'))
    with pytest.raises(ValueError, match='wrong shape'):
        model.init_weights()
