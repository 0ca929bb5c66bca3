#!/usr/bin/env python
"""Latency vs ImageNet-1K top-1 plot of RepNeXt-M1..M5, like the paper's Figure 1.

Examples:
    # measured CPU latency of the fused classifiers against the paper's accuracies
    python tools/analysis/benchmark.py configs/mmpretrain/repnext_m1_8xb256_in1k.py ... \\
        --out bench_m1.json          # (one file per model, or --arch m1 ... m5 for backbones)
    python tools/analysis/plot_latency.py --benchmark bench_*.json --out latency.png

    # accuracies from the model zoo, the paper's iPhone 12 line and its comparison models
    python tools/analysis/plot_latency.py --benchmark bench.csv --zoo model-index.yml \\
        --paper-latency --paper-baselines --out latency.svg

    # just the paper's Figure 1 data (no benchmark needed)
    python tools/analysis/plot_latency.py --paper-latency --paper-baselines --out figure1.png

One line per backend / device / input size found in the benchmark files (fused rows by
default); each point is labelled M1..M5. M0 has no published accuracy and is left out. When the
lines' latencies differ by more than 8x (a CPU next to the iPhone) the x axis is logarithmic.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repnext_mm.cli import ArgumentParser, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--benchmark', nargs='+', default=[], metavar='FILE',
                        help='CSV or JSON files written by tools/analysis/benchmark.py --out')
    parser.add_argument('--zoo', metavar='MODEL_INDEX',
                        help="model-index.yml to read top-1 from (default: the paper's table)")
    parser.add_argument('--accuracy', choices=('distilled', 'plain'), default='distilled',
                        help="which top-1: with distillation (paper Table 2, default) or "
                             'without (Table 3); applies to --zoo too')
    parser.add_argument('--paper-latency', action='store_true',
                        help="add the paper's iPhone 12 latencies of M1..M5 as a line")
    parser.add_argument('--paper-baselines', action='store_true',
                        help="add the paper's comparison models (RepViT, FastViT, ...; iPhone 12)")
    parser.add_argument('--form', choices=('fused', 'unfused', 'all'), default='fused',
                        help='which benchmark rows to plot (default fused)')
    parser.add_argument('--backend', nargs='+', metavar='NAME',
                        help='keep rows whose backend contains NAME (e.g. torch onnxruntime)')
    parser.add_argument('--input', nargs='+', metavar='HxW',
                        help='keep rows of these input sizes (e.g. 224x224)')
    parser.add_argument('--xscale', choices=('auto', 'linear', 'log'), default='auto')
    parser.add_argument('--title', default='RepNeXt: latency vs ImageNet-1K accuracy')
    parser.add_argument('--out', required=True, help='output .png, .svg or .pdf')
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    from repnext_mm.visualization.latency_plot import (PAPER_TOP1_DISTILLED, PAPER_TOP1_PLAIN,
                                                       PlotError, benchmark_series,
                                                       describe_series, load_benchmark_rows,
                                                       load_zoo_top1, paper_baseline_series,
                                                       paper_series, plot_latency_accuracy)

    if not (args.benchmark or args.paper_latency or args.paper_baselines):
        raise PlotError('nothing to plot: pass --benchmark FILE(S) and/or --paper-latency')
    out = Path(args.out)
    if out.suffix.lower() not in ('.png', '.svg', '.pdf'):  # fail before reading anything
        raise PlotError(f'--out must end in .png, .svg or .pdf, got {out}')
    if args.zoo:
        top1 = load_zoo_top1(args.zoo, distilled=args.accuracy == 'distilled')
        source = f'{args.zoo} ({args.accuracy})'
    else:
        top1 = PAPER_TOP1_DISTILLED if args.accuracy == 'distilled' else PAPER_TOP1_PLAIN
        source = f'paper ({args.accuracy})'
    series, notes = [], []
    if args.benchmark:
        rows = load_benchmark_rows(args.benchmark)
        series, notes = benchmark_series(rows, top1, None if args.form == 'all' else args.form,
                                         args.backend, args.input)
    if args.paper_latency:
        series.append(paper_series(top1))
    if args.paper_baselines:
        series.extend(paper_baseline_series())
    for note in notes:
        print(f'note: {note}')
    print(f'top-1 from {source}')
    print(describe_series(series))
    path = plot_latency_accuracy(series, out, title=args.title, xscale=args.xscale)
    print(f'wrote {path}')
    return path


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == '__main__':
    sys.exit(run_cli(main))
