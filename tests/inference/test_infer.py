"""repnext_mm/inference/infer.py: which model, weights and device an inference runs with, the
checks before any work, fused checkpoints, and class names for the pictures.

A picture per task through the command line is in tests/tools/test_infer.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from repnext_mm.apis.model import load_model_config
from repnext_mm.inference import infer
from repnext_mm.utils.errors import InputError
from repnext_mm.zoo.model_index import package_dir
from tests.helpers import REPO, SHAPES_CONFIGS, SHAPES_INPUT_SIZES, write_shape_images

pytestmark = pytest.mark.usefixtures('one_cpu_thread')

RELEASE = 'https://github.com/suous/RepNeXt/releases/download/v1.0/'
SHAPES_CLASSES = ('circle', 'square', 'star', 'triangle')


# --------------------------------------------------------------------------------------------
# Model, weights, device
# --------------------------------------------------------------------------------------------
def test_a_config_path_is_taken_as_it_is():
    config = SHAPES_CONFIGS['detector'].relative_to(REPO)
    assert infer.resolve_model(str(REPO / config)) == infer.ModelChoice(config=REPO / config)


def test_a_zoo_name_gives_the_installed_config_and_the_released_weights():
    choice = infer.resolve_model('mask_rcnn_repnext_m4_fpn_1x_coco')
    assert choice.config == package_dir() / '.mim/configs/mmdet/mask_rcnn_repnext_m4_fpn_1x_coco.py'
    assert (choice.name, choice.weights) == ('mask_rcnn_repnext_m4_fpn_1x_coco',
                                             RELEASE + 'repnext_m4_coco.pth')
    assert infer.resolve_model('repnext_m0_shapes').weights is None


def test_a_distillation_name_runs_the_students_config_with_its_weights():
    choice = infer.resolve_model('repnext_m4_8xb256_in1k_distill')
    assert choice.config.name == 'repnext_m4_8xb256_in1k.py'  # the checkpoints hold the student
    assert choice.weights == RELEASE + 'repnext_m4_distill_300e.pth'


def test_an_mmpretrain_name_gives_its_config_and_weights():
    choice = infer.resolve_model('resnet18_8xb32_in1k')
    assert choice.config.name == 'resnet18_8xb32_in1k.py' and choice.config.is_file()
    assert choice.weights.startswith('https://download.openmmlab.com/')
    assert choice.source == 'mmpretrain model hub'


@pytest.mark.parametrize('model, match', [
    ('fpn_repnext_m0_shape',
     "unknown model 'fpn_repnext_m0_shape'.*did you mean fpn_repnext_m0_shapes"),
    ('resnet18_8xb32', 'did you mean resnet18_8xb32_in1k'),
    ('configs/mmdet/mask_rcnn_repnext_m0_fpn_shape.py',
     'config file configs/mmdet/mask_rcnn_repnext_m0_fpn_shape.py does not exist.*did you mean '
     'mask_rcnn_repnext_m0_fpn_shapes'),
    ('README.md', 'MODEL README.md is a file but not a .py config'),
])
def test_unknown_models_are_refused_with_close_names(model, match, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(InputError, match=match):
        infer.resolve_model(model)


def test_weights_given_published_or_missing(tmp_path):
    named = infer.ModelChoice(config=Path('x.py'), name='x', weights=RELEASE + 'x.pth')
    plain = infer.ModelChoice(config=Path('x.py'))
    (tmp_path / 'w.pth').write_bytes(b'')
    assert infer.resolve_weights(str(tmp_path / 'w.pth'), named) == str(tmp_path / 'w.pth')
    assert infer.resolve_weights('https://host/w.pth', plain) == 'https://host/w.pth'
    assert infer.resolve_weights(None, named) == RELEASE + 'x.pth'
    with pytest.raises(InputError, match='weights file .*nope.pth does not exist.*--weights'):
        infer.resolve_weights(str(tmp_path / 'nope.pth'), named)
    with pytest.raises(InputError, match='is a folder; pass the checkpoint file in it'):
        infer.resolve_weights(str(tmp_path), named)
    with pytest.raises(InputError, match='x.py is a config: its weights are not known; pass '
                       '--weights'):
        infer.resolve_weights(None, plain)


def test_devices():
    assert infer.resolve_device('cpu') == 'cpu'
    assert infer.resolve_device(None) == ('cuda' if torch.cuda.is_available() else 'cpu')
    with pytest.raises(InputError, match="--device 'gpu0' is not a device"):
        infer.resolve_device('gpu0')
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match='no CUDA device is available here; pass --device cpu'):
            infer.resolve_device('cuda:0')


@pytest.mark.parametrize('options, match', [(dict(batch_size=0), '--batch-size 0: pass 1'),
                                            (dict(pred_score_thr=1.5), 'between 0 and 1')])
def test_numbers_are_checked_before_any_work(options, match, tmp_path):
    image = write_shape_images(tmp_path / 'in', 1)[0]
    with pytest.raises(InputError, match=match):
        infer.infer(image, str(SHAPES_CONFIGS['classifier']), weights=str(image),
                    out_dir=tmp_path / 'out', **options)
    assert not (tmp_path / 'out').exists()


# --------------------------------------------------------------------------------------------
# Weights loaded strictly; fused checkpoints
# --------------------------------------------------------------------------------------------
def test_weights_of_another_model_are_an_error_and_nothing_is_written(trained_checkpoints,
                                                                      tmp_path):
    image = write_shape_images(tmp_path / 'in', 1)[0]
    with pytest.raises(InputError, match='do not fit the model built from the config: '
                       '.*missing.*unexpected'):
        infer.infer(image, 'repnext_m0_shapes', weights=str(trained_checkpoints['segmentor']),
                    out_dir=tmp_path / 'out', device='cpu')
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_a_fused_checkpoint_predicts_as_its_training_checkpoint(trained_checkpoints, tmp_path):
    from repnext_mm.deploy.reparameterize import reparameterize_checkpoint

    fused = tmp_path / 'fused.pth'
    reparameterize_checkpoint(SHAPES_CONFIGS['classifier'], trained_checkpoints['classifier'],
                              fused, shape=SHAPES_INPUT_SIZES['classifier'], log=lambda _: None)
    folder = tmp_path / 'in'
    write_shape_images(folder, 2)  # class folders: take the first one's image
    images = next(p for p in sorted(folder.iterdir()) if p.is_dir())
    scores = {}
    for kind, weights in (('training', trained_checkpoints['classifier']), ('fused', fused)):
        result = infer.infer(images, 'repnext_m0_shapes', weights=str(weights),
                             out_dir=tmp_path / kind, device='cpu')
        assert [p.name for p in result.pictures] == ['000.png']
        record = json.loads(result.predictions[0].read_text())
        assert record['pred_class'] in SHAPES_CLASSES
        scores[kind] = torch.tensor(record['pred_scores'])
    torch.testing.assert_close(scores['fused'], scores['training'], atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# Class names and colours for the pictures
# --------------------------------------------------------------------------------------------
def _fake_inferencer(meta: dict) -> SimpleNamespace:
    return SimpleNamespace(model=SimpleNamespace(dataset_meta=meta),
                           visualizer=SimpleNamespace(dataset_meta=None))


def test_a_checkpoint_without_classes_takes_the_configs():
    from mmseg.utils import get_classes, get_palette

    cfg = load_model_config(SHAPES_CONFIGS['segmentor'])
    inferencer = _fake_inferencer(dict(classes=get_classes('cityscapes'),
                                       palette=get_palette('cityscapes')))  # mmseg's fallback
    infer.complete_dataset_meta(inferencer, cfg, checkpoint={})
    meta = inferencer.model.dataset_meta
    assert tuple(meta['classes']) == SHAPES_CLASSES
    assert [tuple(c) for c in meta['palette']] == [(220, 20, 60), (0, 130, 200), (60, 180, 75),
                                                   (255, 225, 25)]

    cfg = load_model_config(SHAPES_CONFIGS['detector'])
    inferencer = _fake_inferencer(dict(classes=('person',) * 80, palette='random'))
    infer.complete_dataset_meta(inferencer, cfg, checkpoint=dict(meta={}))
    assert tuple(inferencer.model.dataset_meta['classes']) == SHAPES_CLASSES
    assert inferencer.visualizer.dataset_meta is inferencer.model.dataset_meta


def test_a_segmentation_palette_that_does_not_match_is_replaced():
    cfg = load_model_config(SHAPES_CONFIGS['segmentor'])
    inferencer = _fake_inferencer(dict(classes=('a', 'b'), palette=None))
    infer.complete_dataset_meta(
        inferencer, cfg, checkpoint=dict(meta=dict(dataset_meta=dict(classes=('a', 'b')))))
    palette = inferencer.model.dataset_meta['palette']
    assert inferencer.model.dataset_meta['classes'] == ('a', 'b')  # the checkpoint's are kept
    assert len(palette) == 2 and all(len(c) == 3 for c in palette)


def test_the_dataset_class_names_a_config_without_metainfo():
    cfg = load_model_config(REPO / 'configs/mmseg/fpn_repnext_m0_8xb4-40k_ade20k-512x512.py')
    meta = infer.config_dataset_meta(cfg)
    assert len(meta['classes']) == len(meta['palette']) == 150 and meta['classes'][0] == 'wall'


def test_a_zoo_name_runs_the_authors_release_from_its_address(monkeypatch, tmp_path):
    """No --weights: the name's published address, read through the release loader
    (repnext_mm.hub.weights) from torch hub's cache, where a download would have put it."""
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES

    from tests.deploy.author_layout import author_checkpoint

    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    torch.save(author_checkpoint('m0'), cache / 'repnext_m0_distill_300e.pth')
    image = write_shape_images(tmp_path / 'in', 1, size=96)[0]
    result = infer.infer(image, 'repnext_m0_8xb256_in1k_distill', out_dir=tmp_path / 'out',
                         device='cpu')
    assert result.weights == RELEASE + 'repnext_m0_distill_300e.pth'
    assert result.model.config.name == 'repnext_m0_8xb256_in1k.py'
    assert [p.name for p in result.pictures] == [f'{image.stem}.png']
    record = json.loads(result.predictions[0].read_text())
    assert record['pred_class'] in IMAGENET_CATEGORIES and len(record['pred_scores']) == 1000
