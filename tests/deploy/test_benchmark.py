"""Timing statistics, MAC counting, the GPU batch search and the benchmark rows."""
import csv
import json

import pytest
import torch
from torch import nn

from repnext_mm.deploy import benchmark
from repnext_mm.deploy.benchmark import (TimingStats, count_macs, largest_fitting_batch,
                                         require_cuda, time_callable, time_interleaved)
from repnext_mm.deploy.benchmark_suite import (benchmark_model, markdown_table, speedup_summary,
                                               write_rows)
from repnext_mm.deploy.errors import DeployError
from repnext_mm.deploy.exportable import PreparedModel
from repnext_mm.models.backbones.repnext import RepNeXt


def test_timing_stats_median_and_iqr():
    stats = TimingStats.from_seconds([0.004, 0.001, 0.002, 0.003, 0.100])
    assert stats.runs == 5
    assert stats.median_ms == pytest.approx(3.0)
    assert stats.p25_ms == pytest.approx(2.0)
    assert stats.p75_ms == pytest.approx(4.0)
    assert stats.iqr_ms == pytest.approx(2.0)  # the 100 ms outlier does not move it
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(100.0)


def test_time_callable_warms_up_then_times():
    calls = []
    stats = time_callable(lambda: calls.append(1), warmup=3, runs=7, progress=False)
    assert len(calls) == 10 and stats.runs == 7
    with pytest.raises(DeployError, match='runs >= 1'):
        time_callable(lambda: None, warmup=1, runs=0, progress=False)


def test_time_interleaved_alternates_the_calls():
    calls = []
    stats = time_interleaved({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')},
                             warmup=1, runs=4, progress=False)
    assert calls == ['a', 'b'] + ['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a']
    assert set(stats) == {'a', 'b'} and stats['a'].runs == stats['b'].runs == 4


def test_count_macs_counts_conv_and_linear_only():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).eval()
    expected = 8 * 3 * 9 * 8 * 8 + 8 * 8 * 8 * 4
    assert count_macs(model, torch.randn(1, 3, 8, 8)) == expected


def test_count_macs_of_fused_m0_matches_reference():
    # reference-facts.md: 0.388 GMACs at 224 for the fused M0 classifier, whose head adds 320x1000.
    model = RepNeXt('m0', deploy=True).eval()
    macs = count_macs(model, torch.randn(1, 3, 224, 224)) + 320 * 1000
    assert macs / 1e9 == pytest.approx(0.388, rel=0.01)


class OutOfMemoryAbove(nn.Module):
    """Raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.tried = []

    def forward(self, x):
        self.tried.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return x


def test_gpu_batch_search_halves_powers_of_two_on_oom():
    module = OutOfMemoryAbove(limit=100)
    batch = largest_fitting_batch(module, (8, 8), max_batch=1000, device='cpu',
                                  synchronize=lambda: None)
    assert batch == 64
    assert module.tried == [512, 256, 128, 64]


def test_gpu_batch_search_reraises_other_errors():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError('shape mismatch')
    with pytest.raises(RuntimeError, match='shape mismatch'):
        largest_fitting_batch(Broken(), (8, 8), 16, device='cpu', synchronize=lambda: None)


def test_cuda_backend_fails_clearly_without_a_gpu(monkeypatch):
    monkeypatch.setattr(benchmark.torch.cuda, 'is_available', lambda: False)
    with pytest.raises(DeployError, match='needs an NVIDIA GPU.*--backend torch / onnxruntime'):
        require_cuda()


@pytest.fixture(scope='module')
def tiny_rows():
    backbone = RepNeXt(dict(widths=(8, 16, 32, 64), depths=(1, 1, 2, 1))).eval()
    prepared = PreparedModel(None, 'backbone', 'random initialization', backbone)
    return benchmark_model(prepared, 'tiny', ['torch', 'onnxruntime'], (64, 64), warmup=1, runs=3,
                           progress=False, log=lambda _: None)


def test_benchmark_rows_cover_both_forms_and_backends(tiny_rows):
    assert [(r['backend'].split()[0], r['form']) for r in tiny_rows] == [
        ('torch', 'fused'), ('torch', 'unfused'), ('onnxruntime', 'fused'), ('onnxruntime', 'unfused')]
    for row in tiny_rows:
        assert row['runs'] == 3 and row['median_ms'] > 0 and row['iqr_ms'] >= 0
        assert row['threads'] == torch.get_num_threads()
        assert row['input'] == '64x64' and row['batch_size'] == 1
    fused, unfused = tiny_rows[0], tiny_rows[1]
    assert fused['params_m'] < unfused['params_m']  # folded BatchNorms
    assert len(speedup_summary(tiny_rows)) == 2
    assert markdown_table(tiny_rows).count('\n') == len(tiny_rows) + 1


def test_benchmark_rows_write_as_csv_and_json(tiny_rows, tmp_path):
    write_rows(tiny_rows, tmp_path / 'rows.csv')
    with open(tmp_path / 'rows.csv', newline='') as stream:
        read = list(csv.DictReader(stream))
    assert [r['form'] for r in read] == [r['form'] for r in tiny_rows]
    assert float(read[0]['median_ms']) == pytest.approx(tiny_rows[0]['median_ms'])
    write_rows(tiny_rows, tmp_path / 'rows.json')
    data = json.loads((tmp_path / 'rows.json').read_text())
    assert 'logical cores' in data['meta']['machine'] and len(data['rows']) == 4
    with pytest.raises(DeployError, match='.csv or .json'):
        write_rows(tiny_rows, tmp_path / 'rows.txt')
