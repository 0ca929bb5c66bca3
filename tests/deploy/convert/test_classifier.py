"""The authors' classifier names (``convert/keys.py``, ``convert/classifier.py``), tested on
synthetic checkpoints in their layout.

The author-layout key names, shapes and forward pass come from ``author_layout.py`` (written from
the reference facts, not from the converter's rename table), so these tests check the rename
table against an independent description of the authors' model.
"""
import argparse

import pytest
import torch

from repnext_mm.apis.checkpoint import read_checkpoint
from repnext_mm.deploy.convert import (convert_author_state_dict, convert_official_checkpoint,
                                       detect_arch, map_author_key)
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.heads.repnext_head import RepNeXtClsHead
from repnext_mm.utils.errors import InputError
from tests.helpers import first_quick_rest_slow, max_rel_error
from ..author_layout import (ARCHS, author_checkpoint, author_forward, author_shapes,
                             author_state_dict)


@pytest.fixture(scope='module')
def author_weights():
    """One synthetic author state dict per arch (built once: M5 has 2114 tensors)."""
    return {arch: author_state_dict(arch, seed=index) for index, arch in enumerate(ARCHS)}


def test_m1_release_layout_has_1022_entries():
    assert len(author_shapes('m1')) == 1022


@pytest.mark.parametrize('arch', first_quick_rest_slow(ARCHS))
def test_every_author_key_maps_with_its_shape(author_weights, arch):
    weights = author_weights[arch]
    result = convert_author_state_dict(weights, task='cls')
    assert result.arch == arch
    assert result.num_classes == 1000
    assert result.dropped == {}
    assert set(result.mapped) == set(weights)  # every source key mapped
    assert len(set(result.mapped.values())) == len(weights)  # no two keys land on one name
    own = {f'backbone.{k}': v.shape for k, v in RepNeXt(arch).state_dict().items()}
    head = RepNeXtClsHead(1000, RepNeXt.arch_settings[arch]['widths'][-1]).state_dict()
    own.update({f'head.{k}': v.shape for k, v in head.items()})
    assert set(result.state_dict) == set(own)
    for source, target in result.mapped.items():
        assert result.state_dict[target] is weights[source]  # values untouched
        assert tuple(weights[source].shape) == tuple(own[target]), (source, target)


@pytest.mark.parametrize('arch', first_quick_rest_slow(ARCHS))
def test_backbone_task_drops_exactly_the_head(author_weights, arch):
    result = convert_author_state_dict(author_weights[arch], task='backbone')
    assert all(k.startswith('backbone.') for k in result.state_dict)
    assert set(result.dropped) == {k for k in author_weights[arch] if k.startswith('head.')}
    assert len(result.dropped) == 14  # two heads x (BN1d: 5 entries + Linear: 2)
    RepNeXt(arch).load_state_dict({k[len('backbone.'):]: v for k, v in result.state_dict.items()},
                                  strict=True)


@pytest.mark.parametrize('author_key, ours', [
    ('stem.stem.0.norm.running_var', 'backbone.stem.0.bn.running_var'),
    ('stages.1.downsample.token_mixer.conv_s.conv_3_w.weight',
     'backbone.stages.1.downsample.token_mixer.small.conv1x3.weight'),
    ('stages.2.blocks.4.token_mixer.conv_m.conv_5_3.bias',
     'backbone.stages.2.blocks.4.token_mixer.medium.conv5x3.bias'),
    ('stages.2.blocks.4.token_mixer.conv_m.conv_7_h.weight',
     'backbone.stages.2.blocks.4.token_mixer.medium.conv7x1.weight'),
    ('stages.0.blocks.1.token_mixer.conv_l.1.bias',
     'backbone.stages.0.blocks.1.token_mixer.large.convkx1.bias'),
    ('stages.3.blocks.0.channel_mixer.2.norm.weight',
     'backbone.stages.3.blocks.0.channel_mixer.fc2.bn.weight'),
    ('head.head_dist.linear.bias', 'head.head_dist.linear.bias'),
    ('stages.0.blocks.0.token_mixer.conv_m.conv_9_9.weight', None),
    ('stages.0.blocks.0.token_mixer.conv_x.conv_3_3.weight', None),
])
def test_key_examples(author_key, ours):
    assert map_author_key(author_key) == ours


@pytest.mark.parametrize('arch', ['m0'])  # the rename table is the same for every arch
def test_converted_classifier_computes_the_authors_model(arch):
    """Our backbone + head loaded with converted weights == the authors' forward, in eval."""
    weights = author_state_dict(arch, num_classes=7, seed=3)
    result = convert_author_state_dict(weights, task='cls')
    backbone = RepNeXt(arch).eval()
    head = RepNeXtClsHead(7, RepNeXt.arch_settings[arch]['widths'][-1]).eval()
    backbone.load_state_dict({k[9:]: v for k, v in result.state_dict.items()
                              if k.startswith('backbone.')}, strict=True)
    head.load_state_dict({k[5:]: v for k, v in result.state_dict.items() if k.startswith('head.')},
                         strict=True)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stages = backbone(x)
        logits = head((stages[-1].mean(dim=(2, 3)),))
    expected_stages = author_forward(weights, x, arch, with_head=False)
    for ours, theirs in zip(stages, expected_stages):
        assert max_rel_error(ours, theirs) < 1e-5
    assert max_rel_error(logits, author_forward(weights, x, arch)) < 1e-5


def test_swapped_branch_would_be_caught():
    """The forward comparison is sensitive to a (5,3)/(3,5)-style mix-up of same-size kernels."""
    weights = author_state_dict('m0', num_classes=5, seed=1)
    swapped = dict(weights)
    key = 'stages.0.blocks.0.token_mixer.conv_s.conv_3_3.weight'
    swapped[key] = weights[key].flip(-1)  # same shape, different kernel
    x = torch.randn(1, 3, 64, 64)
    assert max_rel_error(author_forward(swapped, x, 'm0'), author_forward(weights, x, 'm0')) > 1e-4


def test_arch_detection_distinguishes_m3_and_m4(author_weights):
    assert detect_arch(author_weights['m3']) == 'm3'
    assert detect_arch(author_weights['m4']) == 'm4'


def test_wrong_explicit_arch_is_an_error(author_weights):
    with pytest.raises(InputError, match='--arch m3 was given but the weights are RepNeXt-M4'):
        convert_author_state_dict(author_weights['m4'], arch='m3')


def test_another_models_checkpoint_is_rejected():
    resnet_like = {'conv1.weight': torch.zeros(64, 3, 7, 7), 'bn1.weight': torch.zeros(64),
                   'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1),
                   'fc.weight': torch.zeros(1000, 2048)}
    with pytest.raises(InputError, match="not a RepNeXt checkpoint in the authors' layout"):
        convert_author_state_dict(resnet_like)


def test_already_converted_weights_are_rejected(author_weights):
    ours = convert_author_state_dict(author_weights['m0']).state_dict
    with pytest.raises(InputError, match='already in the repnext_mm layout'):
        convert_author_state_dict(ours)


def test_unknown_extra_and_missing_keys_are_errors(author_weights):
    extra = dict(author_weights['m0'])
    extra['stages.0.blocks.0.token_mixer.conv_s.conv_5_5.weight'] = torch.zeros(10, 1, 5, 5)
    with pytest.raises(InputError, match='conv_5_5'):
        convert_author_state_dict(extra)
    missing = dict(author_weights['m0'])
    del missing['stages.2.blocks.3.channel_mixer.0.norm.running_var']
    with pytest.raises(InputError, match=r'1 missing \(e\.g\. backbone\.stages\.2\.blocks\.3\.'
                                         r'channel_mixer\.fc1\.bn\.running_var\)'):
        convert_author_state_dict(missing)
    wrong = dict(author_weights['m0'])
    wrong['stages.1.downsample.token_mixer.conv_m.conv_5_3.weight'] = torch.zeros(40, 1, 3, 5)
    with pytest.raises(InputError, match=r'wrong shape .*conv5x3\.weight: checkpoint '
                                         r'\(40, 1, 3, 5\) vs model \(40, 1, 5, 3\).*source keys: '
                                         r'stages\.1\.downsample\.token_mixer\.conv_m\.conv_5_3\.'
                                         r'weight'):
        convert_author_state_dict(wrong)


def test_release_file_converts_and_loads_into_our_modules(tmp_path):
    src, dst = tmp_path / 'repnext_m0_distill_300e.pth', tmp_path / 'converted.pth'
    checkpoint = author_checkpoint('m0', num_classes=10)
    checkpoint['model_ema'] = {k: v + 1 for k, v in checkpoint['model'].items()
                               if v.is_floating_point()} | {
        k: v for k, v in checkpoint['model'].items() if not v.is_floating_point()}
    torch.save(checkpoint, src)
    assert isinstance(checkpoint['args'], argparse.Namespace)

    report = convert_official_checkpoint(src, dst, weights='ema')
    assert sorted(report.source.left_out) == ['args', 'epoch', 'lr_scheduler', 'model',
                                              'optimizer', 'scaler']
    assert 'not chosen (--weights model converts them)' in report.source.left_out['model']
    written = read_checkpoint(dst)  # weights_only: no Namespace or other objects inside
    assert written['meta']['repnext_mm']['arch'] == 'm0'
    assert written['meta']['repnext_mm']['source_epoch'] == 299
    key = 'backbone.stages.1.downsample.token_mixer.medium.conv5x3.weight'
    assert torch.equal(written['state_dict'][key],
                       checkpoint['model_ema']['stages.1.downsample.token_mixer.conv_m.conv_5_3.weight'])

    with pytest.raises(InputError, match='--force'):
        convert_official_checkpoint(src, dst)


def test_ddp_prefix_is_stripped(tmp_path):
    src, dst = tmp_path / 'ddp.pth', tmp_path / 'out.pth'
    weights = author_state_dict('m0', num_classes=3)
    torch.save(dict(model={f'module.{k}': v for k, v in weights.items()}), src)
    report = convert_official_checkpoint(src, dst, task='backbone')
    assert len(report.result.mapped) == len(weights) - 14


def test_checkpoint_without_the_requested_weights(tmp_path):
    src = tmp_path / 'no_ema.pth'
    torch.save(dict(model=author_state_dict('m0', num_classes=3), epoch=1), src)
    with pytest.raises(InputError, match='has no "model_ema" weights') as error:
        convert_official_checkpoint(src, tmp_path / 'out.pth', weights='ema')
    assert 'pass --weights model to convert the "model" weights it holds' in str(error.value)
    assert not (tmp_path / 'out.pth').exists()

    mmengine_style = tmp_path / 'runner.pth'
    torch.save(dict(meta={}, state_dict={'backbone.x': torch.zeros(1)}), mmengine_style)
    with pytest.raises(InputError, match='holds a "state_dict" without a RepNeXt in the authors\''
                                         ' layout') as error:
        convert_official_checkpoint(mmengine_style, tmp_path / 'out.pth')
    assert '--weights' not in str(error.value)
