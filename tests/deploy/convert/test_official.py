"""One entry point for every release (``convert/source.py``, ``convert/official.py``): the kind
read off the content, classifier round trips, the ``config`` check, and bad inputs."""
import shutil

import pytest
import torch

from repnext_mm.apis.checkpoint import load_state_dict_checked, read_checkpoint
from repnext_mm.apis.model import build_model, load_model_config
from repnext_mm.deploy.convert import convert_official_checkpoint, read_source
from repnext_mm.utils.errors import InputError
from tests.helpers import REPO, max_rel_error
from ..author_layout import author_checkpoint, author_forward
from ..release_layout import timm_checkpoint

KINDS = ('imagenet', 'timm', 'detector', 'segmentor', 'fused')
CLASSIFIER_M4 = REPO / 'configs/mmpretrain/repnext_m4_8xb256_in1k.py'


@pytest.mark.parametrize('kind', KINDS)
def test_each_release_is_recognized_by_its_content(releases, kind):
    assert releases[kind].path.name == 'checkpoint.pth'  # the same name for every kind
    assert read_source(releases[kind].path).kind.name == kind


@pytest.mark.parametrize('kind, weights, entry', [
    ('imagenet', 'model', 'model'),
    pytest.param('imagenet', 'ema', 'model_ema', marks=pytest.mark.slow),
    pytest.param('timm', 'model', 'state_dict', marks=pytest.mark.slow),
    pytest.param('timm', 'ema', 'state_dict_ema', marks=pytest.mark.slow)])
def test_classifier_releases_round_trip_to_the_authors_logits(releases, tmp_path, kind, weights,
                                                              entry):
    src, dst = releases[kind].path, tmp_path / 'converted.pth'
    report = convert_official_checkpoint(src, dst, weights=weights)
    assert report.source.entry == entry
    assert report.config == 'configs/mmpretrain/repnext_m0_8xb256_in1k.py'
    assert report.cfg_options == {'model.head.num_classes': 10}
    written = read_checkpoint(dst)  # plain data: weights_only reads it
    model = build_model(load_model_config(REPO / report.config), report.cfg_options)
    load_state_dict_checked(model, written['state_dict'], str(dst))  # strict

    source = read_checkpoint(src)[entry]
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, stages = model(x, mode='tensor'), model.backbone(x)
    assert max_rel_error(logits, author_forward(source, x, 'm0')) < 1e-5
    assert max_rel_error(stages[-1], author_forward(source, x, 'm0', with_head=False)[-1]) < 1e-5
    assert written['meta']['repnext_mm']['source_weights'] == entry


def test_a_detector_with_a_classifier_config_is_refused(releases, tmp_path):
    dst = tmp_path / 'out.pth'
    with pytest.raises(InputError, match=r"is the authors' Mask R-CNN .*, but .*repnext_m0_8xb256_"
                                         r'in1k\.py builds a classifier; pass a detector config '
                                         r'such as configs/mmdet/mask_rcnn_repnext_m0_fpn_1x_coco'):
        convert_official_checkpoint(releases['detector'].path, dst,
                                    config=REPO / 'configs/mmpretrain/repnext_m0_8xb256_in1k.py')
    assert not dst.exists()


def test_an_m3_file_with_an_m4_config_is_refused(tmp_path):
    src, dst = tmp_path / 'm3.pth', tmp_path / 'out.pth'
    torch.save(author_checkpoint('m3', num_classes=1000), src)
    with pytest.raises(InputError, match=r'holds RepNeXt-M3 weights, but .*repnext_m4_8xb256_in1k'
                                         r'\.py builds RepNeXt-M4; use configs/mmpretrain/'
                                         r'repnext_m3_8xb256_in1k\.py'):
        convert_official_checkpoint(src, dst, config=CLASSIFIER_M4)
    assert not dst.exists()


def test_a_config_is_checked_strictly_and_names_what_differs(releases, tmp_path):
    dst = tmp_path / 'out.pth'
    convert_official_checkpoint(releases['detector'].path, dst,
                                config=REPO / 'configs/mmdet/mask_rcnn_repnext_m0_fpn_1x_coco.py')
    assert dst.is_file()
    shapes = REPO / 'configs/mmdet/mask_rcnn_repnext_m0_fpn_shapes.py'  # 4 classes, not 80
    with pytest.raises(InputError, match=r'6 with the wrong shape \(e\.g\. roi_head\.bbox_head\.'
                                         r'fc_cls\.weight: checkpoint \(81, 1024\) vs model '
                                         r'\(5, 1024\).*load_from_allow_mismatch'):
        convert_official_checkpoint(releases['detector'].path, tmp_path / 'other.pth',
                                    config=shapes)
    assert not (tmp_path / 'other.pth').exists()


@pytest.mark.parametrize('kind', ['detector', 'fused'])
def test_a_truncated_file_is_refused(releases, tmp_path, kind):
    src, dst = tmp_path / 'truncated.pth', tmp_path / 'out.pth'
    data = releases[kind].path.read_bytes()
    src.write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match='corrupt or truncated'):
        convert_official_checkpoint(src, dst)
    assert not dst.exists()


def test_a_pt_file_of_another_model_is_refused(tmp_path):
    src, dst = tmp_path / 'resnet.pt', tmp_path / 'out.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(10, 64)}, src)
    with pytest.raises(InputError, match=r"none of the authors' RepNeXt releases \(2 top-level "
                                         r'entries: conv1\.weight, fc\.weight\)'):
        convert_official_checkpoint(src, dst)
    assert not dst.exists()


def test_ema_weights_only_where_the_file_has_them(releases, tmp_path):
    src, dst = tmp_path / 'no_ema.pth.tar', tmp_path / 'out.pth'
    torch.save(timm_checkpoint('m0', num_classes=3), src)  # the authors trained without EMA
    with pytest.raises(InputError, match=r'has no "state_dict_ema" weights .*; pass --weights '
                                         r'model to convert the "state_dict" weights it holds'):
        convert_official_checkpoint(src, dst, weights='ema')
    with pytest.raises(InputError, match=r"Mask R-CNN .* holds one set of weights and no EMA"):
        convert_official_checkpoint(releases['detector'].path, dst, weights='ema')
    assert not dst.exists()


def test_a_converted_file_is_not_converted_again(releases, tmp_path):
    first = tmp_path / 'first.pth'
    convert_official_checkpoint(releases['segmentor'].path, first)
    with pytest.raises(InputError, match='already in the repnext_mm layout'):
        convert_official_checkpoint(first, tmp_path / 'second.pth')


def test_an_existing_output_is_kept_without_force(releases, tmp_path):
    dst = tmp_path / 'out.pth'
    shutil.copy(releases['imagenet'].path, dst)
    before = dst.read_bytes()
    with pytest.raises(InputError, match='--force'):
        convert_official_checkpoint(releases['timm'].path, dst)
    assert dst.read_bytes() == before
    convert_official_checkpoint(releases['timm'].path, dst, force=True)
    assert read_checkpoint(dst)['meta']['repnext_mm']['source_kind'] == 'timm'
