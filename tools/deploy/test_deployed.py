#!/usr/bin/env python
"""Evaluate an exported model file on the test split of its config, as tools/test.py does.

Usage::

    python tools/deploy/test_deployed.py CONFIG MODEL.onnx [--backend onnxruntime|openvino]
                                         [--threads N] [--work-dir DIR]
                                         [--cfg-options KEY=VALUE ...]

The config's own test dataloader, test loop and metric (CocoMetric, IoUMetric, Accuracy) run
with the file in the place of the PyTorch model, on the CPU: ONNX Runtime's session or
OpenVINO's CPU plugin (fp32, reading the same .onnx file; int8 QDQ files too). The printed
table is the one tools/test.py prints, and a last ``test metrics: {...}`` line. A file that does
not fit the config (task, classes, normalization, an input size the test images do not fit) is
one error line. Export the file with tools/deploy/export.py CONFIG CHECKPOINT --format onnx;
see docs/whole_model_deployment.md. The work is done by
:func:`repnext_mm.deploy.evaluate.evaluate_deployed`.
"""
from __future__ import annotations

import sys
from typing import Sequence

from repnext_mm.cli import ArgumentParser, add_cfg_options_argument, run_cli


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog='tools/deploy/test_deployed.py',
        description='Evaluate an exported .onnx file on the test split of its config with the '
                    "config's own metric (the same table as tools/test.py).")
    parser.add_argument('config', help='the config the file was exported from')
    parser.add_argument('model_file', metavar='MODEL', help='the .onnx file written by '
                        'tools/deploy/export.py --format onnx')
    parser.add_argument('--backend', default='onnxruntime',
                        help='CPU runtime that runs the file: onnxruntime or openvino (default '
                             '%(default)s)')
    parser.add_argument('--threads', type=int, metavar='N',
                        help="the runtime's intra-op threads (default: one per core)")
    parser.add_argument('--work-dir', help='folder for logs and metrics (default: the '
                        "config's work_dir, else ./work_dirs/<config name>)")
    add_cfg_options_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from repnext_mm.deploy.evaluate import evaluate_deployed  # torch: not for --help

    return evaluate_deployed(**vars(args))


if __name__ == '__main__':
    sys.exit(run_cli(main))
