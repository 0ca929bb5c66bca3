"""What a run checks before MMEngine's ``Runner`` exists: the parts it builds, the files it loads.

The runner prints its environment and config log and makes a dated work folder as soon as it is
created, and builds the model, the loops and the optimizer, and loads ``load_from`` /
``--resume``, only after that. A run refused there would print hundreds of log lines before its
one ``error:`` line. :func:`preflight_train` and :func:`preflight_test` do the same work first,
on a model built here and dropped again (the runner builds its own after seeding, so a seeded
run trains the same weights): a model part that does not build, a loop argument the loop does
not take, an optimizer value that is refused and a checkpoint that does not fit are each one
:class:`~repnext_mm.utils.errors.InputError` before any log or folder.

Checkpoints are read with their tensors mapped, not loaded (:func:`read_checkpoint`
``mmap=True``): only names and shapes are compared. What was read is handed to the runner
(:func:`~.runner.take_prechecked`), so a file, or a release address, is read once.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import re
from typing import Any, Iterator, Mapping

from mmengine.config import Config
from torch import nn

from repnext_mm.apis.build_errors import config_errors
from repnext_mm.apis.checkpoint import (check_state_dict_fits, looks_fused, mismatched_modules,
                                        read_checkpoint, state_dict_of)
from repnext_mm.apis.config import unknown_argument_message
from repnext_mm.utils.errors import InputError
from .runner import ALLOW_MISMATCH_KEY, check_training_state, keep_prechecked

#: MMEngine's default ``revise_keys`` of ``Runner.load_checkpoint``: a wrapper's prefix.
WRAPPER_PREFIX = re.compile(r'^module\.')
#: Loop sections and the loop class MMEngine builds for each without a ``type``.
LOOP_SECTIONS = dict(train_cfg=None, val_cfg='ValLoop', test_cfg='TestLoop')
#: What a ``Runner`` passes to a loop besides its section's keys.
LOOP_SUPPLIED = ('self', 'runner', 'dataloader', 'evaluator')

@contextlib.contextmanager
def _quiet_mmengine_log() -> Iterator[None]:
    """The builds log through MMEngine's current logger (each parameter group, each frozen
    parameter); the runner's own builds log the same once it exists."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_preflight_model(cfg: Config) -> nn.Module:
    """``cfg.model`` built as the runner builds it (with a top-level ``data_preprocessor``).

    Raises:
        InputError: A part does not build: one line naming its config key
            (:func:`~repnext_mm.apis.build_errors.config_errors`).
    """
    from mmengine.registry import MODELS, DefaultScope

    model_cfg = copy.deepcopy(cfg.get('model'))
    if not isinstance(model_cfg, Mapping):
        raise InputError(f'model={model_cfg!r}: the config needs a model dict with a type')
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')), config_errors(cfg), \
            _quiet_mmengine_log():
        return MODELS.build(model_cfg)


def check_loop_arguments(cfg: Config) -> None:
    """``train_cfg`` / ``val_cfg`` / ``test_cfg`` give their loop only arguments it takes.

    Raises:
        InputError: "train_cfg: EpochBasedTrainLoop has no argument 'max_epochz'; did you mean
            'max_epochs'?".
    """
    for section, default in LOOP_SECTIONS.items():
        loop = cfg.get(section)
        if not isinstance(loop, Mapping):
            continue
        cls = _loop_class(loop, default, cfg.get('default_scope'))
        if cls is None:
            continue
        parameters = inspect.signature(cls.__init__).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            continue
        accepted = [p.name for p in parameters if p.name not in LOOP_SUPPLIED]
        for name in loop:
            if name in ('type', 'by_epoch') or name in accepted \
                    or (name.startswith('_') and name.endswith('_')):
                continue
            raise InputError(unknown_argument_message(section, cls.__name__, name, accepted))


def _loop_class(loop: Mapping, default: str | None, scope: str | None) -> type | None:
    from mmengine.registry import LOOPS

    name = loop.get('type')
    if name is None:
        name = default or ('EpochBasedTrainLoop' if loop.get('by_epoch', True)
                           else 'IterBasedTrainLoop')
    if not isinstance(name, str):
        return name if inspect.isclass(name) else None
    try:
        with LOOPS.switch_scope_and_registry(scope) as registry:
            cls = registry.get(name)
    except Exception:  # an unknown type: the runner's build names it
        return None
    return cls if inspect.isclass(cls) else None


def check_optimizer(cfg: Config, model: nn.Module) -> None:
    """``optim_wrapper`` builds on the model (its optimizer takes the config's values).

    Raises:
        InputError: ``optim_wrapper.optimizer.lr='abc' is not a number``, an unknown type, ...
    """
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    optim_wrapper = cfg.get('optim_wrapper')
    if not isinstance(optim_wrapper, Mapping):
        return  # MMEngine accepts a built wrapper; a missing one is its own error at train()
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')), config_errors(cfg), \
            _quiet_mmengine_log():
        build_optim_wrapper(model, copy.deepcopy(optim_wrapper))


def check_checkpoint_fits(model: nn.Module, filename: str, hint: str = '',
                          allow_mismatch: tuple[str, ...] | None = None,
                          resuming: bool = False) -> None:
    """``filename`` reads safely and fits ``model`` as the runner will load it.

    Args:
        model: The pre-flight model.
        filename: The checkpoint (a path or an address).
        hint: The fix named for weights that do not fit (default: the config it was trained
            with).
        allow_mismatch: Training's ``load_from``: the prefixes that may differ (the fix then
            names the fine-tuning switch too). ``None``: the whole model must fit.
        resuming: ``--resume``: the file must be a training checkpoint as well.

    Raises:
        InputError: Unreadable, not a checkpoint, not a training checkpoint (``resuming``), or
            weights that do not fit.
    """
    checkpoint = read_checkpoint(filename, mmap=True)
    state_dict = {WRAPPER_PREFIX.sub('', key): value
                  for key, value in state_dict_of(checkpoint, filename).items()}
    if resuming:
        check_training_state(checkpoint, filename)
    model_state = model.state_dict()
    if allow_mismatch is not None and not (looks_fused(state_dict)
                                           and not looks_fused(model_state)):
        hint = fine_tuning_hint(model_state, state_dict)
    check_state_dict_fits(model_state, state_dict, filename, hint, allow_mismatch or ())
    keep_prechecked(filename, checkpoint)


def fine_tuning_hint(model_state: Mapping[str, Any], state_dict: Mapping[str, Any]) -> str:
    """The fix for a ``load_from`` that does not fit: its config, or the fine-tuning switch
    naming the parts that differ."""
    modules = mismatched_modules(model_state, state_dict)
    switch = (f'--cfg-options {ALLOW_MISMATCH_KEY}="[{",".join(modules)}]"' if modules else
              f"{ALLOW_MISMATCH_KEY}=['<module prefix>', ...] in the config")
    return ('Pass the config the checkpoint was trained with, or, to fine-tune from it with '
            f'those parts trained anew, allow them with {switch}.')


def preflight_train(cfg: Config, allow_mismatch: tuple[str, ...]) -> None:
    """The checks of a training run before its runner (see the module docstring)."""
    check_loop_arguments(cfg)
    model = build_preflight_model(cfg)
    check_optimizer(cfg, model)
    filename = cfg.get('load_from')
    if not filename:
        return
    if cfg.get('resume'):
        check_checkpoint_fits(model, filename, resuming=True,
                              hint='Resume with the config the run was started with.')
        return
    check_checkpoint_fits(model, filename, allow_mismatch=allow_mismatch)


def preflight_test(cfg: Config) -> None:
    """The checks of a test run before its runner: the model, and ``load_from`` fits it."""
    check_loop_arguments(cfg)
    model = build_preflight_model(cfg)
    check_checkpoint_fits(model, cfg.load_from)
