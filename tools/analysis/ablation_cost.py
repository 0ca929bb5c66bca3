#!/usr/bin/env python
"""Cost of every row of the paper's Table 5 (the ablation) on this CPU, as a Markdown table.

Per row (RepNeXt-M1 designs and the two RepViT-M0.9 rows, each built from its config in
configs/mmpretrain/ablation/): classifier parameters in the
training and the fused form, fused GMACs at 224x224, fused latency at 224x224 / batch 1 and one
backbone training step (srp_forward='merged'), each beside its ratio to the 'no_srp' baseline,
next to the paper's parameters, iPhone 12 latency and top-1. All rows are timed interleaved in
one run (repnext_mm/benchmark/ablation.py says how).

Examples:
    # every row, one thread (the table in docs/ablation.md)
    python tools/analysis/ablation_cost.py --runs 10 --threads 1

    # two rows against the baseline, quickly
    python tools/analysis/ablation_cost.py --rows repnext medium_strips --runs 3
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from repnext_mm.benchmark.ablation import BASELINE, ROWS
from repnext_mm.benchmark.training import TRAIN_BATCH
from repnext_mm.cli import ArgumentParser, run_cli


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog='\n\n'.join(__doc__.split('\n\n')[2:]))
    parser.add_argument('--rows', nargs='+', choices=ROWS, metavar='ROW',
                        help=f'Table 5 rows: RepNeXt design presets and RepViT rows (default: '
                             f'all; the {BASELINE} baseline is always measured): '
                             f'{", ".join(ROWS)}')
    parser.add_argument('--runs', type=int, default=20, help='timed rounds (default 20)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed rounds (default 3)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    parser.add_argument('--batch-size', type=int, default=TRAIN_BATCH,
                        help=f'images per training step (default {TRAIN_BATCH}, 224x224)')
    parser.add_argument('--no-progress', dest='progress', action='store_false',
                        help='no progress display')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from repnext_mm.benchmark.ablation import measure_ablation, report

    args = parse_args(argv)
    costs = measure_ablation(args.rows, runs=args.runs, warmup=args.warmup, threads=args.threads,
                             batch_size=args.batch_size, progress=args.progress)
    print(report(costs, args.threads, args.batch_size))
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
