"""ONNX export parity, the Core ML input folding, the iOS benchmark package generator, and the
export run's option checks, output names, steps and printed reports.

The full Core ML conversion of an M4 backbone at 512x512 runs once, through the command line tool,
in tests/tools/deploy/test_export_cli.py.
"""
import copy
import json
from pathlib import Path

import pytest
import torch

from repnext_mm.apis.model import load_model_config
from repnext_mm.utils.errors import InputError
from repnext_mm.apis.model import PreparedModel, prepare_bare_backbone, preprocessing_of
from repnext_mm.deploy.coreml import CoreMLExport
from repnext_mm.deploy.export import (CoreMLRun, ExportSettings, check_settings,
                                      default_out_path, export_steps, print_coreml_report,
                                      print_onnx_report)
from repnext_mm.deploy.exportable import ExportWrapper, fold_input_channel_scale
from repnext_mm.deploy.ios_bench import PACKAGE_NAME, IOSBench, write_ios_bench
from repnext_mm.deploy.onnx_export import OnnxExport, export_onnx
from repnext_mm.deploy.onnx_runtime import onnxruntime_session as onnx_session
from repnext_mm.deploy.verify import Difference
from repnext_mm.models.backbones.repnext import RepNeXt
from tests.helpers import SHAPES_CONFIGS, max_rel_error, randomize_norms


TINY = dict(widths=(8, 16, 32, 64), depths=(1, 1, 2, 1))


@pytest.fixture(scope='module')
def m0_backbone():
    prepared = prepare_bare_backbone('m0')
    randomize_norms(prepared.training_model)
    return prepared


@pytest.mark.parametrize('form', ['fused M0', 'unfused tiny'])
def test_onnx_backbone_matches_torch(m0_backbone, tmp_path, form):
    if form == 'fused M0':
        model, widths = m0_backbone.fused(), (40, 80, 160, 320)
    else:  # every SRP branch as its own op (a small arch keeps the many-node export fast)
        tiny = PreparedModel(None, 'backbone', 'random', randomize_norms(RepNeXt(TINY)).eval())
        model, widths = tiny.unfused('branches'), TINY['widths']
    wrapper = ExportWrapper(model, 'backbone')
    assert wrapper.output_names == ['stage0', 'stage1', 'stage2', 'stage3']
    lines = []
    result = export_onnx(wrapper, (64, 96), tmp_path / 'model.onnx', wrapper.output_names,
                         log=lines.append)
    assert result.difference.max_rel < 1e-4
    assert lines and 'onnxruntime vs torch' in lines[0]
    assert result.output_shapes == {
        f'stage{i}': [1, w, 16 >> i, 24 >> i] for i, w in enumerate(widths)}

    import onnx
    model_proto = onnx.load(str(result.path))
    onnx.checker.check_model(model_proto)
    assert max(op.version for op in model_proto.opset_import if op.domain in ('', 'ai.onnx')) >= 17
    # Independent parity check on another input, through a fresh session.
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = wrapper(x)
    actual = onnx_session(result.path).run(None, {'input': x.numpy()})
    for a, e in zip(actual, expected):
        assert max_rel_error(torch.from_numpy(a), e) < 1e-4


def test_onnx_rejects_old_opsets_and_writes_nothing(m0_backbone, tmp_path):
    wrapper = ExportWrapper(m0_backbone.fused(), 'backbone')
    with pytest.raises(InputError, match='opset must be >= 17'):
        export_onnx(wrapper, (64, 64), tmp_path / 'old.onnx', wrapper.output_names, opset=13)
    assert list(tmp_path.iterdir()) == []


def test_input_channel_scale_folds_exactly_into_the_stem(m0_backbone):
    wrapper = ExportWrapper(m0_backbone.fused(), 'backbone')
    scale = torch.tensor([0.98, 1.01, 1.005])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = wrapper(x * scale.view(1, 3, 1, 1))
        folded = copy.deepcopy(wrapper)
        assert fold_input_channel_scale(folded, scale)
        actual = folded(x)
    for a, e in zip(actual, expected):
        assert max_rel_error(a, e) < 1e-5


@pytest.mark.parametrize('task, layout', [('classifier', 'RGB'), ('segmentor', 'RGB'),
                                          ('detector', 'RGB')])
def test_preprocessing_is_read_from_the_configs(task, layout):
    pre = preprocessing_of(load_model_config(SHAPES_CONFIGS[task]))
    assert pre.color_layout == layout
    assert pre.mean == pytest.approx((123.675, 116.28, 103.53))
    assert pre.std == pytest.approx((58.395, 57.12, 57.375))


def test_unsupported_detectors_point_to_backbone_only():
    class FakeDetector(torch.nn.Module):
        pass
    with pytest.raises(InputError, match='--backbone-only'):
        ExportWrapper(FakeDetector(), 'detector')


def _fake_mlpackage(path):
    (path / 'Data' / 'com.apple.CoreML').mkdir(parents=True)
    (path / 'Manifest.json').write_text('{}')
    return path


def test_ios_bench_package_names_the_model_interface(tmp_path):
    package = _fake_mlpackage(tmp_path / 'repnext_m4_backbone_512x512.mlpackage')
    report = dict(
        inputs=[dict(name='image', type='image', height=512, width=384, color_layout='RGB')],
        outputs=[dict(name=f'stage{i}', type='multiarray', shape=[1, c, 128 >> i, 96 >> i],
                      dtype='FLOAT16') for i, c in enumerate((64, 128, 256, 512))])
    bench = write_ios_bench(tmp_path / 'bench', package, report)
    test_source = bench.test_file.read_text()
    assert 'static let inputName = "image"' in test_source
    assert 'static let inputWidth = 384' in test_source
    assert 'static let inputHeight = 512' in test_source
    assert '"stage3": [1, 512, 16, 12],' in test_source
    assert 'static let modelResource = "repnext_m4_backbone_512x512"' in test_source
    assert 'measure(metrics: [XCTClockMetric()], options: options)' in test_source
    assert 'static let measuredRuns = 25' in test_source  # 20+ timed runs
    package_swift = (bench.directory / 'Package.swift').read_text()
    assert '.copy("Resources/repnext_m4_backbone_512x512.mlpackage")' in package_swift
    assert (bench.directory / 'Tests' / f'{PACKAGE_NAME}Tests' / 'Resources' /
            'repnext_m4_backbone_512x512.mlpackage' / 'Manifest.json').is_file()
    assert "xcodebuild test -scheme RepNeXtLatency -destination 'platform=iOS,id=" in bench.command
    manifest = json.loads((bench.directory / 'bench_manifest.json').read_text())
    assert manifest['outputs']['stage0'] == [1, 64, 128, 96]
    with pytest.raises(InputError, match='--force'):
        write_ios_bench(tmp_path / 'bench', package, report)


def test_ios_bench_rejects_names_swift_cannot_embed(tmp_path):
    package = _fake_mlpackage(tmp_path / 'bad"name.mlpackage')
    report = dict(inputs=[dict(name='image', type='image', height=64, width=64)], outputs=[])
    with pytest.raises(InputError, match='letters, digits'):
        write_ios_bench(tmp_path / 'bench', package, report)
    assert not (tmp_path / 'bench').exists()


def test_export_settings_are_checked_before_anything_is_built():
    check_settings(ExportSettings('cfg.py', 'coreml', shape=(32, 64), ios_bench='bench'))
    with pytest.raises(InputError, match="--format must be one of coreml, onnx, got 'tflite'"):
        check_settings(ExportSettings('cfg.py', 'tflite'))
    with pytest.raises(InputError, match='--ios-bench needs --format coreml'):
        check_settings(ExportSettings('cfg.py', 'onnx', ios_bench='bench'))
    with pytest.raises(InputError, match='at least 32x32 .*, got 16x64'):
        check_settings(ExportSettings('cfg.py', 'onnx', shape=(16, 64)))


def test_export_steps_follow_the_format_and_options():
    build, convert = 'building and fusing the model', 'tracing and converting to Core ML'
    assert export_steps(ExportSettings('cfg.py', 'onnx'), True) == [
        build, 'exporting to ONNX and checking it with onnxruntime']
    coreml = ExportSettings('cfg.py', 'coreml')
    assert export_steps(coreml, False) == [build, convert]
    coreml.ios_bench = 'bench'
    assert export_steps(coreml, True) == [build, convert, 'timing MLModel.predict',
                                          'writing the Xcode test package']


def test_default_out_path_names_config_part_and_size():
    config = 'configs/mmseg/fpn_repnext_m4_8xb4-40k_ade20k-512x512.py'
    assert default_out_path(config, 'coreml', True, (512, 384)) == Path(
        'fpn_repnext_m4_8xb4-40k_ade20k-512x512_backbone_512x384.mlpackage')
    assert default_out_path('repnext_m1.py', 'onnx', False, (224, 224)) == Path(
        'repnext_m1_224x224.onnx')


def test_onnx_report_lines(capsys):
    result = OnnxExport(Path('m.onnx'), Difference(1e-6, 2e-7, 3), ['logits'],
                        {'logits': [1, 4]})
    print_onnx_report(result, 17)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f'wrote m.onnx (opset 17; onnxruntime vs torch: {result.difference})'
    assert lines[1:] == ['  output logits: [1, 4]']


@pytest.mark.parametrize('on_mac', [False, True])
def test_coreml_report_lines_with_and_without_timings(capsys, on_mac):
    report = dict(inputs=[dict(name='image')], outputs=[dict(name='stage0', shape=[1, 8, 16, 12])],
                  params=1.5e6, gmacs=0.25, num_ops=7, op_histogram=dict(conv=5, add=2))
    run = CoreMLRun(CoreMLExport(Path('m.mlpackage'), Path('m.json'), report))
    if on_mac:
        run.timings = dict(ALL=dict(median_ms=1.234, p25_ms=1.0, p75_ms=1.5, runs=20))
        run.bench = IOSBench(Path('bench'), 'cd bench && xcodebuild test', Path('t.swift'))
    print_coreml_report(run, (64, 48), 'RGB')
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == [
        'wrote m.mlpackage and m.json',
        '  input image: 48x64 RGB image; outputs: stage0 [1, 8, 16, 12]',
        '  1.50 M params, 0.25 GMACs, 7 ops: {"conv": 5, "add": 2}']
    assert ('  MLModel.predict ALL: median 1.23 ms (IQR 0.50 ms, 20 runs)' in out) == on_mac
    assert ('Core ML cannot load, compile or run a model on' in out) != on_mac
    assert out.endswith('run:\n  cd bench && xcodebuild test\n') == on_mac
