"""Reading checkpoint files and loading their weights into models, strictly.

Every tool reads checkpoints through :func:`read_checkpoint` (``weights_only=True`` with an
explicit allow-list, errors that say what is wrong with the file; an address such as
``https://...`` goes to the loader MMEngine's ``CheckpointLoader`` registers for it, which for the
authors' release is :mod:`repnext_mm.hub.weights`) and loads weights through
:func:`load_state_dict_checked`: a checkpoint that does not fit the model is an
:class:`~repnext_mm.utils.errors.InputError` naming the missing, unexpected and mis-shaped
entries, never a warning in a log. A deliberate partial load (fine-tuning with a new head) names
the module prefixes that may differ, and what was left out is logged.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn

from repnext_mm.utils.errors import InputError
from repnext_mm.utils.safe_load import checkpoint_safe_globals
from repnext_mm.utils.state_dict import (StateDictMismatch, compare_state_dicts,  # noqa: F401
                                         extract_state_dict)
from .inputs import is_local_path

#: Recorded in ``meta['repnext_mm']`` of every checkpoint written by the reparameterize tool.
FUSED_META_KEY = 'repnext_mm'
#: Substrings of state-dict keys that only exist in a fused RepNeXt model.
FUSED_KEY_MARKERS = ('.reparam.weight', 'head.fc.weight')
#: The option of the tools that read foreign files (deploy, analysis) to unpickle them fully.
UNSAFE_FLAG = '--unsafe-full-unpickle'

_BLOCKED_GLOBAL = re.compile(r'GLOBAL ([\w.]+)')
#: A pickle's first opcode (PROTO), and torch's legacy format's magic number as its first
#: pickle holds it (LONG1 of 10 bytes; after a frame header in protocols 4 and 5).
PICKLE_PROTOCOL_OPCODE = b'\x80'
TORCH_LEGACY_MAGIC = b'\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19'
#: Largest file whose opcodes are walked to tell a plain pickle from a damaged checkpoint.
PLAIN_PICKLE_SCAN_BYTES = 64 << 20


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------
def checkpoint_allowed_types() -> list:
    """Types allowed when unpickling: MMEngine's meta types plus ``argparse.Namespace``.

    timm and the authors store their training arguments as an ``argparse.Namespace`` under
    ``args``; a Namespace only carries plain attributes, so allow-listing it is safe.
    """
    return [*checkpoint_safe_globals(), argparse.Namespace]


@contextlib.contextmanager
def _allowed_types(types: list) -> Iterator[None]:
    # Extends the process-wide allow-list rather than using torch's safe_globals context manager:
    # on exit that manager clears and rebuilds the list, dropping the (callable, name) entries
    # repnext_mm registers at import, which broke every later MMEngine checkpoint load.
    torch.serialization.add_safe_globals(types)
    yield


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _unpickling_error(path: Path, error: pickle.UnpicklingError, unsafe_hint: str | None
                      ) -> InputError:
    message = str(error)
    blocked = _BLOCKED_GLOBAL.search(message)
    if blocked:
        hint = (f' If you trust where the file comes from, pass {unsafe_hint} to unpickle it '
                'fully (unpickling can run arbitrary code).' if unsafe_hint else '')
        return InputError(
            f'{path} refers to `{blocked.group(1)}`, which is not allowed: checkpoints are read '
            'as tensors and plain data only, and this file asks for other Python objects (a '
            f'foreign or tampered file?).{hint}')
    # torch's text around the cause recommends weights_only=False; only the cause is kept.
    lines = [line.strip() for line in message.splitlines()]
    marker = next((i for i, line in enumerate(lines) if 'WeightsUnpickler error' in line), None)
    detail = _first_line(error)
    if marker is not None:  # the cause follows the marker, on its line or on the next ones
        after = [lines[marker].split('WeightsUnpickler error:', 1)[-1].strip(),
                 *lines[marker + 1:]]
        detail = next((line for line in after if line), detail)
    if 'weights_only' in detail:
        detail = type(error).__name__
    return InputError(f'{path} is not a readable PyTorch checkpoint: the file is corrupt or '
                      f'truncated ({detail}). Copy or download it again.')


def _read_address(url: str, map_location: Any) -> Any:
    """The checkpoint at ``url`` as the loader MMEngine registered for its prefix gives it
    (the authors' release: downloaded, cached and converted; other addresses: MMEngine's own)."""
    try:
        return CheckpointLoader.load_checkpoint(url, map_location=map_location)
    except InputError:
        raise
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        # urllib's URLError / HTTPError are OSErrors; torch's unreadable files the others
        raise InputError(f'checkpoint {url} could not be loaded ({_first_line(error)}); check '
                         'the address, or download the file and pass its path') from error


def read_checkpoint(path: str | os.PathLike, map_location: Any = 'cpu',
                    unsafe_full_unpickle: bool = False, unsafe_hint: str | None = None,
                    mmap: bool = False) -> Any:
    """Loads a ``torch.save`` file with ``weights_only=True`` and an explicit allow-list.

    An address (``scheme://...``) is read by the loader MMEngine's ``CheckpointLoader`` has for
    it; the authors' release files come converted to this package's layout
    (:mod:`repnext_mm.hub.weights`, registered by ``import repnext_mm``).

    Args:
        path: Checkpoint file, or an address.
        map_location: As for ``torch.load``.
        unsafe_full_unpickle: Unpickle arbitrary objects (``weights_only=False``). Only for files
            from a trusted source: unpickling can execute code.
        unsafe_hint: The option of the calling tool that sets ``unsafe_full_unpickle``; named in
            the error for a blocked object. ``None``: the tool offers no such option.
        mmap: Map the tensors' bytes instead of reading them (files in torch's zip format;
            others are read): cheap when only the non-tensor entries, e.g. ``meta``, are needed.

    Raises:
        InputError: The file is missing, a directory, empty, truncated or corrupt, or refers to
            an object type outside the allow-list (the message names it); an address that does
            not load.
    """
    if not is_local_path(str(path)):
        return _read_address(str(path), map_location)
    path = Path(path)
    if path.is_dir():
        raise InputError(f'checkpoint {path} is a directory; pass the .pth file inside it')
    if not path.is_file():
        raise InputError(f'checkpoint {path} does not exist (relative to {os.getcwd()})')
    size = path.stat().st_size
    if size == 0:
        raise InputError(f'checkpoint {path} is empty (0 bytes): the download or copy did not '
                         'finish; fetch it again')
    is_zip = zipfile.is_zipfile(path)
    mmap = mmap and is_zip  # torch maps only its zip format
    if is_zip and is_torchscript(path):
        raise InputError(f'{path} is a TorchScript archive (such as the authors\' fused release '
                         'repnext_mX_distill_300e_fused.pt), not a checkpoint: convert it with '
                         f'`python tools/deploy/convert_official.py {path} OUT` and pass OUT')
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of old files before it reads (or refuses)
            # them; the outcome is what the user needs, said once.
            warnings.filterwarnings('ignore', message='Detected pickle protocol')
            if unsafe_full_unpickle:
                return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
            with _allowed_types(checkpoint_allowed_types()):
                return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if not is_zip and _is_plain_pickle(path):
            raise InputError(f'{path} is a plain Python pickle (pickle.dump), not a PyTorch '
                             'checkpoint: checkpoints are read as tensors and plain data only; '
                             'save the weights with torch.save(model.state_dict(), PATH) and '
                             'pass that') from error
        raise _unpickling_error(path, error, unsafe_hint) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            IndexError) as error:
        raise InputError(f'{path} is not a readable PyTorch checkpoint: the file is corrupt or '
                         f'truncated (size {size} bytes; {_first_line(error)}). Copy or '
                         'download it again.') from error


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``constants.pkl`` and ``code/``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return (any(name.endswith('/constants.pkl') for name in names)
            and any('/code/' in name for name in names))


def _is_plain_pickle(path: Path) -> bool:
    """Whether ``path`` is a whole pickle that ``torch.save`` did not write (its legacy format
    starts with the pickled magic number; its current one is a zip file)."""
    if path.stat().st_size > PLAIN_PICKLE_SCAN_BYTES:
        return False
    with open(path, 'rb') as file:
        data = file.read()
    if data[:1] != PICKLE_PROTOCOL_OPCODE or TORCH_LEGACY_MAGIC in data[:32]:
        return False
    try:  # walks the opcodes without building anything; a damaged file does not parse
        for _ in pickletools.genops(data):
            pass
    except Exception:  # pickletools raises ValueError and others for damaged data
        return False
    return True


def state_dict_of(checkpoint: Any, source: str) -> dict[str, Tensor]:
    """The tensors of ``checkpoint`` as a state dict.

    Raises:
        InputError: ``checkpoint`` is not a dict (a bare tensor, a pickled module, ...) or holds
            no tensors.
    """
    if not isinstance(checkpoint, Mapping):
        raise InputError(f'{source} holds a {type(checkpoint).__name__}, not a checkpoint (a dict '
                         'with a state dict); pass a .pth file written by tools/train.py or the '
                         'deploy tools')
    state_dict = extract_state_dict(checkpoint)
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, Tensor)}
    if not tensors:
        keys = list(checkpoint)
        raise InputError(f'{source} holds no model weights (top-level keys: '
                         f'{", ".join(map(str, keys[:5]))}{", ..." if len(keys) > 5 else ""}); '
                         'pass a checkpoint with a state_dict')
    return dict(state_dict)


def fused_checkpoint_options(checkpoint: Any) -> dict[str, Any] | None:
    """The ``--cfg-options`` recorded by the reparameterize tool in a fused checkpoint, if any."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    fused = meta.get(FUSED_META_KEY) if isinstance(meta, Mapping) else None
    if isinstance(fused, Mapping) and fused.get('fused') and fused.get('cfg_options'):
        return dict(fused['cfg_options'])
    return None


def looks_fused(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` holds a fused RepNeXt (keys only the deploy structure has)."""
    return any(marker in key for key in state_dict for marker in FUSED_KEY_MARKERS)


# --------------------------------------------------------------------------------------------
# Loading weights into models
# --------------------------------------------------------------------------------------------
def check_state_dict_fits(model_state: Mapping[str, Any], state_dict: Mapping[str, Any],
                          source: str, hint: str = '',
                          allow_mismatch: Sequence[str] = ()) -> StateDictMismatch:
    """Whether ``state_dict`` fits a model whose state dict is ``model_state`` (names and shapes
    only: nothing is loaded, so mapped tensors are not read).

    Args:
        model_state: The model's ``state_dict()``.
        state_dict, source, hint, allow_mismatch: As for :func:`load_state_dict_checked`.

    Returns:
        The allowed mismatch (empty for a complete fit).

    Raises:
        InputError: An entry outside ``allow_mismatch`` is missing, unexpected or mis-shaped.
    """
    mismatch = compare_state_dicts(model_state, state_dict)
    allowed, refused = mismatch.split(allow_mismatch)
    if refused:
        if not hint and looks_fused(state_dict) and not looks_fused(model_state):
            hint = ('It is a fused (deploy) checkpoint: build the fused model with --cfg-options '
                    'model.backbone.deploy=True (and model.head.deploy=True for a classifier).')
        raise InputError(f'the weights in {source} do not fit the model built from the config: '
                         f'{refused.summary()}. '
                         + (hint or 'Pass the config the checkpoint was trained with.'))
    return allowed


def mismatched_modules(model_state: Mapping[str, Any], state_dict: Mapping[str, Any],
                       limit: int = 3) -> list[str]:
    """The modules (key prefixes) whose entries are missing, unexpected or mis-shaped, for a
    fine-tuning switch that allows them; ``[]`` if more than ``limit`` modules differ."""
    mismatch = compare_state_dicts(model_state, state_dict)
    modules = list(dict.fromkeys(key.rsplit('.', 1)[0] for key in mismatch.keys))
    return modules if len(modules) <= limit else []


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, Tensor], source: str,
                            hint: str = '', allow_mismatch: Sequence[str] = (),
                            log: Callable[[str], None] | None = None) -> StateDictMismatch:
    """Loads ``state_dict`` into ``model``; anything that does not fit is an error.

    Args:
        model: The model to load into.
        state_dict: The weights.
        source: What the weights are called in messages (usually the file path).
        hint: The fix to suggest on a mismatch (default: pass the config of the checkpoint).
        allow_mismatch: Module-name prefixes (e.g. ``'roi_head.bbox_head.fc_cls'``) whose
            entries may be missing, unexpected or differently shaped: those keep the model's
            initialization. ``''`` allows everything.
        log: Receives one line on what a partial load left out.

    Returns:
        The allowed mismatch (empty for a complete load).

    Raises:
        InputError: An entry outside ``allow_mismatch`` is missing, unexpected or mis-shaped.
    """
    allowed = check_state_dict_fits(model.state_dict(), state_dict, source, hint,
                                    allow_mismatch)
    skipped = {key for key, _, _ in allowed.wrong_shape} | set(allowed.unexpected)
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in skipped},
                          strict=not allowed)
    if allowed and log is not None:
        log(f'partial load of {source} (allowed for {", ".join(map(repr, allow_mismatch))}): '
            f'{allowed.summary(limit=None)}; those entries keep their initialization')
    return allowed
