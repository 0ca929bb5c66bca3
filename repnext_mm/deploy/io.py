"""Reading checkpoints safely and writing outputs atomically.

Every output of the deploy tools is first written to a temporary name in the destination's
directory and then moved into place with ``os.replace`` (atomic on POSIX within one file system),
so an interrupted or failed run never leaves a half-written checkpoint, model or report behind.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from repnext_mm.utils.safe_load import checkpoint_safe_globals
from .errors import DeployError

UNSAFE_FLAG = '--unsafe-full-unpickle'


def check_output_path(path: str | os.PathLike, force: bool, flag: str = '--force') -> Path:
    """Fails early (before any work) if ``path`` exists and overwriting was not asked for."""
    path = Path(path)
    if path.exists() and not force:
        raise DeployError(f'{path} already exists; pass {flag} to overwrite it, or choose another '
                          'output path. Nothing was written.')
    if path.parent != Path('') and not path.parent.is_dir():
        raise DeployError(f'the output directory {path.parent} does not exist; create it first. '
                          'Nothing was written.')
    return path


def _temporary_sibling(path: Path, suffix: str = '') -> Path:
    # Same directory as the destination, so os.replace never crosses a file system boundary.
    return path.parent / f'.{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}'


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Calls ``write(tmp_path)`` and moves the result to ``path`` only if it succeeded.

    Args:
        path: Final destination (a file, or a directory such as an ``.mlpackage``).
        write: Writes the complete output at the path it is given.

    Returns:
        ``path`` as a :class:`Path`.
    """
    path = Path(path)
    tmp = _temporary_sibling(path, suffix=path.suffix)
    try:
        write(tmp)
        if tmp.is_dir():
            _replace_directory(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return path


def _replace_directory(src: Path, dst: Path) -> None:
    """Moves directory ``src`` to ``dst``, replacing an existing ``dst`` (file or directory).

    ``os.replace`` cannot replace a non-empty directory, so the old one is first renamed aside;
    between the two renames ``dst`` is briefly absent but never partially written.
    """
    if not dst.exists():
        os.replace(src, dst)
        return
    old = _temporary_sibling(dst, suffix='.old')
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except OSError:
        os.replace(old, dst)  # put the previous output back
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary sibling, then an atomic rename to ``path``."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Writes a text file atomically (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding='utf-8'))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Writes ``obj`` as indented JSON atomically."""
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=False) + '\n', path)


def deploy_safe_globals() -> list:
    """Types allowed when unpickling checkpoints: MMEngine's meta types plus ``argparse.Namespace``.

    The authors' release stores its training arguments as an ``argparse.Namespace`` under
    ``args``; a Namespace only carries plain attributes, so allow-listing it is safe.
    """
    return [*checkpoint_safe_globals(), argparse.Namespace]


@contextlib.contextmanager
def _safe_globals(types: list) -> Iterator[None]:
    # Extends the process-wide allow-list rather than using torch's safe_globals context manager:
    # on exit that manager clears and rebuilds the list, dropping the (callable, name) entries
    # repnext_mm registers at import, which broke every later MMEngine checkpoint load.
    torch.serialization.add_safe_globals(types)
    yield


def load_checkpoint_file(path: str | os.PathLike, unsafe_full_unpickle: bool = False) -> Any:
    """Loads a ``torch.save`` file with ``weights_only=True`` and an explicit allow-list.

    Args:
        path: Checkpoint file.
        unsafe_full_unpickle: Unpickle arbitrary objects (``weights_only=False``). Only for files
            from a trusted source: unpickling can execute code.

    Raises:
        DeployError: The file is missing, empty, truncated or corrupt, or holds an object type
            outside the allow-list (the message names the type and the opt-in flag).
    """
    path = Path(path)
    if not path.is_file():
        raise DeployError(f'checkpoint {path} does not exist or is not a file')
    if path.stat().st_size == 0:
        raise DeployError(f'checkpoint {path} is empty (0 bytes): the download or copy did not '
                          'finish; fetch it again')
    try:
        if unsafe_full_unpickle:
            return torch.load(path, map_location='cpu', weights_only=False)
        with _safe_globals(deploy_safe_globals()):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        detail = next((line.strip() for line in message.splitlines()
                       if 'WeightsUnpickler error' in line or 'Unsupported global' in line),
                      (message.splitlines() or [type(error).__name__])[0])
        if 'Unsupported global' in message:
            raise DeployError(
                f'{path} holds Python objects outside the safe allow-list ({detail}). If you '
                f'trust where the file comes from, pass {UNSAFE_FLAG} to unpickle it fully '
                '(unpickling can run arbitrary code).') from error
        raise DeployError(f'{path} is not a readable PyTorch checkpoint (corrupt or truncated '
                          f'file? {detail})') from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise DeployError(f'{path} is not a readable PyTorch checkpoint: the file is corrupt or '
                          f'truncated (size {path.stat().st_size} bytes; {first_line}). Copy or '
                          'download it again.') from error


def temporary_directory(prefix: str = 'repnext_mm_') -> tempfile.TemporaryDirectory:
    """A self-deleting scratch directory for intermediate files (e.g. ONNX models to time)."""
    return tempfile.TemporaryDirectory(prefix=prefix)
