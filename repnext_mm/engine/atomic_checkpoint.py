"""Checkpoint files that are either complete or absent.

MMEngine 0.10.7 saves a checkpoint by opening its final path with ``'wb'`` and writing the bytes
(``LocalBackend.put``): a run killed or interrupted while it writes leaves a truncated
``epoch_N.pth`` under the real name, which ``--resume`` or ``tools/test.py`` later fails on.
:class:`AtomicLocalBackend` writes through :func:`repnext_mm.utils.fileio.atomic_write_bytes`: a
hidden temporary file in the same directory, fsynced and renamed over the final path
(``os.replace`` is atomic on POSIX and Windows), so a reader only ever sees the previous file or
the whole new one.

MMEngine's ``CheckpointHook`` also deletes the oldest checkpoint (``max_keep_ckpts``) *before* it
writes the new one: a write that then fails (a full disk) would leave no checkpoint at all. The
backend defers such a deletion until the next write into the same folder has succeeded.
"""
from __future__ import annotations

import os
from pathlib import Path

from mmengine.fileio import register_backend
from mmengine.fileio.backends import LocalBackend

from repnext_mm.utils.fileio import atomic_write_bytes

ATOMIC_BACKEND_NAME = 'atomic_local'


class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend with atomic binary writes (:func:`atomic_write_bytes`).

    Selected with ``backend_args=dict(backend='atomic_local')``, e.g. on the ``CheckpointHook``;
    ``tools/train.py`` sets that for local work directories.
    """

    #: Deletions waiting for the next successful write, per folder. A class attribute: the
    #: hook that deletes and the runner that writes each get their own backend instance.
    _pending_removals: dict[str, list[str]] = {}

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write_bytes(obj, filepath)
        folder = os.path.dirname(os.path.abspath(filepath))
        for path in self._pending_removals.pop(folder, []):
            if os.path.abspath(path) != os.path.abspath(filepath) and os.path.isfile(path):
                super().remove(path)

    def remove(self, filepath: str | Path) -> None:
        """Deletes ``filepath`` after the next successful :meth:`put` into its folder."""
        if not os.path.isfile(filepath):
            super().remove(filepath)  # MMEngine's errors for a missing path or a directory
            return
        folder = os.path.dirname(os.path.abspath(filepath))
        self._pending_removals.setdefault(folder, []).append(str(filepath))


def register_atomic_backend() -> None:
    """Registers :class:`AtomicLocalBackend` under ``'atomic_local'`` (idempotent).

    No URI prefix is claimed: the default local backend stays what MMEngine uses elsewhere.
    """
    register_backend(ATOMIC_BACKEND_NAME, AtomicLocalBackend, force=True)
