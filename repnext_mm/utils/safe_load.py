"""Lets ``torch.load(weights_only=True)`` (torch >= 2.6's default) read MMEngine checkpoints.

MMEngine 0.10.7 calls ``torch.load`` without ``weights_only``, so under torch >= 2.6 its own
loader refuses checkpoints whose ``meta`` holds numpy values or the message hub's history
buffers, and ``--resume`` breaks. Rather than unpickling arbitrary objects, the few plain-data
types those checkpoints contain are allow-listed as safe globals.
"""
from __future__ import annotations

import pickle

import numpy as np
import torch


HISTORY_BUFFER_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


def _history_buffer_getattr(owner: type, name: str):
    """Stands in for ``getattr`` during weights-only loads, resolving only what MMEngine needs.

    A HistoryBuffer pickles its ``statistics_methods`` as ``getattr(HistoryBuffer, 'mean')`` etc.
    Allow-listing the real ``getattr`` would let a checkpoint reach any attribute of any allowed
    object; this resolves exactly the registered statistics methods and refuses everything else.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    # The built-in statistics are registered lazily (on the first HistoryBuffer), so the class
    # registry can still be empty in a process that only loads checkpoints.
    allowed = HISTORY_BUFFER_STATISTICS | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'weights-only checkpoint load refused getattr({owner!r}, {name!r}): only '
                     'HistoryBuffer statistics methods are allowed')


def checkpoint_safe_globals() -> list:
    """The non-tensor types found in MMEngine training checkpoints (meta, message hub)."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if np.lib.NumpyVersion(np.__version__) >= '2.0.0':
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    dtype_classes = [type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDGUSV']
    dtype_classes += [type(np.dtype('O'))]
    return [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
        multiarray._reconstruct,
        multiarray.scalar,
        *sorted(set(dtype_classes), key=lambda t: t.__name__),
    ]


def register_checkpoint_safe_globals() -> None:
    """Registers :func:`checkpoint_safe_globals` with ``torch.serialization`` (idempotent)."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 loads these without an allow-list
        return
    add(checkpoint_safe_globals())
