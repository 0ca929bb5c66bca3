"""tools/analysis/quantization.py: fp32 vs int8 latency, top-1, agreement and per-output cosine
similarity, measured in one run (a few rounds here: the figures are in docs/quantization.md)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from repnext_mm.benchmark.quantization import class_names, folder_labels
from tests.helpers import SHAPES_CONFIGS, requires_onnxruntime, requires_openvino, run_tool

TOOL = 'tools/analysis/quantization.py'
FAST = ['--calib-images', 4, '--warmup', 1, '--runs', 3]


@pytest.mark.slow  # int8 export, then timing on both runtimes
@requires_onnxruntime
@requires_openvino
def test_classifier_report_on_both_runtimes(trained_checkpoints, shape_images, tmp_path, capsys):
    out = tmp_path / 'report.json'
    status, stdout, stderr = run_tool(
        TOOL, [SHAPES_CONFIGS['classifier'], trained_checkpoints['classifier'], '--shape', 64, 64,
               '--calib-dir', shape_images['calib'], '--eval-dir', shape_images['heldout'],
               *FAST, '--json', out], capsys)
    assert status == 0, stderr
    report = json.loads(out.read_text())
    assert report['labelled'] and report['threads'] == 1
    assert report['calibration'] == f'4 images from {shape_images["calib"]}'
    assert report['evaluation'] == f'8 images from {shape_images["heldout"]}'
    assert list(report['runtimes']) == ['onnxruntime', 'openvino']
    for result in report['runtimes'].values():
        assert result['fp32']['runs'] == result['int8']['runs'] == 3
        assert 0 < result['ratio'] < 10
        for key in ('top1_fp32', 'top1_int8', 'agreement'):
            assert result[key] in [12.5 * k for k in range(9)]  # 8 images
        cosine = result['cosine']['logits']
        assert 0.9 <= cosine['min'] <= cosine['mean'] <= 1.0
    assert report['export']['int8_ops']['Conv'] > 50
    header = next(line for line in stdout.splitlines() if line.startswith('runtime'))
    assert header.split() == ['runtime', 'fp32', 'ms', 'int8', 'ms', 'int8/fp32', 'top-1', 'fp32',
                              'top-1', 'int8', 'agree', '%']
    assert re.search(r'^onnxruntime +[\d.]+ +[\d.]+ +[\d.]+ ', stdout, re.M)


@pytest.mark.slow  # an int8 export and its timing
@requires_onnxruntime
def test_top1_needs_matching_classes(shape_images, tmp_path, capsys):
    status, stdout, stderr = run_tool(
        TOOL, [SHAPES_CONFIGS['classifier'], '--shape', 64, 64,
               '--calib-dir', shape_images['calib'],
               '--eval-dir', shape_images['heldout'], *FAST, '--runtimes', 'onnxruntime',
               '--cfg-options', 'model.head.num_classes=10'], capsys)
    assert status == 0, stderr
    assert 'note: the model has 10 classes, the evaluation folder 4: top-1 not measured' in stdout
    row = re.search(r'^onnxruntime +[\d.]+ .*$', stdout, re.M)[0]
    assert row.split()[4:6] == ['-', '-']  # no top-1, agreement only


def test_labels_come_from_class_folders(shape_images):
    from repnext_mm.apis.model import load_model_config

    folder = Path(shape_images['heldout'])
    classes = class_names(load_model_config(SHAPES_CONFIGS['classifier']), folder)
    assert classes == ['circle', 'square', 'star', 'triangle']
    paths = sorted(folder.rglob('*.png'))
    assert folder_labels(paths, folder, classes) == [classes.index(p.parent.name) for p in paths]
    assert folder_labels([folder / 'loose.png'], folder, classes) is None


def test_missing_evaluation_folder_is_one_error(shape_images, tmp_path, capsys):
    status, _, stderr = run_tool(
        TOOL, [SHAPES_CONFIGS['classifier'], '--shape', 64, 64,
               '--calib-dir', shape_images['calib'], '--eval-dir', tmp_path / 'none',
               '--runtimes', 'onnxruntime'], capsys)
    assert status == 2
    assert re.search(r'^error: image folder .*none does not exist .*pass --eval-dir DIR', stderr,
                     re.M)


def test_a_directory_as_json_output_is_refused_before_any_work(tmp_path, capsys):
    status, stdout, stderr = run_tool(TOOL, [SHAPES_CONFIGS['classifier'], '--json', tmp_path],
                                      capsys)
    assert status == 2
    assert stderr.count('error:') == 1 and 'is a directory' in stderr
    assert 'Traceback' not in stderr and stdout == ''
    assert list(tmp_path.iterdir()) == []
