"""tools/deploy/export.py: Core ML (M4 backbone, 512x512, the paper's latency setting) and ONNX."""
import contextlib
import io
import json
import os
import platform
import re

import pytest

from repnext_mm.cli import run_cli
from tests.helpers import REPO, SHAPES_CONFIGS, load_tool, run_tool, single_error_line

TOOL = 'tools/deploy/export.py'
SEG_M4 = REPO / 'configs/mmseg/fpn_repnext_m4_8xb4-40k_ade20k-512x512.py'
M4_512_OUTPUTS = {'stage0': [1, 64, 128, 128], 'stage1': [1, 128, 64, 64],
                  'stage2': [1, 256, 32, 32], 'stage3': [1, 512, 16, 16]}


@pytest.fixture(scope='module')
def m4_coreml(tmp_path_factory):
    """Converts the M4 backbone of the Semantic FPN config once (a minute or two on 2 cores)."""
    root = tmp_path_factory.mktemp('coreml')
    out = root / 'repnext_m4_backbone_512x512.mlpackage'
    stdout = io.StringIO()  # module scope: capsys is per test, so capture by hand
    with contextlib.redirect_stdout(stdout):
        status = run_cli(load_tool(TOOL).main, [str(SEG_M4), '--format', 'coreml', '--backbone-only',
                                       '--shape', '512', '512', '--out', str(out),
                                       '--ios-bench', str(root / 'ios_bench')])
    return status, stdout.getvalue(), out, root


@pytest.mark.slow  # converts M4 to Core ML (the m4_coreml fixture)
def test_coreml_m4_backbone_package_and_report(m4_coreml):
    status, stdout, out, _ = m4_coreml
    assert status == 0, stdout
    assert (out / 'Manifest.json').is_file()
    assert any((out / 'Data' / 'com.apple.CoreML').rglob('*.mlmodel'))  # the ML program spec
    report = json.loads(out.with_suffix('.json').read_text())
    assert report['arch'] == 'm4' and report['exported'] == 'backbone'
    assert report['precision'] == 'fp16' and report['minimum_deployment_target'] == 'iOS16'
    assert report['inputs'] == [dict(name='image', type='image', height=512, width=512,
                                     color_layout='RGB')]
    assert {o['name']: o['shape'] for o in report['outputs']} == M4_512_OUTPUTS
    assert report['gmacs'] == pytest.approx(11.96, rel=0.01)  # reference-facts.md
    assert report['params'] > 12e6
    # Fully fused: only convolutions carry weights; no batch_norm op survives.
    assert 'batch_norm' not in report['op_histogram']
    assert report['op_histogram']['conv'] == sum(report['conv_kernels'].values())
    assert report['conv_kernels']['depthwise 7x7'] > 0 and report['conv_kernels']['depthwise 1x11'] > 0
    assert report['preprocessing']['mean'] == [123.675, 116.28, 103.53]
    if platform.system() != 'Darwin':
        assert 'Core ML cannot load, compile or run a model on Linux' in stdout


@pytest.mark.slow  # the m4_coreml fixture
def test_ios_bench_is_generated_for_the_exported_model(m4_coreml):
    status, stdout, out, root = m4_coreml
    assert status == 0
    bench = root / 'ios_bench'
    swift = (bench / 'Tests' / 'RepNeXtLatencyTests' / 'RepNeXtLatencyTests.swift').read_text()
    assert 'static let modelResource = "repnext_m4_backbone_512x512"' in swift
    assert 'static let inputName = "image"' in swift
    assert 'static let inputWidth = 512' in swift and 'static let inputHeight = 512' in swift
    declared = dict(re.findall(r'"(stage\d)": (\[[\d, ]+\])', swift))
    assert {k: json.loads(v) for k, v in declared.items()} == M4_512_OUTPUTS
    copied = bench / 'Tests' / 'RepNeXtLatencyTests' / 'Resources' / out.name / 'Manifest.json'
    assert copied.read_bytes() == (out / 'Manifest.json').read_bytes()
    command = next(line.strip() for line in stdout.splitlines() if 'xcodebuild test' in line)
    assert command.startswith(f'cd {bench} && xcodebuild test -scheme RepNeXtLatency ')
    assert "-destination 'platform=iOS,id=<DEVICE_UDID>'" in command


def test_onnx_classifier_export(trained_checkpoints, tmp_path, capsys):
    out = tmp_path / 'cls.onnx'
    status, stdout, stderr = run_tool(
        TOOL, [SHAPES_CONFIGS['classifier'], trained_checkpoints['classifier'], '--format', 'onnx',
               '--shape', 64, 64, '--out', out], capsys)
    assert status == 0
    # Progress on stderr (one line per step when it is not a terminal), results on stdout.
    assert '[1/2] building and fusing the model' in stderr
    assert '[2/2] exporting to ONNX and checking it with onnxruntime' in stderr
    assert re.search(r'done in [\d.]+ s', stderr)
    match = re.search(r'max relative difference ([\d.e+-]+)', stdout)
    assert match and float(match[1]) < 1e-4
    assert 'output logits: [1, 4]' in stdout
    assert out.is_file()


def test_ios_bench_needs_coreml(tmp_path, capsys):
    status, _, stderr = run_tool(TOOL, [SHAPES_CONFIGS['segmentor'], '--format', 'onnx',
                                        '--ios-bench', tmp_path / 'bench'], capsys)
    assert status == 2 and '--ios-bench needs --format coreml' in stderr
    assert list(tmp_path.iterdir()) == []


def test_percentile_calibration_of_a_whole_detector_is_one_line(tmp_path, capsys):
    status, _, stderr = run_tool(TOOL, [SHAPES_CONFIGS['detector'], '--format', 'onnx',
                                        '--int8', '--calib-method', 'percentile',
                                        '--out', tmp_path / 'det.onnx'], capsys)
    assert status == 2
    assert single_error_line(stderr).startswith(
        'error: --calib-method percentile cannot calibrate a whole detector')
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('force', [False, True])
def test_onnx_out_that_is_a_directory_is_refused(tmp_path, capsys, force):
    out = tmp_path / 'cls.onnx'
    (out / 'keep').mkdir(parents=True)
    status, stdout, stderr = run_tool(
        TOOL, [SHAPES_CONFIGS['classifier'], '--format', 'onnx', '--shape', 64, 64, '--out', out,
               *(['--force'] if force else [])], capsys)
    assert status == 2, stdout
    errors = [line for line in stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and f'{out} is a directory; pass a file path' in errors[0]
    # No traceback: main returned (in-process, an uncaught exception would fail the test)
    # and its error line is the last word. ('Traceback' itself is not checked: MMEngine's
    # logger may still hold the closed capture stream of an earlier test and then
    # prints a '--- Logging error ---' traceback of its own.)
    assert stderr.rstrip().splitlines()[-1] == errors[0]
    assert 'IsADirectoryError' not in stderr and 'already exists' not in stderr
    assert os.listdir(tmp_path) == ['cls.onnx'] and os.listdir(out) == ['keep']
