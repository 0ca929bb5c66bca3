#!/usr/bin/env python
"""Train a model from an mmdet, mmseg or mmpretrain config (its ``default_scope`` decides).

Usage::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
                          [--auto-scale-lr] [--cfg-options KEY=VALUE ...]
                          [--launcher {none,pytorch,slurm,mpi}]

Multi-process: ``tools/dist_train.sh CONFIG NPROC [args]`` (works without CUDA, with gloo).
The shared logic lives in ``repnext_mm/tools_utils.py``.
"""
import os.path as osp
import sys

# Run from a checkout without installing: the repository root holds the repnext_mm package.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from repnext_mm.tools_utils import run_cli, train  # noqa: E402

if __name__ == '__main__':
    sys.exit(run_cli(train))
