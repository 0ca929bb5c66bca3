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
import os
import os.path as osp
import re
import shutil
from typing import Any, Callable, Iterator, Mapping, Sequence

from mmengine.config import Config
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from repnext_mm.apis.checkpoint import load_state_dict_checked, read_checkpoint, state_dict_of
from repnext_mm.apis.inputs import is_local_path
from repnext_mm.utils.errors import InputError
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


def _check_training_state(checkpoint: Mapping[str, Any], filename: str) -> None:
    missing = [key for key in TRAINING_STATE_KEYS if key not in checkpoint]
    meta = checkpoint.get('meta')
    if not missing and not (isinstance(meta, Mapping) and 'epoch' in meta and 'iter' in meta):
        missing = ['meta.epoch/meta.iter']
    if missing:
        raise InputError(f'{filename} is not a training checkpoint of tools/train.py (it has no '
                         f'{", ".join(missing)}), so training cannot resume from it; start '
                         f'from its weights with --cfg-options load_from={filename} instead of '
                         '--resume')


class StrictLoadMixin:
    """Runner mixin: strict, safe checkpoint loading (see the module docstring).

    Combined with MMEngine's ``Runner`` (or a subclass a config names as ``runner_type``) by
    :func:`strict_runner_class`.
    """

    _allowed_mismatch: tuple[str, ...] = ()
    _resuming = False

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
        checkpoint = read_checkpoint(filename, map_location=map_location)
        # Checked before the hooks see the file (they index it); extracted after them, since
        # hooks such as EMAHook swap weights in after_load_checkpoint.
        state_dict_of(checkpoint, filename)
        if self._resuming:
            _check_training_state(checkpoint, filename)
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
def discard_run_folder_on_input_error(work_dir: str) -> Iterator[None]:
    """Removes what the runner created in ``work_dir`` if the run stops on bad input.

    The runner makes a dated log folder as soon as it is built; a run refused for its
    checkpoint (found only when the runner loads it) must not leave that behind.
    """
    existed = osp.isdir(work_dir)
    before = set(os.listdir(work_dir)) if existed else set()
    try:
        yield
    except InputError:
        if not existed:
            shutil.rmtree(work_dir, ignore_errors=True)
        elif osp.isdir(work_dir):
            for name in set(os.listdir(work_dir)) - before:
                path = osp.join(work_dir, name)
                shutil.rmtree(path, ignore_errors=True) if osp.isdir(path) else os.remove(path)
        raise
