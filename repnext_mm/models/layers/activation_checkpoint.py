"""Activation checkpointing of a single-input layer that may hold train-mode BatchNorms.

:func:`checkpointed` keeps only a layer's input for backward and runs the layer again inside
backward to rebuild what its gradients need (``torch.utils.checkpoint``, non-reentrant). Plain
checkpointing would update every train-mode BatchNorm's running statistics twice per step:
once in the forward pass and once in the recomputation. Here the recomputation runs under
:class:`BatchNormUpdatesPaused`, so the statistics move exactly as without checkpointing.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint


class BatchNormUpdatesPaused:
    """Context in which the train-mode BatchNorms of a module leave their buffers as they were.

    They still normalize with the batch statistics, so outputs and gradients are unchanged.
    Inside, their ``momentum`` is 0: the running mean and variance update to
    ``1 * running + 0 * batch``, which is exact in floating point, and ``momentum=None``
    (cumulative average) needs no special case. On exit ``momentum`` and the one buffer that
    still moved, ``num_batches_tracked``, get their old values back. Clearing
    ``track_running_stats`` instead would also stop the updates, but then the BatchNorm passes
    no running buffers to ``F.batch_norm``, saves fewer tensors for backward than in the forward
    pass, and the non-reentrant checkpoint rejects the recomputation (it matches saved tensors
    by position).

    Reusable: ``torch.utils.checkpoint`` enters the recomputation context once per backward
    pass through the layer, which happens more than once with ``retain_graph=True``.

    Args:
        module: The module whose BatchNorms (itself included) are paused.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._saved: list[tuple[_BatchNorm, float | None, Tensor | None]] = []

    def __enter__(self) -> BatchNormUpdatesPaused:
        # Chosen on entry: only the norms that would update now (eval or frozen ones do not).
        self._saved = [(m, m.momentum, None if m.num_batches_tracked is None
                        else m.num_batches_tracked.clone())
                       for m in self.module.modules()
                       if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
        for norm, _, _ in self._saved:
            norm.momentum = 0.0
        return self

    def __exit__(self, *exc_info: object) -> None:
        for norm, momentum, count in self._saved:
            norm.momentum = momentum
            if count is not None:
                norm.num_batches_tracked.copy_(count)
        self._saved = []


def records_graph(module: nn.Module, x: Tensor) -> bool:
    """Whether autograd records ``module(x)``: gradients are enabled and the input or a
    parameter of ``module`` requires grad.

    Otherwise nothing is saved for backward in the first place (e.g. under ``torch.no_grad()``,
    or a frozen stage fed an input that needs no gradient), and checkpointing would only add
    overhead.
    """
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in module.parameters()))


def _recompute_contexts(module: nn.Module) -> tuple[contextlib.AbstractContextManager,
                                                    BatchNormUpdatesPaused]:
    # (forward context, recomputation context) as torch.utils.checkpoint's context_fn returns.
    return contextlib.nullcontext(), BatchNormUpdatesPaused(module)


def checkpointed(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` with activation checkpointing: only ``x`` is kept for backward.

    The recomputation in backward leaves BatchNorm running statistics untouched (see
    :class:`BatchNormUpdatesPaused`), so one step updates them once, as without checkpointing.
    """
    return checkpoint(module, x, use_reentrant=False,
                      context_fn=functools.partial(_recompute_contexts, module))
