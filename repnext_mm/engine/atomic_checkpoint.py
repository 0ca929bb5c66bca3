"""Checkpoint files that are either complete or absent.

MMEngine 0.10.7 saves a checkpoint by opening its final path with ``'wb'`` and writing the bytes
(``LocalBackend.put``): a run killed or interrupted while it writes leaves a truncated
``epoch_N.pth`` under the real name, which ``--resume`` or ``tools/test.py`` later fails on.
:class:`AtomicLocalBackend` writes to a hidden temporary file in the same directory, flushes it to
disk and renames it over the final path (``os.replace`` is atomic on POSIX and Windows), so a
reader only ever sees the previous file or the whole new one.
"""
from __future__ import annotations

import os
import os.path as osp
import tempfile
from pathlib import Path

from mmengine.fileio import register_backend
from mmengine.fileio.backends import LocalBackend

ATOMIC_BACKEND_NAME = 'atomic_local'
# Temporary files start with this prefix and end in TEMP_SUFFIX, so globs for '*.pth' and
# MMEngine's checkpoint discovery never pick one up.
TEMP_PREFIX = '.'
TEMP_SUFFIX = '.part'


def atomic_write_bytes(data: bytes, filepath: str | Path) -> None:
    """Writes ``data`` to ``filepath`` so that the path never holds a partial file.

    The bytes go to a temporary file beside the target, are fsynced, and the temporary file is
    renamed over the target. On any exception (``KeyboardInterrupt`` included) the temporary file
    is removed and the target keeps its previous content, if it had any.
    """
    filepath = os.fspath(filepath)
    directory = osp.dirname(osp.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(
        prefix=f'{TEMP_PREFIX}{osp.basename(filepath)}.', suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, 'wb') as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, filepath)
    except BaseException:
        if osp.exists(temp_path):
            os.remove(temp_path)
        raise


class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend with atomic binary writes (:func:`atomic_write_bytes`).

    Selected with ``backend_args=dict(backend='atomic_local')``, e.g. on the ``CheckpointHook``;
    ``tools/train.py`` sets that for local work directories.
    """

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write_bytes(obj, filepath)


def register_atomic_backend() -> None:
    """Registers :class:`AtomicLocalBackend` under ``'atomic_local'`` (idempotent).

    No URI prefix is claimed: the default local backend stays what MMEngine uses elsewhere.
    """
    register_backend(ATOMIC_BACKEND_NAME, AtomicLocalBackend, force=True)
