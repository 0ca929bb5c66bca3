"""Export a fused RepNeXt model to Core ML (.mlpackage) or ONNX.

Examples:
    # M4 backbone of a Mask R-CNN at 512x512 for the paper's iPhone latency protocol, with an
    # Xcode test package that measures it on a connected iPhone
    python tools/deploy/export.py configs/mmdet/mask_rcnn_repnext_m4_fpn_1x_coco.py \\
        --format coreml --backbone-only --shape 512 512 --ios-bench ios_bench_m4

    # classifier to ONNX (opset 17), checked with onnxruntime against torch
    python tools/deploy/export.py configs/mmpretrain/repnext_m1_8xb256_in1k.py m1.pth --format onnx

CHECKPOINT may be a training checkpoint (fused here), a checkpoint written by
tools/deploy/reparameterize.py, or omitted (random weights: fine for latency).
Core ML: the input is an image (0-255 pixels) with the config's mean/std built in; FP16 by
default. ONNX: the input is the normalized image tensor; mean/std are in the metadata.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from repnext_mm.cli import (ArgumentParser, add_cfg_options_argument,  # noqa: E402
                            add_unsafe_unpickle_argument, run_cli)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='classifier, detector or segmentor config')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='training or fused checkpoint (omit for random weights)')
    parser.add_argument('--format', required=True, choices=('coreml', 'onnx'))
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default 224 224 for classifiers, else 512 512)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='export only the backbone (all its stage outputs); required for '
                             'detectors')
    parser.add_argument('--out', help='output path (.mlpackage or .onnx; default derived from '
                                      'the config name)')
    parser.add_argument('--precision', choices=('fp16', 'fp32'), default='fp16',
                        help='Core ML compute precision (default %(default)s)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset, >= 17 (default 17)')
    parser.add_argument('--ios-bench', metavar='DIR',
                        help='Core ML only: also write a Swift package whose XCTest measures the '
                             "model's latency on an iPhone")
    parser.add_argument('--force', action='store_true', help='overwrite existing outputs')
    add_unsafe_unpickle_argument(parser)
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from repnext_mm.deploy.export import ExportSettings, run_export  # torch: not for --help

    run_export(ExportSettings(**vars(args)))


if __name__ == '__main__':
    sys.exit(run_cli(main))
