"""repnext_mm/benchmark/ablation.py and tools/analysis/ablation_cost.py: the Table 5 cost table."""
from __future__ import annotations

import re

import pytest

from repnext_mm import paper
from repnext_mm.benchmark import ablation
from repnext_mm.benchmark.timing import TimingStats
from repnext_mm.cli import run_cli
from repnext_mm.utils.errors import InputError
from tests.helpers import REPO, load_tool

tool = load_tool('tools/analysis/ablation_cost.py')
pytestmark = pytest.mark.usefixtures('one_cpu_thread')


def _cost(design: str, params: int, ms: float, ratio: float) -> ablation.RowCost:
    stats = TimingStats.from_seconds([ms / 1e3])
    return ablation.RowCost(design, params, params - 100, 2 * params, stats, stats, ratio, ratio)


def test_rows_are_table5_in_order_and_the_tool_offers_them():
    assert ablation.ROWS == (*paper.ABLATION_M1_120E, *paper.ABLATION_REPVIT_120E)
    assert ablation.BASELINE in ablation.ROWS
    assert tool.parse_args(['--rows', 'repnext']).rows == ['repnext']


def test_unknown_row_names_the_choices():
    with pytest.raises(InputError,
                       match='unknown Table 5 row.*choose from no_srp, conv3x3_downsample'):
        ablation.row_config('nope')
    with pytest.raises(InputError, match='unknown Table 5 row'):
        ablation.measure_ablation(['nope'], root=REPO)


def test_cost_rows_divide_by_the_baseline():
    rows = ablation.cost_rows([_cost('no_srp', 4_000_000, 10.0, 1.0),
                               _cost('repnext', 5_000_000, 12.0, 1.25)])
    assert [r['row (design)'] for r in rows] == ['no_srp', 'repnext']
    assert rows[0]['params, training (M)'] == '4.000 (1.000)'
    assert rows[1]['params, training (M)'] == '5.000 (1.250)'
    assert rows[1]['latency (ms)'] == '12.00 (1.250)'
    assert rows[1]['paper top-1 (%)'] == '75.97'


@pytest.mark.slow  # builds and times all 12 models: ~45 s on 2 busy cores
def test_table_prints_every_row(capsys):
    status = run_cli(tool.main, ['--runs', '1', '--warmup', '0', '--batch-size', '1',
                                 '--threads', '1', '--no-progress'])
    out = capsys.readouterr().out
    assert status == 0
    lines = [line for line in out.splitlines() if line.startswith('| ')]
    assert len(lines) == 1 + len(ablation.ROWS)  # header + one line per row
    for design, line in zip(ablation.ROWS, lines[1:]):
        assert line.startswith(f'| {design} |')
    baseline = next(line for line in lines if line.startswith('| no_srp |'))
    assert baseline.count('(1.000)') == 5  # params x2, GMACs, latency, step
    # Every SRP row fuses into the same inference model as the baseline.
    fused = {line.split(' | ')[0][2:]: line.split(' | ')[6] for line in lines[1:]}
    for design in ('medium_5x5_3x3', 'medium_5x3_3x5', 'medium_strips', 'small_serial', 'repnext'):
        assert fused[design] == fused['no_srp'], design
    assert re.search(r'1 thread\(s\), 1 interleaved rounds', out)


def test_the_baseline_alone_is_its_own_reference():
    costs = ablation.measure_ablation(['no_srp'], runs=2, warmup=0, batch_size=1, root=REPO,
                                      progress=False)
    assert [c.design for c in costs] == ['no_srp']
    assert costs[0].latency_ratio == 1.0 and costs[0].step_ratio == 1.0
    assert costs[0].latency.runs == costs[0].step.runs == 2
    # "n_parameters" of the authors' log of this row (logs/ablation/repnext_m1_120e_7534.txt).
    assert costs[0].params == 5_230_424
    assert costs[0].fused_params < costs[0].params


@pytest.mark.slow  # builds and times two models
def test_subset_always_measures_the_baseline():
    costs = ablation.measure_ablation(['repnext'], runs=1, warmup=0, batch_size=1, root=REPO,
                                      progress=False)
    assert [c.design for c in costs] == ['no_srp', 'repnext']
    assert costs[1].params == 5_323_316  # the training-form M1 (authors' count)
    assert costs[1].fused_params == costs[0].fused_params  # SRP fuses away
