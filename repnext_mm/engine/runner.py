"""An MMEngine runner that never evaluates or trains a half-loaded model.

MMEngine 0.10.7's ``Runner.load_checkpoint`` loads non-strictly: a checkpoint of another model,
a fused checkpoint in a training-form model or a 1000-class head in a 4-class model loads
"successfully", the mismatch a warning among hundreds of log lines, and ``tools/test.py``
prints a metric of a partly random model. :class:`StrictLoadMixin` makes every
``load_from`` / ``--resume`` load strict, through the package's safe reader, with one error
that names what does not fit and the fix.

Fine-tuning from a checkpoint whose head does not fit is a deliberate partial load: the config
names the module prefixes that may differ, and what was left out is logged::

    load_from = 'work_dirs/coco/epoch_12.pth'
    load_from_allow_mismatch = ['roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg',
                                'roi_head.mask_head.conv_logits']

It applies to ``load_from`` in training only: ``--resume`` and ``tools/test.py`` always load
the whole model.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import os.path as osp
import re
import shutil
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from mmengine.config import Config
from mmengine.dist import master_only
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from repnext_mm.apis.checkpoint import load_state_dict_checked, read_checkpoint, state_dict_of
from repnext_mm.apis.inputs import is_local_path
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write
from .atomic_checkpoint import ATOMIC_BACKEND_NAME

#: Config key: module-name prefixes whose weights ``load_from`` may lack or hold in another shape.
ALLOW_MISMATCH_KEY = 'load_from_allow_mismatch'
#: What ``--resume`` needs besides the weights (MMEngine's ``Runner.resume`` reads these).
TRAINING_STATE_KEYS = ('meta', 'message_hub')


def allowed_mismatch_of(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The config's :data:`ALLOW_MISMATCH_KEY` as a tuple of prefixes (checked)."""
    prefixes = cfg.get(ALLOW_MISMATCH_KEY) or ()
    if isinstance(prefixes, str) or not all(isinstance(p, str) for p in prefixes):
        raise InputError(f'{ALLOW_MISMATCH_KEY}={prefixes!r}: give a list of module names, e.g. '
                         "['roi_head.bbox_head.fc_cls']")
    return tuple(prefixes)


def check_training_state(checkpoint: Mapping[str, Any], filename: str) -> None:
    missing = [key for key in TRAINING_STATE_KEYS if key not in checkpoint]
    meta = checkpoint.get('meta')
    if not missing and not (isinstance(meta, Mapping) and 'epoch' in meta and 'iter' in meta):
        missing = ['meta.epoch/meta.iter']
    if missing:
        raise InputError(f'{filename} is not a training checkpoint of tools/train.py (it has no '
                         f'{", ".join(missing)}), so training cannot resume from it; start '
                         f'from its weights with --cfg-options load_from={filename} instead of '
                         '--resume')


@dataclass
class RunRecord:
    """What the run being built has done to its work folder, for :func:`discard_run_folder_on_input_error`.

    Attributes:
        log_dir: The dated log folder the runner made (``None`` before it made one).
        inputs_passed: The checkpoint (if any) loaded, so the run is doing real work: from here
            on its folder is a record worth keeping, whatever stops it.
    """
    log_dir: str | None = None
    inputs_passed: bool = False


#: The record of the run being built in this context (set by the discard context manager).
_ACTIVE_RUN: contextvars.ContextVar[RunRecord | None] = contextvars.ContextVar(
    'repnext_mm_active_run', default=None)


#: Checkpoints a pre-flight (:mod:`.preflight`) read, by name, waiting for the runner's load.
_PRECHECKED: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    'repnext_mm_prechecked_checkpoints', default=None)


@contextlib.contextmanager
def prechecked_checkpoints() -> Iterator[dict[str, Any]]:
    """Hands what a pre-flight read in this block to the runner's load (read once)."""
    token = _PRECHECKED.set({})
    try:
        yield _PRECHECKED.get()
    finally:
        _PRECHECKED.reset(token)


def keep_prechecked(filename: str, checkpoint: Any) -> None:
    """Keeps ``checkpoint`` for the runner's load of ``filename`` (inside
    :func:`prechecked_checkpoints`; elsewhere a no-op)."""
    prechecked = _PRECHECKED.get()
    if prechecked is not None:
        prechecked[filename] = checkpoint


def take_prechecked(filename: str) -> Any | None:
    """The checkpoint a pre-flight read as ``filename`` (handed out once), or ``None``."""
    prechecked = _PRECHECKED.get()
    return prechecked.pop(filename, None) if prechecked is not None else None


class StrictLoadMixin:
    """Runner mixin: strict, safe checkpoint loading (see the module docstring).

    Also writes nothing into the work folder before the inputs passed: MMEngine dumps the
    config in ``__init__``, which would overwrite an earlier run's saved config even when this
    run is then refused for its checkpoint; here the dump waits until :meth:`load_or_resume`
    (which ``train()`` and ``test()`` call) succeeded, and is atomic.

    Combined with MMEngine's ``Runner`` (or a subclass a config names as ``runner_type``) by
    :func:`strict_runner_class`.
    """

    _allowed_mismatch: tuple[str, ...] = ()
    _resuming = False
    _inputs_passed = False

    def build_logger(self, *args: Any, **kwargs: Any) -> Any:
        # Runner.__init__ has just made the dated log folder: the discard must know it is ours.
        record = _ACTIVE_RUN.get()
        if record is not None:
            record.log_dir = self._log_dir
        return super().build_logger(*args, **kwargs)

    def load_or_resume(self) -> None:
        super().load_or_resume()
        if not self._inputs_passed:
            self._inputs_passed = True
            record = _ACTIVE_RUN.get()
            if record is not None:
                record.inputs_passed = True
            self.dump_config()

    @master_only
    def dump_config(self) -> None:
        """Saves the config into the work folder (atomically), once the inputs passed."""
        if not self._inputs_passed:
            return
        name = osp.basename(self.cfg.filename) if self.cfg.filename else f'{self.timestamp}.py'
        atomic_write(osp.join(self.work_dir, name), lambda tmp: self.cfg.dump(str(tmp)))

    def train(self) -> Any:
        self._allowed_mismatch = allowed_mismatch_of(self.cfg)
        return super().train()

    def resume(self, filename: str, *args: Any, **kwargs: Any) -> None:
        self._resuming = True
        try:
            super().resume(filename, *args, **kwargs)
        finally:
            self._resuming = False

    def load_checkpoint(self, filename: str, map_location: Any = 'cpu', strict: bool = True,
                        revise_keys: Sequence[tuple[str, str]] = ((r'^module\.', ''),)) -> dict:
        """Reads ``filename`` safely and loads its weights; a mismatch is an :class:`InputError`.

        ``strict=False`` (MMEngine's default, kept for callers that pass it) still refuses a
        mismatch outside the config's allowed prefixes.
        """
        checkpoint = take_prechecked(filename)  # what the pre-flight read, read once
        if checkpoint is None:
            checkpoint = read_checkpoint(filename, map_location=map_location)
        # Checked before the hooks see the file (they index it); extracted after them, since
        # hooks such as EMAHook swap weights in after_load_checkpoint.
        state_dict_of(checkpoint, filename)
        if self._resuming:
            check_training_state(checkpoint, filename)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        state_dict = state_dict_of(checkpoint, filename)
        for pattern, replacement in revise_keys:
            state_dict = {re.sub(pattern, replacement, k): v for k, v in state_dict.items()}
        model = self.model.module if is_model_wrapper(self.model) else self.model
        allowed = () if self._resuming else self._allowed_mismatch
        load_state_dict_checked(model, state_dict, filename, allow_mismatch=allowed,
                                log=self.logger.warning)
        self._has_loaded = True
        self.logger.info(f'Loaded checkpoint {filename} (every entry matched'
                         + (' outside the allowed prefixes)' if allowed else ')'))
        return checkpoint


def strict_runner_class(base: type = Runner) -> type:
    """``base`` (a ``Runner`` subclass) with :class:`StrictLoadMixin` in front."""
    if not (isinstance(base, type) and issubclass(base, Runner)):
        raise InputError(f'runner_type={base!r} is not an MMEngine Runner subclass; the tools '
                         'need one to load checkpoints strictly')
    if issubclass(base, StrictLoadMixin):
        return base
    return type(f'StrictLoad{base.__name__}', (StrictLoadMixin, base), {})


StrictLoadRunner: Callable[..., Runner] = strict_runner_class(Runner)


def use_atomic_checkpoints(cfg: Config) -> None:
    """Routes the ``CheckpointHook``'s writes through :class:`AtomicLocalBackend`.

    Left alone when the config already chooses a storage backend or a remote ``out_dir``.
    """
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not isinstance(hook, dict) or hook.get('type') not in ('CheckpointHook', None):
        return
    if hook.get('backend_args') or hook.get('file_client_args'):
        return
    if isinstance(hook.get('out_dir'), str) and not is_local_path(hook['out_dir']):
        return
    hook['backend_args'] = dict(backend=ATOMIC_BACKEND_NAME)


def build_runner(cfg: Config) -> Any:
    """Builds the runner with strict checkpoint loading and the tools' extra hook.

    The config's ``runner_type`` (a ``Runner`` subclass) is honoured, with
    :class:`~repnext_mm.engine.runner.StrictLoadMixin` in front of it.
    """
    from mmengine.registry import RUNNERS

    from .rng_state_hook import RNGStateHook

    if cfg.get('default_scope') == 'mmdet':
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    base = RUNNERS.get(cfg.runner_type) if 'runner_type' in cfg else Runner
    if base is None:
        raise InputError(f'runner_type={cfg.runner_type!r} is not a registered runner')
    runner = strict_runner_class(base).from_cfg(cfg)
    runner.register_hook(RNGStateHook())
    return runner


@contextlib.contextmanager
def discard_run_folder_on_input_error(work_dir: str) -> Iterator[RunRecord]:
    """Removes what this run made in ``work_dir`` if it is refused before it started working.

    The runner makes a dated log folder as soon as it is built; a run refused for a config part
    that only the runner builds (a dataloader, a scheduler; :mod:`.preflight` checks the rest
    before the runner) must not leave that behind. Only this run's own log folder is removed
    (another run's files in the same folder are never touched), and ``work_dir`` and the
    parents this run created only while nothing else is in them. Once the inputs passed
    (:attr:`RunRecord.inputs_passed`), an error keeps the folder: its log is the record of the
    work done.

    Yields:
        The run's :class:`RunRecord`, filled in by :class:`StrictLoadMixin`.
    """
    # MMEngine's runner makes its folders under the absolute path of work_dir.
    work_dir = osp.abspath(work_dir)
    created = _missing_folders(work_dir)
    before = set(os.listdir(work_dir)) if not created else set()
    record = RunRecord()
    token = _ACTIVE_RUN.set(record)
    try:
        yield record
    except InputError:
        if not record.inputs_passed:
            _discard(work_dir, record, created, before)
        raise
    finally:
        _ACTIVE_RUN.reset(token)


def _missing_folders(path: str) -> list[str]:
    """``path`` and its ancestors that do not exist yet, innermost first (what a run creates)."""
    missing = []
    while not osp.isdir(path) and osp.dirname(path) != path:
        missing.append(path)
        path = osp.dirname(path)
    return missing


def _discard(work_dir: str, record: RunRecord, created: list[str], before: set[str]) -> None:
    log_dir = record.log_dir and osp.abspath(record.log_dir)
    if log_dir and osp.dirname(log_dir) == work_dir \
            and osp.basename(log_dir) not in before:
        shutil.rmtree(log_dir, ignore_errors=True)
    for folder in created:  # ./work_dirs/<config> and ./work_dirs, if this run made them
        try:
            os.rmdir(folder)
        except OSError:  # not empty: another run's files are in it
            break
