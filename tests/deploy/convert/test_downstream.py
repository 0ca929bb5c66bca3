"""The authors' Mask R-CNN (mmdet 2.28) and Semantic FPN (mmseg 0.30) checkpoints
(``convert/downstream.py``), built in their published layout by ``release_layout.py``."""
import pytest
import torch

from repnext_mm.apis.checkpoint import load_state_dict_checked, read_checkpoint
from repnext_mm.apis.model import build_model, load_model_config
from repnext_mm.deploy.convert import (KINDS, RENAMES, convert_downstream_state_dict,
                                       convert_official_checkpoint)
from repnext_mm.deploy.convert.downstream import rename_downstream_key
from repnext_mm.deploy.convert.official import check_against_config
from repnext_mm.deploy.convert.source import Source
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.utils.checkpoint import load_pretrained
from repnext_mm.utils.errors import InputError
from tests.helpers import REPO, first_quick_rest_slow, max_rel_error
from ..author_layout import author_forward
from ..release_layout import mmdet228_mask_rcnn_shapes, mmseg030_semantic_fpn_shapes

DETECTOR = 'configs/mmdet/mask_rcnn_repnext_{}_fpn_1x_coco.py'
SEGMENTOR = 'configs/mmseg/fpn_repnext_{}_8xb4-40k_ade20k-512x512.py'


def backbone_of(weights: dict) -> dict:
    return {k[len('backbone.'):]: v for k, v in weights.items() if k.startswith('backbone.')}


@pytest.mark.parametrize('arch', first_quick_rest_slow(['m3', 'm4', 'm5']))
def test_mmdet228_and_mmseg030_name_every_neck_and_head_weight_as_mmdet33_and_mmseg12(arch):
    """The rename table, checked key by key (with shapes) against our configs' real models."""
    assert RENAMES == ()
    for shapes, config in ((mmdet228_mask_rcnn_shapes(arch), DETECTOR),
                           (mmseg030_semantic_fpn_shapes(arch), SEGMENTOR)):
        with torch.device('meta'):  # SyncBN reverted to BN by build_model
            model = build_model(load_model_config(REPO / config.format(arch)))
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if not k.startswith('backbone.')}
        theirs = {rename_downstream_key(k): v for k, v in shapes.items()
                  if not k.startswith('backbone.')}
        assert theirs == ours


@pytest.mark.parametrize('kind, classes', [pytest.param('detector', 80, marks=pytest.mark.slow),
                                           ('segmentor', 150)])
def test_release_round_trips_with_the_authors_backbone_features(releases, tmp_path, kind, classes):
    release, dst = releases[kind], tmp_path / 'converted.pth'
    report = convert_official_checkpoint(release.path, dst)
    assert report.source.kind.name == kind
    assert report.config == (DETECTOR if kind == 'detector' else SEGMENTOR).format('m0')
    assert report.cfg_options == {}  # the released class count is the config's

    written = read_checkpoint(dst)
    model = build_model(load_model_config(REPO / report.config))
    load_state_dict_checked(model, written['state_dict'], str(dst))  # strict
    for key, value in release.weights.items():  # neck and heads: the source's own tensors
        if not key.startswith('backbone.'):
            assert written['state_dict'][key] is not None and torch.equal(
                written['state_dict'][key], value), key
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.backbone(x)
    theirs = author_forward(backbone_of(release.weights), x, 'm0', with_head=False)
    for a, b in zip(ours, theirs, strict=True):
        assert max_rel_error(a, b) < 1e-5

    meta = written['meta']
    assert meta['repnext_mm']['source_kind'] == kind and meta['repnext_mm']['arch'] == 'm0'
    assert meta['repnext_mm']['source_epoch'] == 12 and meta['repnext_mm']['fused'] is False
    assert len(meta['dataset_meta']['classes']) == classes
    assert ('palette' in meta['dataset_meta']) == (kind == 'segmentor')


def test_backbone_only_drops_the_neck_and_heads_with_the_reason(releases, tmp_path):
    release, dst = releases['detector'], tmp_path / 'backbone.pth'
    report = convert_official_checkpoint(release.path, dst, task='backbone')
    dropped = {k for k in release.weights if not k.startswith('backbone.')}
    assert set(report.result.dropped) == dropped
    assert set(report.result.dropped.values()) == {
        "the detector's neck and heads (not part of the backbone)"}
    backbone = RepNeXt('m0')
    assert len(load_pretrained(backbone, str(dst), prefix='backbone.')) == \
        len(backbone.state_dict())


def _check(weights: dict, kind: str = 'detector') -> None:
    source = Source('repnext_m0_coco.pth', KINDS[kind], weights)
    result = convert_downstream_state_dict(weights, kind)
    check_against_config(source, result, 'model', None, {})


def test_every_missing_misplaced_or_misshaped_entry_is_named(releases):
    weights = dict(releases['detector'].weights)
    _check(weights)  # complete: no error

    missing = dict(weights)
    del missing['rpn_head.rpn_reg.bias']
    with pytest.raises(InputError, match=r'1 missing \(e\.g\. rpn_head\.rpn_reg\.bias\)'):
        _check(missing)
    extra = dict(weights, **{'roi_head.bbox_head.fc_extra.weight': torch.zeros(3)})
    with pytest.raises(InputError, match=r'1 unexpected \(e\.g\. roi_head\.bbox_head\.fc_extra'):
        _check(extra)
    wrong = dict(weights, **{'neck.lateral_convs.1.conv.weight': torch.zeros(256, 64, 1, 1)})
    with pytest.raises(InputError, match=r'neck\.lateral_convs\.1\.conv\.weight: checkpoint '
                                         r'\(256, 64, 1, 1\) vs model \(256, 80, 1, 1\)'):
        _check(wrong)
    foreign = dict(weights, **{'semantic_head.conv.weight': torch.zeros(1)})
    with pytest.raises(InputError, match=r'no place in a RepNeXt-M0 detector .*semantic_head'):
        _check(foreign)
    unknown = dict(weights, **{'backbone.stages.0.blocks.0.token_mixer.conv_x.weight':
                               torch.zeros(1)})
    with pytest.raises(InputError, match=r'backbone\.stages\.0\.blocks\.0\.token_mixer\.conv_x'):
        _check(unknown)
