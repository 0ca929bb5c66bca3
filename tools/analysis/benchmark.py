"""Latency / throughput of fused vs unfused RepNeXt models, with params and GMACs.

Examples:
    # docs/benchmark_cpu.md: M0-M5 backbones at 512x512, batch 1, torch and onnxruntime on this CPU
    python tools/analysis/benchmark.py --arch m0 m1 m2 m3 m4 m5 --shape 512 512 \\
        --backend torch onnxruntime --out benchmark_cpu.json

    # the CPU runtimes on one ONNX file (OpenVINO pinned to fp32), at 1 and at 2 threads
    python tools/analysis/benchmark.py --arch m1 m4 --shape 512 512 \\
        --backend torch onnxruntime openvino --threads 1 2 --no-unfused

    # a trained segmentor's backbone
    python tools/analysis/benchmark.py configs/mmseg/fpn_repnext_m4_8xb4-40k_ade20k-512x512.py \\
        iter_40000.pth --shape 512 512 --backbone-only --backend torch

    # the paper's GPU throughput protocol (fused fp32, 224x224, largest power-of-two batch)
    python tools/analysis/benchmark.py configs/mmpretrain/repnext_m1_8xb256_in1k.py --backend cuda

    # whole detector images/s over the config's test set (like mmdet's benchmark tool)
    python tools/analysis/benchmark.py configs/mmdet/mask_rcnn_repnext_m4_fpn_1x_coco.py ckpt.pth \\
        --dataset --max-iter 200

Timing: WARMUP untimed rounds, then RUNS timed rounds; the median and the inter-quartile range
(IQR) are reported. On the CPU every backend and form runs once per round, beside a 2048x2048
fp32 matmul at the same thread count: ``x_floor`` is a row's time over the compute floor
``2 x MACs(fused) / (matmul FLOP/s)``, the median of the per-round ratios. The ONNX Runtime and
OpenVINO rows run the same exported file, after their outputs were checked against eager torch
(1e-4 relative). "unfused" is the same weights in the training structure (every SRP branch and
BatchNorm separate).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from repnext_mm.cli import (ArgumentParser, add_cfg_options_argument,
                            add_unsafe_unpickle_argument, run_cli)
from repnext_mm.models.backbones.repnext import RepNeXt

ARCHS = tuple(RepNeXt.arch_settings)
BACKENDS = ('torch', 'onnxruntime', 'openvino', 'cuda')  # repnext_mm.benchmark.suite.BACKENDS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='classifier, detector or segmentor config')
    parser.add_argument('checkpoint', nargs='?', help='training or fused checkpoint (omit for '
                                                      'random weights)')
    parser.add_argument('--arch', nargs='+', choices=ARCHS,
                        help='bare RepNeXt backbones (random weights) instead of a config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: 224 224 for classifiers and --backend cuda, '
                             'else 512 512)')
    parser.add_argument('--backend', nargs='+', choices=BACKENDS, default=['torch'],
                        help='one or more backends (default torch); onnxruntime and openvino '
                             'run one ONNX export of the model')
    parser.add_argument('--backbone-only', action='store_true',
                        help='time only the backbone of the config\'s model')
    parser.add_argument('--batch-size', type=int, default=1, help='CPU batch size (default 1)')
    parser.add_argument('--warmup', type=int, default=10, help='untimed runs (default 10)')
    parser.add_argument('--runs', type=int, default=50, help='timed runs (default 50)')
    parser.add_argument('--threads', type=int, nargs='+',
                        help='intra-op threads of every CPU backend and of the floor\'s matmul; '
                             'several values (e.g. 1 2) measure once per count (default: '
                             'torch.get_num_threads())')
    parser.add_argument('--max-batch', type=int, default=4096,
                        help='cuda: largest batch tried before halving on OOM (default 4096)')
    parser.add_argument('--no-unfused', dest='include_unfused', action='store_false',
                        help='time only the fused model')
    parser.add_argument('--dataset', action='store_true',
                        help="whole-model images/s over the config's test dataloader")
    parser.add_argument('--max-iter', type=int, default=200,
                        help='--dataset: images to run, including warm-up (default 200)')
    parser.add_argument('--out', help='write the rows to a .csv or .json file')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    parser.add_argument('--no-progress', dest='progress', action='store_false',
                        help='no progress display')
    add_unsafe_unpickle_argument(parser)
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from repnext_mm.benchmark.latency import LatencySettings, run_latency

    run_latency(LatencySettings(**vars(parse_args(argv))))
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
