"""``--resume``: which checkpoint a resumed run starts from."""
from __future__ import annotations

import glob
import os.path as osp
import shlex
import sys
from typing import Any, Mapping

from mmengine.config import Config

from repnext_mm.apis.inputs import check_checkpoint_file

#: How the resume command starts (the README's commands run the tools from the repository root).
TRAIN_COMMAND = 'python tools/train.py'


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


def format_cfg_option(value: Any) -> str:
    """``value`` as ``--cfg-options`` writes it (what MMEngine's ``DictAction`` parses back)."""
    if isinstance(value, list):
        return '[' + ','.join(format_cfg_option(v) for v in value) + ']'
    if isinstance(value, tuple):
        return '(' + ','.join(format_cfg_option(v) for v in value) + (',)' if len(value) == 1
                                                                       else ')')
    return str(value)


def train_command(config: str, work_dir: str, resume: bool = True,
                  cfg_options: Mapping[str, Any] | None = None,
                  flags: tuple[str, ...] = ()) -> str:
    """The shell command that runs (``resume``: continues) this training in ``work_dir``.

    Args:
        config: The config file as the user gave it.
        work_dir: The run's work folder.
        resume: Add ``--resume`` (the newest complete checkpoint in ``work_dir``).
        cfg_options: The user's ``--cfg-options``, repeated so the run continues as it started.
        flags: Other options to repeat, e.g. ``('--amp',)``.
    """
    words = [TRAIN_COMMAND, shlex.quote(str(config)), '--work-dir', shlex.quote(str(work_dir))]
    if resume:
        words.append('--resume')
    words.extend(flags)
    if cfg_options:
        words.append('--cfg-options')
        words.extend(shlex.quote(f'{key}={format_cfg_option(value)}')
                     for key, value in cfg_options.items())
    return ' '.join(words)


def how_to_continue(config: str, work_dir: str, cfg_options: Mapping[str, Any] | None = None,
                    flags: tuple[str, ...] = ()) -> str:
    """Names the last checkpoint in ``work_dir`` and the command that resumes from it.

    Without a checkpoint yet, says so and gives the command that starts the run again.
    """
    checkpoint = latest_checkpoint(work_dir)
    if checkpoint is None:
        return ('no checkpoint was written yet; start again with: '
                + train_command(config, work_dir, False, cfg_options, flags))
    return (f'the last checkpoint is {checkpoint}; continue with: '
            + train_command(config, work_dir, True, cfg_options, flags))
