"""Fused vs unfused benchmark rows on every CPU backend, the floor column, the output check,
their Markdown table, speed-ups and CSV / JSON files."""
import csv
import json
import sys

import pytest
import torch

from repnext_mm.benchmark import fused, runtimes, suite
from repnext_mm.models.utils.complexity import count_macs
from repnext_mm.benchmark.suite import benchmark_model
from repnext_mm.benchmark.tables import load_rows, markdown_table, speedup_summary, write_rows
from repnext_mm.benchmark.timing import paired_ratio, round_robin
from repnext_mm.apis.model import PreparedModel
from repnext_mm.deploy.exportable import ExportWrapper
from repnext_mm.deploy.verify import example_inputs
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.utils.errors import InputError
from tests.helpers import SMALL_GEMM, requires_onnxruntime, requires_openvino

CPU_BACKENDS = ['torch', 'onnxruntime', 'openvino']
SHAPE = (64, 64)


def requires_every_cpu_backend(test):
    """Marks a test of the run on every CPU backend: it needs onnxruntime and openvino."""
    return requires_onnxruntime(requires_openvino(test))


def _tiny_prepared() -> PreparedModel:
    backbone = RepNeXt(dict(widths=(8, 16, 32, 64), depths=(1, 1, 2, 1))).eval()
    return PreparedModel(None, 'backbone', 'random initialization', backbone)


@pytest.fixture(scope='module')
def tiny_run():
    """Rows of a tiny backbone on every CPU backend, and what each round-robin and export saw."""
    rounds, exports = [], []

    def spy_round_robin(functions, *args, **kwargs):
        samples = round_robin(functions, *args, **kwargs)
        rounds.append(dict(names=list(functions), threads=torch.get_num_threads(),
                           samples={name: list(times) for name, times in samples.items()}))
        return samples

    def spy_export(*args, **kwargs):
        exports.append(args[2])
        return runtimes.export_for_timing(*args, **kwargs)

    prepared = _tiny_prepared()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # the run must pin torch (and the GEMM) to threads=1 itself
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(fused.GEMM_SIZE, 'cpu', SMALL_GEMM)
            patch.setattr(suite, 'round_robin', spy_round_robin)
            patch.setattr(suite, 'export_for_timing', spy_export)
            rows = benchmark_model(prepared, 'tiny', CPU_BACKENDS, SHAPE, warmup=1, runs=3,
                                   threads=1, progress=False, log=lambda _: None)
    finally:
        torch.set_num_threads(previous)
    fused_macs = count_macs(ExportWrapper(prepared.fused(), 'backbone'), example_inputs(SHAPE, 1))
    return dict(rows=rows, rounds=rounds, exports=exports, fused_macs=fused_macs)


@pytest.fixture(scope='module')
def tiny_rows(tiny_run):
    return tiny_run['rows']


@requires_every_cpu_backend
def test_benchmark_rows_cover_both_forms_and_backends(tiny_rows):
    assert [(r['backend'].split()[0], r['form']) for r in tiny_rows] == [
        (backend, form) for backend in CPU_BACKENDS for form in ('fused', 'unfused')]
    for row in tiny_rows:
        assert row['runs'] == 3 and row['median_ms'] > 0 and row['iqr_ms'] >= 0
        assert row['threads'] == 1
        assert row['input'] == '64x64' and row['batch_size'] == 1
    fused_row, unfused_row = tiny_rows[0], tiny_rows[1]
    assert fused_row['params_m'] < unfused_row['params_m']  # folded BatchNorms
    assert len(speedup_summary(tiny_rows)) == 3
    assert markdown_table(tiny_rows).count('\n') == len(tiny_rows) + 1


@requires_every_cpu_backend
def test_both_onnx_backends_run_one_export_checked_against_torch(tiny_run):
    assert [path.name for path in tiny_run['exports']] == ['fused.onnx', 'unfused.onnx']
    for row in tiny_run['rows']:
        if row['backend'].startswith(('onnxruntime', 'openvino')):
            assert 0 < row['max_rel_error'] < 1e-4


@requires_every_cpu_backend
def test_the_floor_gemm_is_timed_in_the_same_rounds_at_the_same_threads(tiny_run):
    rounds = tiny_run['rounds']
    assert len(rounds) == len(CPU_BACKENDS)  # one round-robin per backend
    for index, timed in enumerate(rounds):
        backend_rows = tiny_run['rows'][2 * index:2 * index + 2]  # the backend's two forms
        assert timed['names'] == ['fused', 'unfused', fused.GEMM] and timed['threads'] == 1
        floor = fused.floor_samples(tiny_run['fused_macs'], timed['samples'][fused.GEMM],
                                    2 * SMALL_GEMM ** 3)
        for row in backend_rows:
            assert row['x_floor'] == pytest.approx(paired_ratio(timed['samples'][row['form']],
                                                                floor))
            assert row['gemm_gflops'] > 0 and row['floor_ms'] > 0
    assert '| x_floor |' in markdown_table(tiny_run['rows'])


@requires_onnxruntime  # the export that OpenVINO reads
@requires_openvino
def test_a_backend_that_differs_from_torch_is_an_error_before_timing(monkeypatch, small_gemm):
    def off_by_one_percent(path, inputs, threads):
        run = runtimes.openvino_runner(path, inputs, threads)
        return lambda: [out * 1.01 for out in run()]

    monkeypatch.setitem(suite.ONNX_RUNNERS, 'openvino', off_by_one_percent)
    monkeypatch.setattr(suite, 'round_robin', lambda *a, **k: pytest.fail('timed a wrong model'))
    with pytest.raises(RuntimeError, match=r'tiny, fused form: openvino differs from eager torch: '
                                           r'max relative difference 1\.00\de-02.*not timed'):
        benchmark_model(_tiny_prepared(), 'tiny', ['openvino'], SHAPE, warmup=0, runs=1,
                        threads=1, include_unfused=False, progress=False, log=lambda _: None)


def test_missing_openvino_is_refused_before_any_work(monkeypatch):
    monkeypatch.setitem(sys.modules, 'openvino', None)  # makes `import openvino` fail
    monkeypatch.setattr(suite, 'count_macs', lambda *a: pytest.fail('worked before the check'))
    with pytest.raises(InputError, match=r'OpenVINO is not installed: pip install openvino'):
        benchmark_model(_tiny_prepared(), 'tiny', ['torch', 'openvino'], SHAPE, progress=False)


@requires_every_cpu_backend
def test_benchmark_rows_write_as_csv_and_json(tiny_rows, tmp_path):
    write_rows(tiny_rows, tmp_path / 'rows.csv')
    with open(tmp_path / 'rows.csv', newline='') as stream:
        read = list(csv.DictReader(stream))
    assert [r['form'] for r in read] == [r['form'] for r in tiny_rows]
    assert float(read[0]['median_ms']) == pytest.approx(tiny_rows[0]['median_ms'])
    write_rows(tiny_rows, tmp_path / 'rows.json')
    data = json.loads((tmp_path / 'rows.json').read_text())
    assert 'logical cores' in data['meta']['machine'] and len(data['rows']) == len(tiny_rows)
    assert load_rows(tmp_path / 'rows.json') == data['rows']
    with pytest.raises(InputError, match='.csv or .json'):
        write_rows(tiny_rows, tmp_path / 'rows.txt')


def test_unknown_backend_is_refused_before_any_work():
    prepared = PreparedModel(None, 'backbone', 'random initialization', None)
    with pytest.raises(InputError, match="unknown backend.*'tensorrt'"):
        benchmark_model(prepared, 'tiny', ['tensorrt'], (64, 64), progress=False)
