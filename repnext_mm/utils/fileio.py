"""Outputs that are either complete or absent: atomic writes of files and directories.

Every output (checkpoint, exported model, report, image, ``.mlpackage`` directory) is first
written under a temporary name beside its destination and then renamed over it with
``os.replace``, which is atomic within one file system: a reader, or a later ``--resume``, sees
the previous output or the whole new one, never a part.

Temporary names follow one scheme, ``.{name}.{8 hex digits}.pid{pid}-{host}.tmp{suffix}``
(``pid`` is the writer's process, ``host`` 8 hex digits of its machine's name, ``suffix`` the
destination's own, e.g. ``.epoch_3.pth.1f0c9a2e.pid4242-5d41402a.tmp.pth``):

* hidden (leading dot), so ``glob.glob('*.pth')``, shell globs and
  :func:`repnext_mm.engine.resume.latest_checkpoint` skip it, and MMEngine's checkpoint discovery
  (which reads ``last_checkpoint``) never names it;
* in the destination's directory, so the rename never crosses a file system;
* ending in the destination's suffix, because some writers choose the format by it (coremltools
  only saves an ML program to a ``.mlpackage`` path);
* owned: a process killed during a write (SIGKILL, power loss) leaves its temporary behind;
  every later write into that folder, and every tool's output check of it
  (:func:`check_output_path`, :func:`check_output_dir`), removes the temporaries whose writer is
  a process of this machine that no longer runs (:func:`remove_orphaned_temporaries`), and
  the next successful write of the same destination also those untouched for a while
  (:func:`remove_stale_temporaries`: a writer on another machine, or one from before the
  scheme). A tool stopped by SIGTERM removes its temporaries itself
  (:func:`remove_active_temporaries`, called by :func:`repnext_mm.cli.run_cli`'s handler); a
  Ctrl-C unwinds through :func:`atomic_write`'s own cleanup.

Files are created with ``open()``, so they get the usual mode (``0o666`` minus the umask), not the
``0o600`` of :func:`tempfile.mkstemp`. Bytes written by this module are fsynced before the rename.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import time
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Literal

from repnext_mm.utils.errors import ENVIRONMENT_ERRNO_FIXES, InputError, OutputWriteError

#: A temporary of the destination untouched for this long belongs to a writer that died; a
#: younger one may be another process writing the same destination right now, so it is kept.
#: A live writer modifies its temporary as it writes; its longest quiet phase here (the ONNX
#: parity check between writing the file and renaming it) takes seconds. Should a writer still
#: lose its temporary, its rename fails with FileNotFoundError: an error, never a bad output.
STALE_TEMPORARY_AGE_S = 60.0

OutputKind = Literal['file', 'dir']
#: Image file suffixes read from folders and accepted for image outputs (OpenCV decodes and
#: encodes them): the CAM tools' inputs and outputs, the int8 calibration folders.
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


#: The owner part of a temporary's name (``pid{pid}-{host}``), parsed back by the sweep.
_OWNER_MARK = '.pid'
_ORPHAN_NAME = re.compile(r'\.(?P<name>.+)\.[0-9a-f]{8}\.pid(?P<pid>\d+)-(?P<host>[0-9a-f]{8})'
                          r'\.tmp(?P<suffix>.*)')
#: Temporaries being written by this process (path -> owner pid), for the SIGTERM cleanup.
_ACTIVE_TEMPORARIES: dict[Path, int] = {}


def _host_tag() -> str:
    return f'{zlib.crc32(socket.gethostname().encode()):08x}'


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh temporary sibling of ``path``: ``.{name}.{8 hex}.pid{pid}-{host}.tmp{suffix}``
    (see the module docstring)."""
    path = Path(path)
    return path.parent / (f'.{path.name}.{secrets.token_hex(4)}.pid{os.getpid()}-{_host_tag()}'
                          f'.tmp{path.suffix}')


def _temporary_name_pattern(path: Path) -> re.Pattern[str]:
    # Matches exactly the names temporary_path(path) produces (and those of the scheme before
    # the owner part), and no other destination's.
    return re.compile(rf'\.{re.escape(path.name)}\.[0-9a-f]{{8}}(?:\.pid\d+-[0-9a-f]{{8}})?'
                      rf'\.tmp{re.escape(path.suffix)}')


def _process_is_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, another user's
        return False
    return False


def remove_orphaned_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Removes the temporaries in ``folder`` whose writer, a process of this machine, is gone.

    Any destination's: a write killed by SIGKILL never cleans up, and its destination may never
    be written again. A temporary of a running process (or of another machine) is kept.
    Errors are ignored (cleaning up never fails the caller).

    Returns:
        The temporaries that were removed.
    """
    folder = Path(folder)
    try:
        names = [name for name in os.listdir(folder) if name.startswith('.')
                 and _OWNER_MARK in name]
    except OSError:
        return []
    return _remove_orphans(folder, names)


def _remove_orphans(folder: Path, names: list[str]) -> list[Path]:
    host, removed = _host_tag(), []
    for name in names:
        match = _ORPHAN_NAME.fullmatch(name)
        if (match is None or match['host'] != host
                or Path(match['name']).suffix != match['suffix']
                or not _process_is_gone(int(match['pid']))):
            continue
        candidate = folder / name
        try:
            _remove(candidate)
            removed.append(candidate)
        except OSError:  # vanished meanwhile (another cleaner), or not ours to delete
            continue
    return removed


def remove_active_temporaries() -> list[Path]:
    """Removes the temporaries this process is writing now (a tool stopped by SIGTERM: no
    ``finally`` runs then). Only this process's: a forked child shares the table, not the
    files."""
    removed = []
    for tmp, owner in list(_ACTIVE_TEMPORARIES.items()):
        if owner == os.getpid() and (tmp.exists() or tmp.is_symlink()):
            with contextlib.suppress(OSError):
                _remove(tmp)
                removed.append(tmp)
    return removed


def _last_modified(path: Path) -> float:
    """Newest mtime in ``path`` (a directory's own mtime misses writes into its subfolders)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def remove_stale_temporaries(path: str | os.PathLike,
                             min_age_s: float = STALE_TEMPORARY_AGE_S) -> list[Path]:
    """Removes temporaries of ``path`` (files or directories) left by interrupted writes.

    Only names of ``path``'s own scheme are touched, never another destination's temporaries.
    A temporary modified less than ``min_age_s`` seconds ago is kept: it may belong to another
    process writing the same destination now (deleting it would fail that write). Errors are
    ignored, since cleaning up must never fail the write that triggered it.

    Temporaries of any destination in the folder whose writer is gone are removed too
    (:func:`remove_orphaned_temporaries`).

    Returns:
        The temporaries that were removed.
    """
    path = Path(path)
    pattern = _temporary_name_pattern(path)
    prefix = f'.{path.name}.'
    try:
        # Runs after every write, so it must stay cheap in folders of many files (a data set):
        # os.listdir and a prefix test are C-speed; the patterns only see the few candidates.
        hidden = [name for name in os.listdir(path.parent) if name.startswith('.')]
    except OSError:
        return []
    removed = _remove_orphans(path.parent, [name for name in hidden if _OWNER_MARK in name])
    names = [name for name in hidden if name.startswith(prefix) and pattern.fullmatch(name)
             and path.parent / name not in removed]
    now = time.time()
    for candidate in (path.parent / name for name in names):
        try:
            if now - _last_modified(candidate) >= min_age_s:
                _remove(candidate)
                removed.append(candidate)
        except OSError:  # vanished meanwhile (another cleaner), or not ours to delete
            continue
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Calls ``write(tmp)`` and moves what it wrote to ``path`` only if it returned normally.

    Missing parent directories of ``path`` are created. If ``write`` raises (also
    ``KeyboardInterrupt``), the temporary is removed and ``path`` keeps its previous content.
    After a successful write, stale temporaries of ``path`` are removed
    (:func:`remove_stale_temporaries`).

    An ``OSError`` of the machine (no space, quota, read-only file system, permission:
    :data:`~repnext_mm.utils.errors.ENVIRONMENT_ERRNO_FIXES`) while creating the parents,
    writing or renaming becomes an :class:`~repnext_mm.utils.errors.OutputWriteError` naming
    ``path`` itself (the failing call named the temporary, or nothing); any other exception
    passes unchanged.

    Args:
        path: Final destination: a file, or a directory such as an ``.mlpackage``.
        write: Writes the complete output (a file or a directory) at the path it is given;
            that path does not exist yet and has ``path``'s suffix.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        OutputWriteError: The machine refused the write (an ``InputError`` and an ``OSError``).
        IsADirectoryError: ``write`` made a file but ``path`` is a directory.
        NotADirectoryError: ``write`` made a directory but ``path`` is a file.
        (:func:`check_output_path` reports both as an :class:`InputError` before any work.)
    """
    path = Path(path)
    tmp = temporary_path(path)
    _ACTIVE_TEMPORARIES[tmp] = os.getpid()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write(tmp)
            if not (tmp.exists() or tmp.is_symlink()):
                raise FileNotFoundError(f'the writer of {path} returned without creating {tmp}')
            if tmp.is_dir():
                _replace_directory(tmp, path)
            elif path.is_dir():
                raise IsADirectoryError(f'{path} is a directory; a file cannot replace it')
            else:
                os.replace(tmp, path)
        finally:
            _ACTIVE_TEMPORARIES.pop(tmp, None)
            if tmp.exists() or tmp.is_symlink():  # the write failed: leave no temporary behind
                with contextlib.suppress(OSError):  # keep the write's own exception
                    _remove(tmp)
    except OutputWriteError:
        raise  # a nested atomic write (a file inside a directory output) named its file
    except OSError as error:
        if error.errno not in ENVIRONMENT_ERRNO_FIXES:
            raise
        raise OutputWriteError(path, error) from error
    remove_stale_temporaries(path)
    return path


def _replace_directory(src: Path, dst: Path) -> None:
    """Moves directory ``src`` to ``dst``, replacing an existing directory ``dst``.

    ``os.replace`` cannot replace a non-empty directory, so the old one is first renamed aside
    (under a temporary name of ``dst``, so a run killed in between leaves a temporary the next
    write removes); between the two renames ``dst`` is briefly absent, never partial.
    """
    if not dst.exists():
        os.replace(src, dst)
        return
    if not dst.is_dir():
        raise NotADirectoryError(f'{dst} is a file; a directory output does not replace it')
    old = temporary_path(dst)
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except OSError:
        os.replace(old, dst)  # put the previous output back
        raise
    shutil.rmtree(old, ignore_errors=True)


class _ErrorRecordingFile:
    """A binary file that remembers the last ``OSError`` of its ``write`` / ``flush``.

    ``torch.save`` into a file object turns the file's ``OSError`` (a full disk) into a
    ``RuntimeError`` ("unexpected pos ...") that names neither the cause nor the path; the
    recorded error lets :func:`_write_durably` raise the real one.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _write_durably(fill: Callable[[BinaryIO], None], fsync: bool = True
                   ) -> Callable[[Path], None]:
    """An :func:`atomic_write` callback that creates the file, fills it and fsyncs it."""
    def write(tmp: Path) -> None:
        # open() rather than mkstemp: the file gets the umask's mode, like any other output.
        with open(tmp, 'xb') as file:
            recording = _ErrorRecordingFile(file)
            try:
                fill(recording)  # type: ignore[arg-type]
            except Exception as error:
                if recording.error is None or recording.error is error:
                    raise
                raise recording.error from error  # the writer hid the file's own error
            file.flush()
            if fsync:
                os.fsync(file.fileno())  # on disk before the rename makes it visible
    return write


def atomic_write_bytes(data: bytes, path: str | os.PathLike, fsync: bool = True) -> Path:
    """Writes ``data`` to ``path`` atomically (checkpoints, encoded images).

    Args:
        data: The bytes.
        path: Destination.
        fsync: Flush the bytes to disk before the rename, so a power loss cannot leave an empty
            file under the final name. ``False`` for many small files that can be regenerated
            (a data set): the rename still makes each file appear whole to other processes.
    """
    return atomic_write(path, _write_durably(lambda file: file.write(data), fsync))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(text.encode('utf-8'), path)


def atomic_write_json(obj: Any, path: str | os.PathLike, **dump_options: Any) -> Path:
    """Writes ``obj`` as JSON plus a final newline to ``path`` atomically.

    Args:
        obj: A JSON-serialisable object.
        path: Destination file.
        **dump_options: Passed to :func:`json.dumps`; the default is ``indent=2``.
    """
    text = json.dumps(obj, **{'indent': 2, **dump_options})
    return atomic_write_text(text + '\n', path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, fsynced."""
    import torch  # here, so that writing plain files does not import torch

    return atomic_write(path, _write_durably(lambda file: torch.save(obj, file)))


def check_output_path(path: str | os.PathLike, force: bool, flag: str = '--force',
                      kind: OutputKind = 'file') -> Path:
    """Fails early, before any work, if the output cannot or must not be written to ``path``.

    Args:
        path: The output path.
        force: Whether overwriting an existing output of the same kind was asked for.
        flag: The option that sets ``force``, named in the message.
        kind: ``'file'`` for a file output, ``'dir'`` for a directory output (``.mlpackage``,
            a generated package). An output never replaces an existing path of the other
            kind, even with ``force``.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        InputError: ``path`` exists as the other kind, exists and ``force`` is false, or its
            parent directory does not exist, is a file or lies under one, or takes no new file
            (read-only file system, ``/proc``, no permission: probed by creating and removing an
            empty temporary, since ``os.access`` says yes to all of them as root).
    """
    if kind not in ('file', 'dir'):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    path = Path(path)
    if kind == 'file' and path.is_dir():
        raise InputError(f'{path} is a directory; pass a file path for this output (e.g. a new '
                         f'file name inside it; {flag} does not replace a directory with a file). '
                         'Nothing was written.')
    if kind == 'dir' and path.exists() and not path.is_dir():
        raise InputError(f'{path} is a file, but this output is a directory; pass a path that '
                         f'does not exist or remove the file ({flag} does not replace a file '
                         'with a directory). Nothing was written.')
    if path.exists() and not force:
        raise InputError(f'{path} already exists; pass {flag} to overwrite it, or choose another '
                         'output path. Nothing was written.')
    parent = path.parent
    remove_orphaned_temporaries(parent)
    if not parent.is_dir():
        existing, where = _file_in_the_way(parent)
        if existing.is_dir():
            raise InputError(f'the output directory {parent} does not exist; create it first. '
                             'Nothing was written.')
        raise InputError(f'the output directory {parent} {where}; choose an output path in a '
                         'directory. Nothing was written.')
    _require_writable(parent, str(path))
    return path


def _file_in_the_way(path: Path) -> tuple[Path, str]:
    """The nearest existing ``path`` or ancestor, and (if it is a file) how it blocks ``path``:
    ``'is a file'`` or ``'lies under the file ...'``."""
    absolute = path.absolute()
    existing = _nearest_existing(absolute)
    return existing, 'is a file' if existing == absolute else f'lies under the file {existing}'


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``lexists``: a dangling link counts)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or '.')


def _require_writable(folder: Path, subject: str) -> None:
    """Creates and removes a temporary file in ``folder``; one line if that fails.

    ``os.access`` is not enough: as root it says yes to a read-only mount and to ``/proc``.

    Raises:
        InputError: ``'<subject>: cannot write into <folder> (<reason> [Errno N]); ...'``.
    """
    probe = temporary_path(folder / '.write-check')
    try:
        with open(probe, 'xb'):
            pass
        probe.unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        raise InputError(f'{subject}: cannot write into {folder} ({reason} [Errno '
                         f'{error.errno}]); choose a writable location. Nothing was written.'
                         ) from None


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Fails before any work if ``path`` cannot become (or be written into as) a folder.

    Refused: ``path`` is a file, lies under a file, or its nearest existing ancestor (the folder
    itself if it exists) cannot take a new file (read-only file system, ``/proc``, no
    permission). The check writes nothing but an empty temporary file it removes at once.

    Args:
        path: The output folder; it may not exist yet (the tools create it).
        what: How the user named it, for the message, e.g. ``'--work-dir'``.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        InputError: ``path`` is not usable as an output folder; the message names the fix.
    """
    path = Path(path)
    existing, where = _file_in_the_way(path)
    if not existing.is_dir():
        raise InputError(f'{what} {path} {where}; choose a folder path (or move the file away). '
                         'Nothing was written.')
    _require_writable(existing, f'{what} {path}')
    remove_orphaned_temporaries(path)
    return path
