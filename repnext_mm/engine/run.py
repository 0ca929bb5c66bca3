"""Training and testing from a config: what ``tools/train.py`` and ``tools/test.py`` call.

MMEngine's ``Runner`` does the work; before it starts, every input is checked (config, data,
pretrained and checkpoint files, ``--out``; :mod:`repnext_mm.apis`), and the runner loads
checkpoints strictly (:mod:`.runner`), so a metric printed here comes from a completely loaded
model.

The outputs are checked before the work too (the work folder, ``--out``, ``--show-dir``), and
nothing is written into the work folder before the inputs passed: a refused run leaves an
earlier run's files as they were. A training run holds its work folder's lock
(:mod:`.work_dir_lock`); Ctrl-C, a sample that turns unreadable and a disk that fills up each
end it with one line that names the last checkpoint or the path.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from typing import Any, Iterator

from mmengine.config import Config

from repnext_mm.apis.build_errors import config_errors
from repnext_mm.apis.checkpoint import fused_checkpoint_options, read_checkpoint
from repnext_mm.apis.config import load_config, lookup_key, set_work_dir
from repnext_mm.apis.inputs import check_checkpoint_file, check_data, check_pretrained_files
from repnext_mm.datasets.guard import UnreadableSampleError, guard_dataloaders
from repnext_mm.utils.errors import (ENVIRONMENT_ERRNO_FIXES, InputError, OutputWriteError,
                                     describe_os_error)
from repnext_mm.utils.fileio import check_output_dir
from .interrupt import TrainingInterrupted, second_interrupt_exits
from .launcher import setup_launcher
from .preflight import preflight_test, preflight_train
from .resume import how_to_continue, set_resume
from .runner import (allowed_mismatch_of, build_runner, discard_run_folder_on_input_error,
                     prechecked_checkpoints, use_atomic_checkpoints)
from .tasks import TASK_ADAPTERS, StagedFolder, enable_amp, enable_auto_scale_lr
from .work_dir_lock import work_dir_lock

#: ``OSError``s that can only be a write's: a permission error may be a data file's, read.
#: (An :class:`~repnext_mm.utils.errors.OutputWriteError`, raised by the atomic writes, is a
#: write's whatever its errno.)
WRITE_ERRNOS = frozenset(ENVIRONMENT_ERRNO_FIXES) - {errno.EACCES, errno.EPERM}
#: Where each launcher says which process this is (the lock is rank 0's).
RANK_VARIABLES = dict(pytorch='RANK', slurm='SLURM_PROCID', mpi='OMPI_COMM_WORLD_RANK')


def is_rank_zero(launcher: str) -> bool:
    """Whether this process is the job's first (or only) one, before MMEngine knows it."""
    variable = RANK_VARIABLES.get(launcher)
    return variable is None or os.environ.get(variable, '0') == '0'


@contextlib.contextmanager
def write_errors(option: str, staged: StagedFolder | None = None) -> Iterator[None]:
    """A write that fails for want of space or a writable disk is one line naming the path.

    Checkpoints and ``--out`` are written atomically (the previous file stays whole, no
    temporary is left); this catches the writes of MMEngine and the libraries themselves.

    Args:
        option: The option that chooses where the run writes, named in the fix of a full disk.
        staged: A folder output being staged: a path in it is named by its final place.
    """
    try:
        yield
    except OSError as error:
        if not (isinstance(error, OutputWriteError) or error.errno in WRITE_ERRNOS):
            raise
        path = str(error.filename or 'an output file')
        if staged is not None and path.startswith(str(staged.staging)):
            path = str(staged.final) + path[len(str(staged.staging)):]
        fix = (f'free space or choose another {option}'
               if error.errno in (errno.ENOSPC, errno.EDQUOT) else None)
        # Never None: both kinds of error above have an errno of ENVIRONMENT_ERRNO_FIXES.
        raise InputError(f'cannot write {describe_os_error(path, error, fix)}') from None


def apply_fused_checkpoint_options(cfg: Config, checkpoint_path: str) -> None:
    """Builds the fused structure for a checkpoint written by the reparameterize tool.

    Its ``meta`` records the ``--cfg-options`` that build the fused model; they are applied
    (and said) unless the config already sets them. Only the meta is needed here: the tensors are
    mapped, not read (the runner reads them when it loads the model).
    """
    options = fused_checkpoint_options(read_checkpoint(checkpoint_path, mmap=True))
    if not options:
        return
    missing = {k: v for k, v in options.items() if lookup_key(cfg, k.split('.')) != v}
    if missing:
        cfg.merge_from_dict(missing)
        print(f'{checkpoint_path} is a fused checkpoint: building the fused model with '
              + ' '.join(f'{k}={v}' for k, v in missing.items()), file=sys.stderr)


def train(config: str, work_dir: str | None = None, resume: str | None = None,
          amp: bool = False, auto_scale_lr: bool = False,
          cfg_options: dict[str, Any] | None = None, launcher: str = 'none') -> None:
    """Trains the model of ``config`` (``tools/train.py``).

    Args:
        config: Config file path.
        work_dir: Output folder (default: the config's ``work_dir``, else
            ``./work_dirs/<config name>``).
        resume: ``'auto'`` (the newest checkpoint in the work dir) or a checkpoint path.
        amp: Automatic mixed precision (CUDA only).
        auto_scale_lr: Scale the lr by the total batch size (``auto_scale_lr`` in the config).
        cfg_options: Config overrides, as ``--cfg-options``.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.

    Raises:
        InputError: A bad config, option, data path, checkpoint or work folder, a work folder
            another run holds, a sample that became unreadable, a full disk;
            :class:`~.interrupt.TrainingInterrupted` (exit status 130) on Ctrl-C.
    """
    cfg = load_config(config, cfg_options)
    set_work_dir(cfg, config, work_dir)
    check_output_dir(cfg.work_dir, '--work-dir')
    flags = tuple(flag for flag, on in (('--amp', amp), ('--auto-scale-lr', auto_scale_lr)) if on)
    try:
        with second_interrupt_exits():
            _train(cfg, resume, amp, auto_scale_lr, launcher)
    except KeyboardInterrupt:
        raise TrainingInterrupted('training interrupted (Ctrl-C); '
                                  + how_to_continue(config, cfg.work_dir, cfg_options, flags)) \
            from None
    except UnreadableSampleError as error:
        raise InputError(f'{_unreadable_sample(error)}; the run stopped: fix or remove the file, '
                         'then ' + how_to_continue(config, cfg.work_dir, cfg_options, flags)) \
            from None


def _train(cfg: Config, resume: str | None, amp: bool, auto_scale_lr: bool,
           launcher: str) -> None:
    """:func:`train` after the config is loaded: the checks, then the run."""
    TASK_ADAPTERS[cfg.default_scope].dataloader_defaults(cfg)
    if amp:
        enable_amp(cfg)
    if auto_scale_lr:
        enable_auto_scale_lr(cfg)
    set_resume(cfg, resume)
    check_data(cfg, ['train', 'val'] if cfg.get('val_cfg') else ['train'])
    # MMEngine runs init_weights (the pretrained load) before it resumes, so even a resumed run
    # reads the pretrained file.
    check_pretrained_files(cfg)
    if cfg.get('load_from'):
        check_checkpoint_file(cfg.load_from, 'load_from checkpoint')
    allowed = allowed_mismatch_of(cfg)
    use_atomic_checkpoints(cfg)
    guard_dataloaders(cfg)
    setup_launcher(cfg, launcher)
    with prechecked_checkpoints():
        # The model, loops, optimizer and checkpoint, before the runner logs or makes a folder.
        preflight_train(cfg, allowed)
        # The lock before anything is written into the work folder; released (its file
        # removed) before the discard looks at what this run left.
        lock = work_dir_lock(cfg.work_dir) if is_rank_zero(launcher) else contextlib.nullcontext()
        with discard_run_folder_on_input_error(cfg.work_dir), lock, \
                write_errors('--work-dir'), config_errors(cfg):
            build_runner(cfg).train()


def _unreadable_sample(error: UnreadableSampleError) -> str:
    """The guard's one line: the sample's index, its file, the original error and the skip switch."""
    return str(error).rstrip('. ')


def test(config: str, checkpoint: str, work_dir: str | None = None, out: str | None = None,
         show_dir: str | None = None, cfg_options: dict[str, Any] | None = None,
         launcher: str = 'none') -> dict:
    """Evaluates ``checkpoint`` on the test split of ``config`` (``tools/test.py``).

    Args:
        config: Config file path.
        checkpoint: Checkpoint file; a fused one (reparameterize tool) builds the fused model.
        work_dir: Output folder for logs and metrics.
        out: Dump predictions: a ``.pkl`` file (mmdet, mmpretrain) or a folder (mmseg).
        show_dir: Save images with predictions drawn into this folder.
        cfg_options: Config overrides, as ``--cfg-options``.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.

    Returns:
        The metrics (also printed as a last ``test metrics: {...}`` line by rank 0).

    Raises:
        InputError: A bad config, option, data path, ``out`` or checkpoint (including one that
            does not fit the model).
    """
    cfg = load_config(config, cfg_options)
    set_work_dir(cfg, config, work_dir)
    adapter = TASK_ADAPTERS[cfg.default_scope]
    adapter.dataloader_defaults(cfg)
    check_output_dir(cfg.work_dir, '--work-dir')
    check_checkpoint_file(checkpoint, 'checkpoint')
    if out:
        adapter.check_out(out)
    if show_dir:
        adapter.check_show_dir(show_dir)
    apply_fused_checkpoint_options(cfg, checkpoint)
    cfg.load_from = checkpoint
    cfg.resume = False
    check_data(cfg, ['test'])
    guard_dataloaders(cfg)
    if show_dir:
        adapter.show_dir(cfg, show_dir)
    setup_launcher(cfg, launcher)
    with prechecked_checkpoints():
        # The model and the checkpoint, before the runner logs or makes a folder.
        preflight_test(cfg)
        return _test(cfg, adapter, out)


def _test(cfg: Config, adapter: Any, out: str | None) -> dict:
    """:func:`test` after the checks: the run, its outputs and the printed metrics."""
    staged = adapter.out_to_config(cfg, out) if out and adapter.out_to_config else None
    try:
        with discard_run_folder_on_input_error(cfg.work_dir), \
                write_errors('--out' if out else '--work-dir', staged), config_errors(cfg):
            runner = build_runner(cfg)
            if out and adapter.out_to_runner:
                adapter.out_to_runner(runner, out)
            metrics = runner.test()
            if staged is not None:
                # Each process stages its own images; runner.test() returns only after every
                # process has written its share (the metric gathers their results).
                staged.commit()
    finally:
        if staged is not None:
            staged.abort()  # a no-op after the commit
    if runner.rank == 0:
        print('test metrics: ' + json.dumps(metrics, default=float))
    return metrics
