#!/usr/bin/env python
"""Speed and memory of RepNeXt's training and fused forms, measured side by side.

Sections (each prints a table; ``--json`` also writes every raw sample):

(a) ``train``: one backbone training step (forward + backward of the mean of every stage
    output, batch 16, 224x224, train-mode BN) in the fast training form
    (``srp_forward='merged'``: one depthwise conv per SRP branch set, its kernel rebuilt from the
    branch weights on every step) vs the literal multi-branch form (``'branches'``), in NCHW and
    channels_last memory format; time and peak-memory ratios. A third form, "SRP-free bound",
    replaces every SRP conv by a strided copy: no implementation of the SRP convolutions can beat
    it, so it bounds the attainable ratios.
(b) ``fused``: backbone forward at 512x512, batch 1: our full fusion (every branch merged,
    every BN folded) on several runtimes (eager, TorchScript, ONNX Runtime and OpenVINO on the
    same ONNX file, optionally torch.compile) vs the authors' partial fusion (branches merged,
    the BN after every chunk / copy conv left standalone: built here from our modules) vs the
    unfused training form; and vs the compute floor ``2 x MACs / (GEMM FLOP/s)``, the GEMM rate
    measured by a 2048x2048 fp32 ``torch.matmul`` timed in the same rounds and at the same thread
    count as the variants ("x floor" is the median of the per-round ratios).
(c) ``gpu`` (``--device cuda``): throughput at 224x224 with the paper's protocol (fused fp32,
    the largest power-of-two batch that fits, halving on out-of-memory).
(d) ``with_cp`` (only when asked for): the training step of (a), merged form, with and without
    activation checkpointing (``RepNeXt(with_cp=True)``) at batch 2 x 800x1333 (detection) and
    batch 16 x 224x224; peak-memory and step-time ratios.

Timing protocol: all variants of a table are run in round-robin (variant 1, 2, ..., then the
reverse order, ...) after untimed warm-up rounds, so slow drifts in machine load hit every variant
alike; each row reports the median, and each ratio is the median of the per-round ratios (paired
samples). The measurements live in ``repnext_mm.benchmark`` (``speed``, ``training``, ``fused``).

Usage::

    python tools/analysis/speed.py [--archs m1 m4] [--repeats N] [--train-repeats N]
        [--device cpu|cuda] [--threads auto|N] [--sections train fused gpu with_cp]
        [--train-layouts nchw channels_last] [--compile] [--max-batch N] [--json OUT]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from repnext_mm.cli import ArgumentParser, run_cli

ARCHS = ('m0', 'm1', 'm2', 'm3', 'm4', 'm5')
LAYOUTS = ('nchw', 'channels_last')


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--archs', nargs='+', default=['m1', 'm4'], choices=ARCHS)
    parser.add_argument('--repeats', type=int, default=7,
                        help='timed rounds of the fused-forward tables (default 7)')
    parser.add_argument('--train-repeats', type=int, default=3,
                        help='timed rounds of the training-step tables (default 3; a step takes '
                             'seconds)')
    parser.add_argument('--train-layouts', nargs='+', choices=LAYOUTS, default=list(LAYOUTS),
                        help='memory formats of (a) (default: both)')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--threads', default='auto',
                        help="torch / ONNX Runtime / OpenVINO intra-op threads (the GEMM of the "
                             "floor too), or 'auto' (default): the cores left idle by other "
                             'work, at least 1')
    parser.add_argument('--sections', nargs='+', choices=('train', 'fused', 'gpu', 'with_cp'),
                        help='default: train and fused; with --device cuda also gpu')
    parser.add_argument('--compile', dest='use_compile', action='store_true',
                        help='add a torch.compile row to (b) (minutes of compilation per arch)')
    parser.add_argument('--max-batch', type=int, default=65536,
                        help='(c) first batch size tried, halved until one fits (default 65536)')
    parser.add_argument('--json', dest='json_path', type=Path,
                        help='write all samples and summaries here')
    parser.add_argument('--no-progress', dest='progress', action='store_false',
                        help='no progress display')
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.train_repeats < 1:
        parser.error('--repeats and --train-repeats must be >= 1')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from repnext_mm.benchmark.speed import SpeedSettings, run_speed

    shown_argv = sys.argv if argv is None else [__file__, *argv]
    command = ' '.join([Path(sys.executable).name, *map(str, shown_argv)])
    run_speed(SpeedSettings(**vars(parse_args(argv))), command)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
