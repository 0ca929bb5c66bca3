"""tools/analysis/speed.py end to end on the smallest run: one arch, section (b), tiny inputs."""
import json

import pytest

from repnext_mm.benchmark import fused, speed
from tests.helpers import load_tool, requires_onnxruntime, run_tool

TOOL = 'tools/analysis/speed.py'


@requires_onnxruntime  # the fused section's ONNX export and its ONNX Runtime variants
def test_fused_section_prints_the_table_and_writes_json(monkeypatch, tmp_path, capsys):
    # M0 at 32x32 (instead of 512x512) and a small GEMM: the same code path in seconds.
    monkeypatch.setattr(speed, 'FUSED_SIZE', 32)
    monkeypatch.setitem(fused.GEMM_SIZE, 'cpu', 128)
    out = tmp_path / 'speed.json'
    status, stdout, _ = run_tool(TOOL, ['--archs', 'm0', '--sections', 'fused', '--repeats', 1,
                                        '--threads', 1, '--no-progress', '--json', out], capsys)
    assert status == 0
    assert stdout.startswith('Machine\n') and 'threads_choice  as requested' in stdout
    assert '(b) Fused backbone forward, batch 1, 32x32, cpu' in stdout
    assert 'M0: ' in stdout and '  <- best' in stdout and f'Wrote {out}' in stdout
    assert 'full fusion, OpenVINO' in stdout or 'openvino not installed' in stdout
    report = json.loads(out.read_text())
    assert set(report) == {'machine', 'args', 'fused'}
    assert report['fused']['m0']['facts']['bn_fused'] == 0
    assert len(report['fused']['m0']['times_s'][fused.UNFUSED]) == 1


def test_bad_invocations_exit_with_status_2(capsys, monkeypatch):
    status, _, stderr = run_tool(TOOL, ['--sections', 'gpu'], capsys)
    assert status == 2 and 'error: the gpu section needs --device cuda' in stderr
    status, _, stderr = run_tool(TOOL, ['--threads', 'many', '--sections', 'fused'], capsys)
    assert status == 2 and '--threads must be >= 1 or auto' in stderr
    with pytest.raises(SystemExit) as exit_info:
        load_tool(TOOL).main(['--repeats', '0'])
    assert exit_info.value.code == 2
    assert '--repeats and --train-repeats must be >= 1' in capsys.readouterr().err
