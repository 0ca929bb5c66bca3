"""tools/analysis/benchmark_deployed.py: every path of one model timed in one run (no timing
assertions: the figures belong in the tool's output, docs/whole_model_deployment.md)."""
from __future__ import annotations

import pytest

from tests.helpers import SHAPES_CONFIGS, run_tool

TOOL = 'tools/analysis/benchmark_deployed.py'
PATHS = ('torch unfused', 'torch fused', 'onnxruntime fp32', 'onnxruntime int8', 'openvino fp32',
         'openvino int8 QDQ', 'openvino int8 NNCF')


@pytest.mark.slow  # three exports (fp32, QDQ, NNCF) of the shapes segmentor, ~15 s
def test_every_path_is_timed_and_printed(capsys, tmp_path):
    status, out, err = run_tool(TOOL, [SHAPES_CONFIGS['segmentor'], '--shape', 64, 64,
                                       '--runs', 1, '--warmup', 0, '--calib-images', 2,
                                       '--no-progress', '--work-dir', tmp_path], capsys)
    assert status == 0, err
    assert 'timed region: model.test_step' in out
    rows = [line.split('|')[1:-1] for line in out.splitlines() if line.startswith('| 1 |')]
    assert [row[1].strip() for row in rows] == list(PATHS)
    assert all(float(row[2]) > 0 for row in rows)
    assert [row[4].strip() for row in rows if row[1].strip() == 'torch fused'] == ['1.000']
    assert sorted(p.suffix for p in tmp_path.glob('*int8*')) == ['.bin', '.onnx', '.xml']


def test_bad_thread_count_is_one_line(capsys):
    status, _, err = run_tool(TOOL, [SHAPES_CONFIGS['segmentor'], '--threads', 0], capsys)
    assert status == 2 and err.strip().startswith('error: --threads must be >= 1')
