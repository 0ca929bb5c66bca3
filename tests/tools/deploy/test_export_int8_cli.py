"""tools/deploy/export.py --int8 and --coreml-compress: the command line, the calibration folder
errors (one line, nothing written) and the option checks."""
from __future__ import annotations

import os
import re

import pytest

from tests.helpers import SHAPES_CONFIGS, run_tool, write_shape_images

TOOL = 'tools/deploy/export.py'


def test_int8_classifier_export(trained_checkpoints, shape_images, tmp_path, capsys):
    out = tmp_path / 'cls_int8.onnx'
    status, stdout, stderr = run_tool(
        TOOL, [SHAPES_CONFIGS['classifier'], trained_checkpoints['classifier'], '--format', 'onnx',
               '--shape', 64, 64, '--int8', '--calib-dir', shape_images['calib'],
               '--calib-images', 4, '--calib-method', 'percentile', '--out', out], capsys)
    assert status == 0, stderr
    assert '[2/3] reading the calibration images through the test pipeline' in stderr
    assert '[3/3] exporting to ONNX, quantizing to int8 and comparing with fp32' in stderr
    assert f'wrote {out} (int8 QDQ, opset 17;' in stdout
    assert f'calibration: percentile on 4 images from {shape_images["calib"]}' in stdout
    assert re.search(r'int8 ops: Conv \d+', stdout)
    cosine = re.search(r'output logits: \[1, 4\], int8 vs fp32 cosine similarity ([\d.]+) on the '
                       r'calibration images \(lowest ([\d.]+)\)', stdout)
    assert cosine and 0.9 <= float(cosine[2]) <= float(cosine[1]) <= 1.0
    assert os.listdir(tmp_path) == ['cls_int8.onnx']  # no fp32 file or temporary left behind


@pytest.mark.slow  # a second int8 export (test_int8_classifier_export is the quick one)
def test_default_calibration_folder_is_the_configs_test_folder(trained_checkpoints, tmp_path,
                                                               capsys):
    write_shape_images(tmp_path / 'data' / 'val', 4)
    status, stdout, stderr = run_tool(
        TOOL, [SHAPES_CONFIGS['classifier'], trained_checkpoints['classifier'], '--format', 'onnx',
               '--shape', 64, 64, '--int8', '--out', tmp_path / 'm.onnx',
               '--cfg-options', f'test_dataloader.dataset.data_root={tmp_path / "data"}'], capsys)
    assert status == 0, stderr
    assert f'on 4 images from {tmp_path / "data" / "val"}' in stdout


def _calibration_folder(kind: str, root):
    folder = root / 'calib'
    if kind == 'missing':
        return folder
    folder.mkdir()
    if kind == 'no images':
        (folder / 'notes.txt').write_text('not an image')
    elif kind == 'unreadable':
        (folder / 'a.png').write_text('not a png')
        (folder / 'b.jpg').write_bytes(b'\xff\xd8 truncated')
    return folder


@pytest.mark.parametrize('kind, message', [
    ('missing', r'image folder .*calib does not exist .*pass --calib-dir DIR with images'),
    ('empty', r'image folder .*calib holds no image file .*pass --calib-dir DIR with such images'),
    ('no images', r'image folder .*calib holds no image file'),
    ('unreadable', r'image folder .*calib holds no readable image: all 2 file\(s\) failed to '
                   r'load, e\.g\. .*a\.png: .*pass --calib-dir DIR with valid images'),
])
def test_bad_calibration_folder_is_one_error_and_nothing_is_written(trained_checkpoints, tmp_path,
                                                                    capsys, kind, message):
    folder = _calibration_folder(kind, tmp_path)
    before = sorted(os.listdir(tmp_path))
    status, stdout, stderr = run_tool(
        TOOL, [SHAPES_CONFIGS['classifier'], trained_checkpoints['classifier'], '--format', 'onnx',
               '--shape', 64, 64, '--int8', '--calib-dir', folder,
               '--out', tmp_path / 'int8.onnx'], capsys)
    assert status == 2, stdout
    errors = [line for line in stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and re.search(message, errors[0]), stderr
    assert 'Nothing was written' in errors[0]
    assert stderr.rstrip().splitlines()[-1] == errors[0]  # no traceback after it
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize('args, message', [
    (['--format', 'coreml', '--int8'], '--int8 needs --format onnx'),
    (['--format', 'onnx', '--calib-images', '4'], '--calib-images: only for an int8 export; add --int8'),
    (['--format', 'onnx', '--int8', '--calib-images', '0'], '--calib-images must be >= 1'),
    (['--format', 'onnx', '--coreml-compress', 'int8'], '--coreml-compress needs --format coreml'),
])
def test_int8_and_compression_options_are_checked_first(tmp_path, capsys, args, message):
    status, _, stderr = run_tool(TOOL, [SHAPES_CONFIGS['classifier'], *args,
                                        '--out', tmp_path / 'out.onnx'], capsys)
    assert status == 2 and message in stderr
    assert os.listdir(tmp_path) == []
