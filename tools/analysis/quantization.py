#!/usr/bin/env python
"""fp32 vs int8 (post-training static quantization) of a fused model, measured in one run.

Exports the fused model to ONNX, quantizes it as `tools/deploy/export.py --int8` does
(calibrated on --calib-dir, default the config's train images), runs both graphs on ONNX Runtime
and OpenVINO at one thread, and reports the int8/fp32 latency ratio (interleaved rounds), top-1
of both and their agreement (classifiers; labels from class folders) and the cosine similarity
of every output (e.g. each backbone stage) on held-out images (--eval-dir, default the config's
test images). The logic is repnext_mm/benchmark/quantization.py; figures: docs/quantization.md.

Examples:
    # trained shapes classifier, evaluated on 1000 held-out images
    python tools/data/make_shapes.py --root /tmp/shapes_big --num-val 1000
    python tools/analysis/quantization.py configs/mmpretrain/repnext_m0_shapes.py m0.pth \\
        --shape 64 64 --eval-dir /tmp/shapes_big/imagenet/val --eval-images 1000

    # M4 backbone (random weights) at 512x512 on the shapes ADE images
    python tools/analysis/quantization.py configs/mmseg/fpn_repnext_m4_8xb4-40k_ade20k-512x512.py \\
        --backbone-only --calib-dir data/shapes/ade/images/training \\
        --eval-dir data/shapes/ade/images/validation --eval-images 50
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from repnext_mm.cli import (ArgumentParser, add_cfg_options_argument,
                            add_model_arguments, add_unsafe_unpickle_argument, run_cli)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument('--backbone-only', action='store_true',
                        help='measure the backbone (every stage output)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default 224 224 for classifiers, else 512 512)')
    parser.add_argument('--calib-dir', metavar='DIR',
                        help="calibration images (default: the config's train folder)")
    parser.add_argument('--calib-images', type=int, default=32, metavar='N',
                        help='calibration images, evenly spaced (default %(default)s)')
    parser.add_argument('--calib-method', choices=('minmax', 'percentile'),
                        default='minmax', help='default %(default)s')
    parser.add_argument('--eval-dir', metavar='DIR',
                        help="held-out images (default: the config's test folder); classifier "
                             'labels come from their class folders')
    parser.add_argument('--eval-images', type=int, default=200, metavar='N',
                        help='evaluation images, evenly spaced (default %(default)s)')
    parser.add_argument('--runtimes', nargs='+',
                        choices=('onnxruntime', 'openvino', 'openvino-nncf'),
                        default=['onnxruntime', 'openvino'],
                        help="openvino-nncf: OpenVINO fp32 vs NNCF's int8 IR (--int8-backend "
                             'openvino) instead of the QDQ file (default onnxruntime openvino)')
    parser.add_argument('--threads', type=int, default=1, help='default %(default)s')
    parser.add_argument('--warmup', type=int, default=10, help='untimed rounds (default 10)')
    parser.add_argument('--runs', type=int, default=50, help='timed rounds (default 50)')
    parser.add_argument('--work-dir', help='keep fp32.onnx and int8.onnx here')
    parser.add_argument('--json', dest='json_path', metavar='OUT', help='also write the report')
    add_unsafe_unpickle_argument(parser)
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(parse_args(argv))
    json_path = args.pop('json_path')
    from repnext_mm.benchmark.quantization import (QuantizationSettings, format_report,
                                                   report_as_dict, run_quantization_report)
    from repnext_mm.utils.fileio import atomic_write_json, check_output_path

    if json_path:  # before the work: a directory here would only fail at the end
        check_output_path(json_path, force=True)
    report = run_quantization_report(QuantizationSettings(**args))
    print('\n'.join(format_report(report)))
    if json_path:
        atomic_write_json(report_as_dict(report), json_path)
        print(f'wrote {json_path}')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
