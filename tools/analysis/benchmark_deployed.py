#!/usr/bin/env python
"""Whole-model latency of one image on every deployment path, interleaved in one run.

Times mmdet / mmseg / mmpretrain inference (``model.test_step``) of the unfused and the fused
model in PyTorch and of the exported file in fp32 and int8 on ONNX Runtime and OpenVINO (int8 on
OpenVINO: the QDQ file and NNCF's IR), all over the same timed region: from the test pipeline's
resized uint8 image through normalization and padding, the model, to the results in the original
image's frame (boxes rescaled, masks pasted; a segmentor's label map at the original size). The
logic is repnext_mm/benchmark/whole_model.py; figures: docs/whole_model_deployment.md.

Examples:
    # the M4 detector at 512x512, random weights, one thread and both cores
    python tools/analysis/benchmark_deployed.py configs/mmdet/mask_rcnn_repnext_m4_fpn_1x_coco.py \\
        --shape 512 512 --threads 1 2 --runs 10

    # the shapes segmentor, trained, two paths only
    python tools/analysis/benchmark_deployed.py configs/mmseg/fpn_repnext_m0_shapes.py \\
        work_dirs/shapes_seg/iter_150.pth --shape 128 128 --paths "torch fused" "openvino int8 NNCF"
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from repnext_mm.cli import (ArgumentParser, add_cfg_options_argument, add_model_arguments,
                            run_cli)

PATHS = ('torch unfused', 'torch fused', 'onnxruntime fp32', 'onnxruntime int8', 'openvino fp32',
         'openvino int8 QDQ', 'openvino int8 NNCF')  # repnext_mm.benchmark.whole_model


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=(512, 512),
                        help='image size, the test Resize scale and the export size '
                             '(default 512 512)')
    parser.add_argument('--threads', type=int, nargs='+', default=[1],
                        help='thread counts, each a full interleaved measurement (default 1)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed rounds (default 3)')
    parser.add_argument('--runs', type=int, default=10, help='timed rounds (default 10)')
    parser.add_argument('--calib-images', type=int, default=8,
                        help='int8 calibration images (generated, default 8)')
    parser.add_argument('--paths', nargs='+', choices=PATHS,
                        help='only these paths (torch fused, the reference, always runs)')
    parser.add_argument('--work-dir', help='keep the exported files here')
    parser.add_argument('--no-progress', dest='progress', action='store_false')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from repnext_mm.benchmark.whole_model import WholeModelSettings, run_whole_model

    args = vars(parse_args(argv))
    args['shape'] = tuple(args['shape'])
    run_whole_model(WholeModelSettings(**args))
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
