"""``--resume``: which checkpoint a resumed run starts from."""
from __future__ import annotations

import glob
import os.path as osp
import sys

from mmengine.config import Config

from repnext_mm.apis.inputs import check_checkpoint_file

def latest_checkpoint(work_dir: str) -> str | None:
    """The checkpoint to auto-resume from: ``last_checkpoint``'s target, else the newest ``.pth``.

    MMEngine trusts the ``last_checkpoint`` file alone; if it is missing, empty or names a
    deleted file, the newest complete checkpoint in ``work_dir`` is used instead (checkpoints
    written through :mod:`repnext_mm.engine` are complete whenever they exist).
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as file:
            target = file.read().strip()
        if target and osp.isfile(target):
            return target
    candidates = [path for path in glob.glob(osp.join(work_dir, '*.pth'))
                  if not osp.basename(path).startswith('.')]
    return max(candidates, key=osp.getmtime) if candidates else None


def set_resume(cfg: Config, resume: str | None) -> None:
    """``--resume`` (auto: newest checkpoint in the work dir) or ``--resume CHECKPOINT``."""
    if resume is None:
        return
    cfg.resume = True
    if resume == 'auto':
        cfg.load_from = latest_checkpoint(cfg.work_dir)
        if cfg.load_from is None:
            print(f'--resume: no checkpoint in {cfg.work_dir} yet; training starts from scratch',
                  file=sys.stderr)
    else:
        check_checkpoint_file(resume, '--resume checkpoint')
        cfg.load_from = resume
