"""One training run per work folder: a lock ``tools/train.py`` holds while it runs.

Two runs on one ``--work-dir`` would write the same dated log folder and the same
``epoch_N.pth`` names, each overwriting the other's checkpoints. The lock is an ``flock`` on
``<work_dir>/.train.lock``, a file that names its holder (process id and host): the kernel
releases an ``flock`` when its holder exits for any reason, so a file left by a run killed with
SIGKILL is recognised as stale (present, but nobody holds it) and taken over with a note.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
from pathlib import Path
from typing import IO, Iterator

from repnext_mm.utils.errors import InputError

#: The lock file's name inside the work folder (hidden: checkpoint globs skip it).
LOCK_NAME = '.train.lock'


def holder_description() -> str:
    """What this process writes into the lock: ``pid <N> on <host>``."""
    return f'pid {os.getpid()} on {socket.gethostname()}'


def _open_locked(path: Path) -> IO[str] | None:
    """Opens ``path`` and takes its ``flock``; ``None`` if a live process holds it.

    Opened without truncating: a refused run must not erase the holder's record. A lock file
    removed and recreated by its releasing holder between our ``open`` and ``flock`` leaves us
    holding a lock on a deleted file; that is detected (the path names another inode) and retried.
    """
    while True:
        file = open(path, 'a+', encoding='utf-8')
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(file.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return file
        file.close()


def _read_holder(path: Path) -> str:
    try:
        return path.read_text(encoding='utf-8').strip() or 'an unknown process'
    except OSError:
        return 'an unknown process'


@contextlib.contextmanager
def work_dir_lock(work_dir: str | os.PathLike) -> Iterator[Path]:
    """Holds the training lock of ``work_dir`` (created if missing) for the ``with`` block.

    Yields:
        The lock file's path.

    Raises:
        InputError: A live run holds the lock; the message names its process id and host.
    """
    path = Path(work_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = path.exists()
    file = _open_locked(path)
    if file is None:
        raise InputError(f'{work_dir} is in use by another training run ({_read_holder(path)}); '
                         'wait for it to finish or stop it, or choose another --work-dir')
    try:
        file.seek(0)
        previous = file.read().strip()
        if stale:
            print(f'note: {path} was left by a run that is no longer running '
                  f'({previous or "unknown process"}); taking it over', file=sys.stderr)
        file.seek(0)
        file.truncate()
        file.write(holder_description() + '\n')
        file.flush()
        yield path
    finally:
        # Removed while still held, so no other run can lock the old file after we let go.
        with contextlib.suppress(OSError):
            path.unlink()
        file.close()
