#!/usr/bin/env python
"""Train a model from an mmdet, mmseg or mmpretrain config (its ``default_scope`` decides).

Usage::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
                          [--auto-scale-lr] [--cfg-options KEY=VALUE ...]
                          [--launcher {none,pytorch,slurm,mpi}]

Multi-process: ``tools/dist_train.sh CONFIG NPROC [args]`` (works without CUDA, with gloo).
The work is done by :func:`repnext_mm.engine.run.train`.
"""
from __future__ import annotations

import sys
from typing import Sequence

from repnext_mm.cli import ArgumentParser, add_run_arguments, parse_run_args, run_cli


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog='tools/train.py',
        description='Train a model from an mmdet, mmseg or mmpretrain config (the config\'s '
                    'default_scope selects the library).')
    parser.add_argument('config', help='config file, e.g. configs/mmdet/mask_rcnn_repnext_m4.py')
    parser.add_argument(
        '--resume', nargs='?', const='auto', metavar='CHECKPOINT',
        help='resume training (weights, optimizer, schedulers, random generators): from '
             'CHECKPOINT, or without it from the newest complete checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper; needs CUDA)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch size / auto_scale_lr.base_batch_size)')
    add_run_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    from repnext_mm.engine.run import train

    train(**parse_run_args(build_parser(), argv))


if __name__ == '__main__':
    sys.exit(run_cli(main))
