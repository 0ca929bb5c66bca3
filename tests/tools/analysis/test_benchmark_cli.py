"""tools/analysis/benchmark.py on tiny cases: CSV/JSON output, config + checkpoint, dataset mode,
the OpenVINO backend, the floor column and several thread counts."""
import csv
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from repnext_mm.benchmark import fused, suite
from tests.helpers import (SHAPES_CONFIGS, load_tool, requires_onnxruntime, requires_openvino,
                           run_tool)

TOOL = 'tools/analysis/benchmark.py'
DATA_ROOT = 'test_dataloader.dataset.data_root='


def test_bare_backbone_fused_vs_unfused_to_json(tmp_path, capsys):
    out = tmp_path / 'rows.json'
    status, stdout, _ = run_tool(TOOL, ['--arch', 'm0', '--shape', 64, 64, '--backend', 'torch',
                                        '--warmup', 1, '--runs', 2, '--no-progress', '--out', out],
                                 capsys)
    assert status == 0
    assert f'with {torch.get_num_threads()} intra-op threads' in stdout
    assert 'RepNeXt-M0 backbone on torch at 64x64 (threads=' in stdout  # the speed-up line
    rows = json.loads(out.read_text())['rows']
    assert [r['form'] for r in rows] == ['fused', 'unfused']
    assert rows[0]['gmacs'] < rows[1]['gmacs']  # unfused counts every branch
    assert all(r['runs'] == 2 and r['median_ms'] > 0 for r in rows)


@requires_onnxruntime
def test_config_checkpoint_backbone_on_onnxruntime_to_csv(trained_checkpoints, tmp_path, capsys):
    out = tmp_path / 'rows.csv'
    status, stdout, _ = run_tool(TOOL, [SHAPES_CONFIGS['segmentor'],
                                        trained_checkpoints['segmentor'],
                                        '--backbone-only', '--shape', 64, 64, '--backend',
                                        'onnxruntime', '--no-unfused', '--warmup', 1, '--runs', 2,
                                        '--no-progress', '--out', out], capsys)
    assert status == 0
    with open(out, newline='') as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 1
    assert rows[0]['backend'].startswith('onnxruntime') and rows[0]['form'] == 'fused'
    assert rows[0]['exported'] == 'backbone' and rows[0]['arch'] == 'm0'
    assert rows[0]['weights'] == str(trained_checkpoints['segmentor'])


@pytest.mark.slow  # exports, compiles and times at two thread counts
@requires_onnxruntime  # the export that OpenVINO reads
@requires_openvino
def test_openvino_beside_torch_at_1_and_2_threads_with_the_floor(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(fused.GEMM_SIZE, 'cpu', 128)  # the floor's matmul, small for the test
    out = tmp_path / 'rows.json'
    status, stdout, _ = run_tool(TOOL, ['--arch', 'm0', '--shape', 64, 64, '--backend', 'torch',
                                        'openvino', '--no-unfused', '--threads', 1, 2, '--warmup',
                                        1, '--runs', 2, '--no-progress', '--out', out], capsys)
    assert status == 0, stdout
    rows = json.loads(out.read_text())['rows']
    assert [(r['backend'].split()[0], r['threads']) for r in rows] == [
        ('torch', 1), ('openvino', 1), ('torch', 2), ('openvino', 2)]
    assert all(r['x_floor'] > 0 and r['load_average'] >= 0 for r in rows)
    assert all(r['max_rel_error'] < 1e-4 for r in rows)
    assert '| x_floor |' in stdout and 'x the compute floor' in stdout
    assert stdout.count('load average') == 3  # at each thread count's start and at the end


def test_missing_openvino_is_one_error_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'openvino', None)  # makes `import openvino` fail
    status, _, stderr = run_tool(TOOL, ['--arch', 'm0', '--backend', 'openvino'], capsys)
    assert status == 2
    assert stderr.startswith('error: OpenVINO is not installed: pip install openvino')
    assert stderr.count('\n') == 1


def test_the_backend_choices_are_the_suites():
    assert load_tool(TOOL).BACKENDS == suite.BACKENDS


def _fake_ade_split(root, count=3, size=64):
    """A minimal ADE20K-layout validation split (images/validation, annotations/validation)."""
    rng = np.random.default_rng(0)
    (root / 'images' / 'validation').mkdir(parents=True)
    (root / 'annotations' / 'validation').mkdir(parents=True)
    for index in range(count):
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        label = rng.integers(0, 5, (size, size), dtype=np.uint8)
        Image.fromarray(image).save(root / 'images' / 'validation' / f'{index}.jpg')
        Image.fromarray(label).save(root / 'annotations' / 'validation' / f'{index}.png')


def test_dataset_mode_times_the_whole_segmentor(trained_checkpoints, tmp_path, capsys):
    _fake_ade_split(tmp_path / 'ade')
    status, stdout, _ = run_tool(TOOL, [SHAPES_CONFIGS['segmentor'],
                                        trained_checkpoints['segmentor'],
                                        '--dataset', '--max-iter', 2, '--no-unfused', '--no-progress',
                                        '--cfg-options', DATA_ROOT + str(tmp_path / 'ade')],
                                 capsys)
    assert status == 0, stdout
    # 2 images: 1 warm-up, 1 timed (the unfused form is timed the same way; skipped for speed)
    assert any(line.startswith('fused: ') and 'images/s (1 timed, 1 warm-up)' in line
               for line in stdout.splitlines()), stdout
    assert '| torch cpu (dataset) | fused |' in stdout


def test_bad_invocations_exit_with_status_2(tmp_path, capsys, monkeypatch):
    status, _, stderr = run_tool(TOOL, ['--shape', 64, 64], capsys)
    assert status == 2 and 'either CONFIG' in stderr
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    status, _, stderr = run_tool(TOOL, ['--arch', 'm0', '--backend', 'cuda'], capsys)
    assert status == 2 and 'needs an NVIDIA GPU' in stderr
    status, _, stderr = run_tool(TOOL, [SHAPES_CONFIGS['segmentor'], '--dataset', '--no-progress',
                                        '--cfg-options', DATA_ROOT + str(tmp_path / 'none')],
                                 capsys)
    assert status == 2 and 'test dataset' in stderr
    status, _, stderr = run_tool(TOOL, ['--arch', 'm0', '--shape', 8, 8], capsys)
    assert status == 2 and '--shape must be at least 32x32' in stderr and 'got 8x8' in stderr
