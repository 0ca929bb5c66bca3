#!/usr/bin/env python
"""Evaluate a checkpoint with an mmdet, mmseg or mmpretrain config (its ``default_scope`` decides).

Usage::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--show-dir DIR]
                         [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

Metrics are logged, written to ``<work_dir>/<timestamp>/<timestamp>.json`` and printed as a
last ``test metrics: {...}`` line. Multi-process: ``tools/dist_test.sh CONFIG CHECKPOINT NPROC``.
The shared logic lives in ``repnext_mm/tools_utils.py``.
"""
import os.path as osp
import sys

# Run from a checkout without installing: the repository root holds the repnext_mm package.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from repnext_mm.tools_utils import run_cli, test  # noqa: E402

if __name__ == '__main__':
    sys.exit(run_cli(test))
