"""tools/infer.py: one command for the three tasks on the user's image or folder, writing the
pictures (and predictions) under --out-dir; bad input is one error line, status 2, nothing
written.

The "trained" checkpoints are the shapes models' own initial weights with BN statistics and
class names (tests/conftest.py): the pictures are real, the predictions untrained.
"""
from __future__ import annotations

import json
import re

import cv2
import pytest

from tests.helpers import (REPO, SHAPES_CONFIGS, describe_process, requires_mmcv_ops,
                           run_tool, run_tool_process)

pytestmark = pytest.mark.usefixtures('one_cpu_thread')

TOOL = 'tools/infer.py'
CLASSES = ('circle', 'square', 'star', 'triangle')


def _shape(path):
    image = cv2.imread(str(path))
    assert image is not None, f'{path} is not a readable picture'
    return image.shape[:2]


@requires_mmcv_ops
@pytest.mark.slow
def test_detection_by_zoo_name_writes_pictures_and_json(trained_checkpoints, shapes_data,
                                                        tmp_path, capsys):
    image = shapes_data / 'coco/val/000000.png'
    status, out, err = run_tool(TOOL, [image, 'mask_rcnn_repnext_m0_fpn_shapes',
                                       '--weights', trained_checkpoints['detector'],
                                       '--out-dir', tmp_path / 'out', '--device', 'cpu',
                                       '--pred-score-thr', '0.5'], capsys)
    assert status == 0, err
    assert _shape(tmp_path / 'out/vis/000000.png') == _shape(image)
    prediction = json.loads((tmp_path / 'out/preds/000000.json').read_text())
    assert {'labels', 'scores', 'bboxes', 'masks'} <= set(prediction)
    assert f'pictures: {tmp_path / "out/vis"} (1 files)' in out
    assert 'detection: 1 image(s)' in out


@requires_mmcv_ops
@pytest.mark.slow
def test_segmentation_by_config_path_writes_pictures_and_label_maps(trained_checkpoints,
                                                                    shapes_data, tmp_path, capsys):
    images = tmp_path / 'images'
    images.mkdir()
    for name in ('000000.jpg', '000001.jpg'):
        (images / name).write_bytes((shapes_data / 'ade/images/validation' / name).read_bytes())
    status, out, err = run_tool(TOOL, [images, SHAPES_CONFIGS['segmentor'], '--weights',
                                       trained_checkpoints['segmentor'], '--out-dir',
                                       tmp_path / 'out', '--device', 'cpu', '--batch-size', '2'],
                                capsys)
    assert status == 0, err
    for stem in ('000000', '000001'):
        size = _shape(images / f'{stem}.jpg')
        assert _shape(tmp_path / f'out/vis/{stem}.jpg') == size
        labels = cv2.imread(str(tmp_path / f'out/preds/{stem}.png'), cv2.IMREAD_UNCHANGED)
        assert labels.shape == size and labels.max() < len(CLASSES)
    assert f'predictions: {tmp_path / "out/preds"} (2 files)' in out


def test_classification_of_a_folder_writes_a_picture_per_image(trained_checkpoints, shapes_data,
                                                               tmp_path, capsys):
    folder = shapes_data / 'imagenet/val/star'
    images = sorted(folder.iterdir())
    status, out, err = run_tool(TOOL, [folder, 'repnext_m0_shapes', '--weights',
                                       trained_checkpoints['classifier'], '--out-dir', tmp_path,
                                       '--device', 'cpu', '--batch-size', '8'], capsys)
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / 'vis').iterdir()) == [f'{p.stem}.png' for p in images]
    prediction = json.loads((tmp_path / 'preds' / f'{images[0].stem}.json').read_text())
    assert prediction['pred_class'] in CLASSES and len(prediction['pred_scores']) == len(CLASSES)
    assert f'classification: {len(images)} image(s)' in out


@pytest.mark.parametrize('case, match', [
    ('missing image', 'missing.png does not exist'),
    ('empty folder', r'the folder .*empty holds no images \(.png, .jpg'),
    ('unknown model', "unknown model 'repnext_m0_shape'.*did you mean repnext_m0_shapes"),
    ('missing weights', 'weights file .*nope.pth does not exist'),
    ('no weights', 'repnext_m0_shapes has no published weights; pass --weights'),
    ('out dir is a file', 'is a file; pass a folder'),
    ('weights of another model', 'do not fit the model built from the config'),
])
def test_bad_input_is_one_error_line_and_nothing_written(case, match, trained_checkpoints,
                                                         shapes_data, tmp_path, capsys):
    image = sorted((shapes_data / 'imagenet/val/star').iterdir())[0]
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'file').write_text('')
    weights = ['--weights', trained_checkpoints['classifier']]
    out = ['--out-dir', tmp_path / 'out']
    argv = {
        'missing image': [tmp_path / 'missing.png', 'repnext_m0_shapes', *weights, *out],
        'empty folder': [tmp_path / 'empty', 'repnext_m0_shapes', *weights, *out],
        'unknown model': [image, 'repnext_m0_shape', *weights, *out],
        'missing weights': [image, 'repnext_m0_shapes', '--weights', tmp_path / 'nope.pth', *out],
        'no weights': [image, 'repnext_m0_shapes', *out],
        'out dir is a file': [image, 'repnext_m0_shapes', *weights, '--out-dir', tmp_path / 'file'],
        'weights of another model': [image, 'repnext_m0_shapes', '--weights',
                                     trained_checkpoints['segmentor'], *out],
    }[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    status, _, err = run_tool(TOOL, [*argv, '--device', 'cpu'], capsys)
    assert status == 2
    assert len(err.splitlines()) == 1 and err.startswith('error: '), err
    assert re.search(match, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert (tmp_path / 'file').read_text() == ''


@pytest.mark.slow
def test_a_user_sees_one_error_line(tmp_path):
    result = run_tool_process(REPO / TOOL, tmp_path / 'missing.png', 'repnext_m0_shapes',
                              cwd=tmp_path)
    assert result.returncode == 2, describe_process(result)
    assert result.stderr.splitlines()[-1:] == [
        f'error: {tmp_path / "missing.png"} does not exist (relative to {tmp_path}); pass an '
        'image or a folder of images'], describe_process(result)
    assert not (tmp_path / 'outputs').exists()
