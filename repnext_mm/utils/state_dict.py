"""Comparing a checkpoint's state dict with a model's: one report of what does not fit."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

#: Where MMEngine (``state_dict``), timm and the authors (``model``), and DDP wrappers
#: (``module``) keep the weights of a checkpoint.
STATE_DICT_KEYS = ('state_dict', 'model', 'module')
#: How many example keys a mismatch report names per kind.
EXAMPLES = 3


def extract_state_dict(checkpoint: Mapping) -> Mapping:
    """The weights of an MMEngine (``state_dict``) or timm / authors' (``model``) checkpoint."""
    for key in STATE_DICT_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if hasattr(value, 'shape') else None


def _examples(keys: Sequence[str], limit: int | None = EXAMPLES) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (', ...' if limit is not None and len(keys) > limit else '')


@dataclass
class StateDictMismatch:
    """How a checkpoint's state dict differs from a model's.

    Attributes:
        missing: Model entries the checkpoint lacks.
        unexpected: Checkpoint entries the model has no place for.
        wrong_shape: ``(key, checkpoint shape, model shape)`` of entries present in both.
    """
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    @property
    def keys(self) -> list[str]:
        return [*self.missing, *self.unexpected, *(key for key, _, _ in self.wrong_shape)]

    def summary(self, limit: int | None = EXAMPLES) -> str:
        """``'2 missing (e.g. a, b), 1 with the wrong shape (e.g. c: checkpoint (3,) vs ...)'``.

        Args:
            limit: Keys named per kind; ``None`` names every key (without "e.g.").
        """
        eg = 'e.g. ' if limit is not None else ''
        parts = []
        if self.missing:
            parts.append(f'{len(self.missing)} missing ({eg}{_examples(self.missing, limit)})')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} unexpected '
                         f'({eg}{_examples(self.unexpected, limit)})')
        if self.wrong_shape:
            shapes = [f'{k}: checkpoint {c} vs model {m}' for k, c, m in self.wrong_shape]
            parts.append(f'{len(shapes)} with the wrong shape ({eg}{"; ".join(shapes[:limit])}'
                         + ('; ...' if limit is not None and len(shapes) > limit else '') + ')')
        return ', '.join(parts)

    def split(self, prefixes: Sequence[str]) -> tuple['StateDictMismatch', 'StateDictMismatch']:
        """``(allowed, rest)``: the entries under ``prefixes`` (module names) and all others."""
        def allowed(key: str) -> bool:
            return any(key == p or key.startswith(p.rstrip('.') + '.') or not p for p in prefixes)

        inside, outside = StateDictMismatch(), StateDictMismatch()
        for name in ('missing', 'unexpected', 'wrong_shape'):
            for item in getattr(self, name):
                key = item[0] if isinstance(item, tuple) else item
                getattr(inside if allowed(key) else outside, name).append(item)
        return inside, outside


def compare_state_dicts(model_state: Mapping[str, Any], checkpoint_state: Mapping[str, Any]
                        ) -> StateDictMismatch:
    """What keeps ``checkpoint_state`` from loading strictly where ``model_state`` came from."""
    return StateDictMismatch(
        # torch's strict load starts a missing BatchNorm batch counter at 0 (older checkpoints).
        missing=[k for k in model_state
                 if k not in checkpoint_state and not k.endswith('num_batches_tracked')],
        unexpected=[k for k in checkpoint_state if k not in model_state],
        wrong_shape=[(k, _shape(v), _shape(model_state[k])) for k, v in checkpoint_state.items()
                     if k in model_state and _shape(v) != _shape(model_state[k])])
