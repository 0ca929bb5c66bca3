"""tools/analysis/plot_latency.py: benchmark rows + zoo accuracies -> a latency-accuracy figure."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from repnext_mm.benchmark.tables import write_rows  # noqa: E402
from repnext_mm.models import RepNeXt  # noqa: E402
from repnext_mm.visualization import latency_plot as lp  # noqa: E402
from repnext_mm.cli import run_cli  # noqa: E402
from tests.helpers import REPO, load_tool

ARCHS = tuple(RepNeXt.arch_settings)


plot_latency = load_tool('tools/analysis/plot_latency.py')


def benchmark_rows(backend: str = 'torch', scale: float = 1.0) -> list[dict]:
    """Rows shaped like tools/analysis/benchmark.py's (fused and unfused, M0..M5)."""
    rows = []
    for index, arch in enumerate(ARCHS):
        for form, factor in (('fused', 1.0), ('unfused', 2.5)):
            rows.append(dict(model=f'RepNeXt-{arch.upper()} backbone', arch=arch, exported='backbone',
                             backend=backend, form=form, input='224x224', batch_size=1,
                             params_m=2.0 + index, gmacs=0.4 * (index + 1),
                             median_ms=round(scale * factor * (4.0 + 3.0 * index), 3), iqr_ms=0.1,
                             runs=20, warmup=5, threads=2, device='test cpu'))
    return rows


def _assert_png(path: Path) -> None:
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 10_000
    pixels = mpimg.imread(str(path))
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 400
    assert pixels.std() > 0.01  # not a blank canvas


def test_csv_and_json_from_the_benchmark_writer_give_png_and_svg(tmp_path, capsys):
    csv_path = write_rows(benchmark_rows('torch'), tmp_path / 'bench.csv')
    json_path = write_rows(benchmark_rows('onnxruntime 1.20', scale=0.6), tmp_path / 'bench.json')
    png = tmp_path / 'latency.png'
    assert run_cli(plot_latency.main, ['--benchmark', str(csv_path), str(json_path), '--out', str(png)]) == 0
    _assert_png(png)
    output = capsys.readouterr().out
    # One line per backend, through M1..M5 with the paper's distilled top-1; M0 left out.
    assert 'torch, backbone only: M1 7 ms / 78.8%' in output
    assert 'onnxruntime 1.20, backbone only: M1 4.2 ms / 78.8%' in output
    assert 'M5 19 ms / 83.3%' in output
    assert 'no top-1 accuracy for m0' in output
    assert 'unfused' not in output and '17.5 ms' not in output  # unfused rows are filtered out

    svg = tmp_path / 'latency.svg'
    assert run_cli(plot_latency.main, ['--benchmark', str(csv_path), '--paper-latency', '--out', str(svg)]) == 0
    text = svg.read_text(encoding='utf-8')
    assert text.lstrip().startswith('<?xml') and '<svg' in text
    for label in ('M1', 'M3', 'M5', 'RepNeXt, iPhone 12 (paper)', 'log scale'):
        assert label in text, label
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bench.csv', 'bench.json',
                                                          'latency.png', 'latency.svg']


def test_series_grouping_and_filters():
    rows = benchmark_rows('torch') + benchmark_rows('cuda fp32', scale=0.1)
    series, notes = lp.benchmark_series(rows, lp.PAPER_TOP1_DISTILLED)
    assert [s.label for s in series] == ['torch, backbone only', 'cuda fp32, backbone only']
    assert [p.label for p in series[0].points] == ['M1', 'M2', 'M3', 'M4', 'M5']
    assert [p.top1 for p in series[0].points] == [78.8, 80.1, 80.7, 82.3, 83.3]
    assert series[1].points[0].latency_ms == pytest.approx(0.7)
    assert notes and 'm0' in notes[0]

    both_forms, _ = lp.benchmark_series(rows, lp.PAPER_TOP1_PLAIN, form=None, backends=['torch'])
    assert [s.label for s in both_forms] == ['torch, fused, backbone only',
                                             'torch, unfused, backbone only']
    assert both_forms[0].points[0].top1 == 77.5
    assert lp.choose_xscale(series) == 'log'
    assert lp.choose_xscale(series[:1]) == 'linear'
    assert lp.arch_of('repnext_m3_8xb256_in1k') == 'm3'
    assert lp.arch_of('RepNeXt-M4 backbone') == 'm4'
    assert lp.arch_of('RepViT-M1.5') is None


def test_zoo_accuracies_from_model_index(tmp_path):
    metafile = tmp_path / 'configs' / 'metafile.yml'
    metafile.parent.mkdir()
    models = []
    for arch, plain, distilled in (('m1', 77.5, 78.8), ('m2', 78.9, 80.1)):
        for name, top1 in ((f'repnext_{arch}_8xb256_in1k', plain),
                           (f'repnext_{arch}_8xb256_in1k_distill', distilled)):
            models.append({'Name': name, 'Results': [{'Task': 'Image Classification',
                                                      'Dataset': 'ImageNet-1k',
                                                      'Metrics': {'Top 1 Accuracy': top1}}]})
    models.append({'Name': 'mask_rcnn_repnext_m3', 'Results': [
        {'Task': 'Object Detection', 'Dataset': 'COCO', 'Metrics': {'box AP': 40.7}}]})
    models.append({'Name': 'repnext_m0_shapes', 'Results': None})
    metafile.write_text(json.dumps({'Models': models}))  # JSON is valid YAML
    index = tmp_path / 'model-index.yml'
    index.write_text('Import:\n- configs/metafile.yml\n')
    assert lp.load_zoo_top1(index) == {'m1': 78.8, 'm2': 80.1}
    assert lp.load_zoo_top1(index, distilled=False) == {'m1': 77.5, 'm2': 78.9}

    csv_path = write_rows(benchmark_rows(), tmp_path / 'bench.csv')
    out = tmp_path / 'zoo.png'
    assert run_cli(plot_latency.main, ['--benchmark', str(csv_path), '--zoo', str(index), '--out', str(out)]) == 0
    _assert_png(out)

    index.write_text('Import:\n- configs/missing.yml\n')
    with pytest.raises(lp.PlotError, match='missing.yml, which does not exist'):
        lp.load_zoo_top1(index)


def test_repository_model_index_has_the_paper_accuracies():
    index = REPO / 'model-index.yml'
    if not index.is_file():
        pytest.fail('model-index.yml is missing: run python tools/misc/gen_metafiles.py')
    assert lp.load_zoo_top1(index) == lp.PAPER_TOP1_DISTILLED
    assert lp.load_zoo_top1(index, distilled=False) == lp.PAPER_TOP1_PLAIN


def test_paper_figure_without_benchmark(tmp_path):
    out = tmp_path / 'figure1.png'
    assert run_cli(plot_latency.main, ['--paper-latency', '--paper-baselines', '--out', str(out)]) == 0
    _assert_png(out)


def _write_csv(path: Path, header: str, *lines: str) -> Path:
    path.write_text('\n'.join([header, *lines]) + '\n')
    return path


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    out = str(tmp_path / 'x.png')
    no_latency = _write_csv(tmp_path / 'a.csv', 'arch,backend,form,input,mean', 'm1,torch,fused,224x224,3')
    assert run_cli(plot_latency.main, ['--benchmark', str(no_latency), '--out', out]) == 2
    error = capsys.readouterr().err
    assert error.startswith('error: ') and "'median_ms'" in error and "['arch', 'backend'" in error

    no_arch = _write_csv(tmp_path / 'b.csv', 'backend,median_ms', 'torch,3')
    with pytest.raises(lp.PlotError, match="lacks one of \\('arch', 'model'\\)"):
        lp.benchmark_series(lp.load_benchmark_rows([no_arch]), lp.PAPER_TOP1_DISTILLED)

    only_m0 = _write_csv(tmp_path / 'c.csv', 'arch,backend,form,input,median_ms',
                         'm0,torch,fused,224x224,3')
    assert run_cli(plot_latency.main, ['--benchmark', str(only_m0), '--out', out]) == 2
    assert "none of the benchmark archs has a known top-1 accuracy (the benchmark holds ['m0']" \
        in capsys.readouterr().err

    assert run_cli(plot_latency.main, ['--benchmark', str(only_m0), '--form', 'unfused', '--out', out]) == 2
    assert "no benchmark row matches form='unfused'" in capsys.readouterr().err

    twice = _write_csv(tmp_path / 'd.csv', 'arch,backend,form,input,median_ms',
                       'm1,torch,fused,224x224,3', 'm1,torch,fused,224x224,4')
    assert run_cli(plot_latency.main, ['--benchmark', str(twice), '--out', out]) == 2
    assert 'M1 appears twice' in capsys.readouterr().err

    not_number = _write_csv(tmp_path / 'e.csv', 'arch,median_ms', 'm1,fast')
    assert run_cli(plot_latency.main, ['--benchmark', str(not_number), '--out', out]) == 2
    assert "holds 'fast', not a number" in capsys.readouterr().err

    assert run_cli(plot_latency.main, ['--benchmark', str(tmp_path / 'nope.json'), '--out', out]) == 2
    assert 'nope.json does not exist' in capsys.readouterr().err
    bad_json = tmp_path / 'f.json'
    bad_json.write_text('{"meta": {}}')
    assert run_cli(plot_latency.main, ['--benchmark', str(bad_json), '--out', out]) == 2
    assert 'holds no list of rows' in capsys.readouterr().err
    assert run_cli(plot_latency.main, ['--paper-latency', '--out', str(tmp_path / 'x.jpg')]) == 2
    assert '--out must end in .png, .svg or .pdf' in capsys.readouterr().err
    assert run_cli(plot_latency.main, ['--out', out]) == 2
    assert 'nothing to plot' in capsys.readouterr().err
    assert not (tmp_path / 'x.png').exists()


def test_paper_lines_read_the_papers_tables():
    repnext = lp.paper_series()
    assert [p.label for p in repnext.points] == ['M1', 'M2', 'M3', 'M4', 'M5']
    assert (repnext.points[0].latency_ms, repnext.points[0].top1) == (0.86, 78.8)
    assert lp.paper_series(lp.PAPER_TOP1_PLAIN).points[-1].top1 == 82.4
    baselines = lp.paper_baseline_series()
    assert [s.label for s in baselines] == [
        f'{family}, iPhone 12 (paper)' for family in
        ('RepViT', 'EfficientFormerV2', 'FastViT (256)', 'SwiftFormer', 'MobileViG')]
    assert [(p.label, p.latency_ms, p.top1) for p in baselines[0].points][-1] == ('M2.3', 2.24, 83.3)
