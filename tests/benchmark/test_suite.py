"""Fused vs unfused benchmark rows, their Markdown table, speed-ups and CSV / JSON files."""
import csv
import json

import pytest
import torch

from repnext_mm.benchmark.suite import benchmark_model
from repnext_mm.benchmark.tables import load_rows, markdown_table, speedup_summary, write_rows
from repnext_mm.apis.model import PreparedModel
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.utils.errors import InputError


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
    assert load_rows(tmp_path / 'rows.json') == data['rows']
    with pytest.raises(InputError, match='.csv or .json'):
        write_rows(tiny_rows, tmp_path / 'rows.txt')


def test_unknown_backend_is_refused_before_any_work():
    prepared = PreparedModel(None, 'backbone', 'random initialization', None)
    with pytest.raises(InputError, match="unknown backend.*'tensorrt'"):
        benchmark_model(prepared, 'tiny', ['tensorrt'], (64, 64), progress=False)
