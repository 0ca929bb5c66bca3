#!/usr/bin/env python
"""Evaluate a checkpoint with an mmdet, mmseg or mmpretrain config (its ``default_scope`` decides).

Usage::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--show-dir DIR]
                         [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

Metrics are logged, written to ``<work_dir>/<timestamp>/<timestamp>.json`` and printed as a
last ``test metrics: {...}`` line. The checkpoint must fit the model completely; a fused one
(``tools/deploy/reparameterize.py``) builds the fused model by itself. Multi-process:
``tools/dist_test.sh CONFIG CHECKPOINT NPROC``. The work is done by
:func:`repnext_mm.engine.run.test`.
"""
from __future__ import annotations

import sys
from typing import Sequence

from repnext_mm.cli import ArgumentParser, add_run_arguments, parse_run_args, run_cli


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog='tools/test.py',
        description='Evaluate a checkpoint on the test split of an mmdet, mmseg or mmpretrain '
                    'config (the config\'s default_scope selects the library).')
    parser.add_argument('config', help='config file the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint file (e.g. work_dirs/<name>/epoch_12.pth)')
    parser.add_argument('--out', help='also dump the predictions: a .pkl file for mmdet and '
                        'mmpretrain, a folder of label PNGs for mmseg')
    parser.add_argument('--show-dir', help='save images with predictions drawn into this folder '
                        '(relative paths land under <work_dir>/<timestamp>/)')
    add_run_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    from repnext_mm.engine.run import test

    return test(**parse_run_args(build_parser(), argv))


if __name__ == '__main__':
    sys.exit(run_cli(main))
