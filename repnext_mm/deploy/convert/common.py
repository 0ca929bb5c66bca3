"""What every kind of conversion returns, and the one completeness check they share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from torch import Tensor

from repnext_mm.utils.errors import InputError
from repnext_mm.utils.state_dict import compare_state_dicts


@dataclass
class ConversionResult:
    """Weights in this package's layout and how each source entry got there.

    Attributes:
        state_dict: Converted weights, in the target model's order.
        arch: RepNeXt arch of the weights (``'m0'`` .. ``'m5'``).
        num_classes: Classes of the source's head (``None`` without a head).
        mapped: ``{source key: our key}`` of every renamed entry (its value unchanged, except
            where a folded BatchNorm went into it).
        dropped: ``{source key: reason}`` of every entry deliberately left out.
        folded: ``{source key: our key}`` of the BatchNorm entries folded into a neighbouring
            convolution (the fused TorchScript release).
    """
    state_dict: dict[str, Tensor]
    arch: str
    num_classes: int | None
    mapped: dict[str, str]
    dropped: dict[str, str] = field(default_factory=dict)
    folded: dict[str, str] = field(default_factory=dict)


def examples(keys: Iterable[str], limit: int = 4) -> str:
    """``'a, b, c, d (+5 more)'``: a short list for one-line messages."""
    keys = list(keys)
    return ', '.join(keys[:limit]) + (f' (+{len(keys) - limit} more)' if len(keys) > limit else '')


def check_complete(converted: Mapping[str, Tensor], expected: Mapping[str, Any],
                   mapped: Mapping[str, str], what: str, hint: str | None = None
                   ) -> dict[str, Tensor]:
    """``converted`` in ``expected``'s order, once it fills ``expected`` exactly.

    Args:
        converted: Our names -> tensors.
        expected: The target model's state dict (tensors or meta tensors: only shapes are read).
        mapped: ``{source key: our key}``, to name the source key of a mis-shaped entry.
        what: The model in messages, e.g. ``'RepNeXt-M3 Mask R-CNN'``.
        hint: The fix to suggest (default: check the file).

    Raises:
        InputError: An entry is missing, has no place, or has the wrong shape (named).
    """
    mismatch = compare_state_dicts(expected, converted)
    if mismatch:
        source_of = {ours: source for source, ours in mapped.items()}
        renamed = [source_of[key] for key, _, _ in mismatch.wrong_shape
                   if source_of.get(key, key) != key]
        sources = f' (source keys: {examples(renamed)})' if renamed else ''
        raise InputError(f'the checkpoint does not form a complete {what}: {mismatch.summary()}'
                         f'{sources}. {hint or "Is the file complete and unmodified?"}')
    return {key: converted[key] for key in expected if key in converted}
