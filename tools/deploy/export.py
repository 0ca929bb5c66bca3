"""Export a fused RepNeXt model to Core ML (.mlpackage) or ONNX.

Examples:
    # M4 backbone of a Mask R-CNN at 512x512 for the paper's iPhone latency protocol, with an
    # Xcode test package that measures it on a connected iPhone
    python tools/deploy/export.py configs/mmdet/mask_rcnn_repnext_m4_fpn_1x_coco.py \\
        --format coreml --backbone-only --shape 512 512 --ios-bench ios_bench_m4

    # classifier to ONNX (opset 17), checked with onnxruntime against torch
    python tools/deploy/export.py configs/mmpretrain/repnext_m1_8xb256_in1k.py m1.pth --format onnx

    # int8 ONNX (QDQ), calibrated on 32 images of a folder read through the config's test
    # pipeline (default folder: the config's test dataloader's)
    python tools/deploy/export.py configs/mmpretrain/repnext_m0_shapes.py m0.pth --format onnx \
        --shape 64 64 --int8 --calib-dir data/shapes/imagenet/train --calib-images 32

    # Core ML with int8 weights (palettize4/6/8: k-means lookup tables)
    python tools/deploy/export.py configs/mmpretrain/repnext_m1_8xb256_in1k.py m1.pth \
        --format coreml --coreml-compress int8

CHECKPOINT may be a training checkpoint (fused here), a checkpoint written by
tools/deploy/reparameterize.py, or omitted (random weights: fine for latency).
Core ML: the input is an image (0-255 pixels) with the config's mean/std built in; FP16 by
default. ONNX: the input is the normalized image tensor; mean/std are in the metadata.
See docs/quantization.md for the int8 and weight-compression measurements.
"""
from __future__ import annotations

import argparse
import sys

from repnext_mm.cli import (ArgumentParser, add_cfg_options_argument,
                            add_model_arguments, add_unsafe_unpickle_argument, run_cli)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
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
    parser.add_argument('--seg-argmax', action='store_true',
                        help='segmentors: also output the argmax class map seg_map [1, H, W] '
                             'beside seg_logits')
    int8 = parser.add_argument_group('int8 ONNX (post-training static quantization)')
    int8.add_argument('--int8', action='store_true',
                      help='quantize the fused ONNX graph to int8 (QDQ, per-channel weights) with '
                           'onnxruntime, calibrated on images read through the config\'s test '
                           'pipeline')
    int8.add_argument('--calib-dir', metavar='DIR',
                      help="calibration images (searched recursively; default: the config's "
                           'test dataloader folder)')
    int8.add_argument('--calib-images', type=int, metavar='N',
                      help='calibration images used, evenly spaced over the folder (default 32)')
    int8.add_argument('--calib-method', choices=('minmax', 'percentile'),
                      help='activation range calibration (default minmax)')
    int8.add_argument('--int8-backend', choices=('onnxruntime', 'openvino'),
                      help='onnxruntime (default): a QDQ .onnx that ONNX Runtime and OpenVINO run; '
                           "openvino: OpenVINO's own quantizer (NNCF), an IR .xml + .bin for "
                           'OpenVINO only (docs/quantization.md)')
    parser.add_argument('--coreml-compress', default='none',
                        choices=('none', 'int8', 'palettize8', 'palettize6', 'palettize4'),
                        help='Core ML weight compression with coremltools.optimize.coreml: int8 '
                             'linear (per channel) or k-means palettization to 2^N values '
                             '(default %(default)s)')
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
