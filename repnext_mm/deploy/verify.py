"""Checking that a fused or exported model computes what the original computes.

A reproducible input, each task's raw tensor outputs (before post-processing), and their
largest relative difference: what the reparameterize and export tools verify before writing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from repnext_mm.apis.model import model_task
from repnext_mm.models.input_sizes import CLASSIFIER_INPUT_SIZE, DENSE_INPUT_SIZE
from repnext_mm.utils.errors import InputError

#: Input size used for checks and exports when the user gives none (height, width), by kind.
DEFAULT_SHAPES: dict[str, tuple[int, int]] = {
    'classifier': CLASSIFIER_INPUT_SIZE, 'detector': DENSE_INPUT_SIZE,
    'segmentor': DENSE_INPUT_SIZE, 'backbone': DENSE_INPUT_SIZE}


#: Largest relative difference accepted between an original and a fused/exported model.
RELATIVE_TOLERANCE = 1e-4
#: Smallest input side: the backbone downsamples 32x, so a smaller input has no last-stage
#: feature map.
MIN_INPUT_SIZE = 32


def check_input_shape(shape: Sequence[int] | None, option: str = '--shape') -> None:
    """Refuses an input ``(height, width)`` the backbone cannot run on, before any work.

    Args:
        shape: The requested size, or ``None`` (the tool's default, always valid).
        option: The option that gave it, named in the message.

    Raises:
        InputError: A side below :data:`MIN_INPUT_SIZE`.
    """
    if shape is not None and min(shape) < MIN_INPUT_SIZE:
        raise InputError(f'{option} must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} (the '
                         f'backbone downsamples 32x), got {"x".join(map(str, shape))}')


def example_inputs(shape: Sequence[int], batch_size: int = 1, seed: int = 0) -> Tensor:
    """A reproducible normalized input batch ``(N, 3, H, W)`` (values as after data preprocessing)."""
    height, width = shape
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, height, width, generator=generator)


def detection_samples(inputs: Tensor) -> list:
    """Minimal ``DetDataSample``s (image meta only) for a detector's tensor forward."""
    from mmdet.structures import DetDataSample

    height, width = inputs.shape[-2:]
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
    return [DetDataSample(metainfo=meta) for _ in range(inputs.shape[0])]


@dataclass
class TensorForward:
    """Flattened raw outputs of a model (before any post-processing).

    Attributes:
        outputs: Every output tensor, in a fixed order.
        proposals: For two-stage detectors, the region proposals that were fed to the RoI head;
            pass them to the forward of the model being compared so both RoI heads see the same
            boxes (otherwise a near-tie in the RPN's top-k could select different proposals).
    """
    outputs: list[Tensor]
    proposals: Any = None


def _flatten(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flatten(v)]
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [t for v in value for t in _flatten(v)]
    return []


@torch.no_grad()
def tensor_forward(model: nn.Module, inputs: Tensor, proposals: Any = None) -> TensorForward:
    """The model's ``mode='tensor'`` outputs, computed deterministically for every task.

    Classifiers and segmentors run ``model(inputs, mode='tensor')`` (logits). Two-stage detectors
    return the multi-level features, the RPN's raw scores and box deltas, and the RoI head's raw
    outputs on a fixed set of proposals (those of the first model compared), which covers exactly
    what ``mode='tensor'`` computes while keeping NMS/top-k ties out of the comparison.
    """
    task = model_task(model)
    if task == 'backbone':
        return TensorForward(_flatten(model(inputs)))
    if task == 'detector' and getattr(model, 'with_rpn', False) and hasattr(model, 'roi_head'):
        samples = detection_samples(inputs)
        feats = model.extract_feat(inputs)
        rpn_raw = model.rpn_head(feats)
        if proposals is None:
            proposals = model.rpn_head.predict(feats, samples, rescale=False)
        roi_raw = model.roi_head.forward(feats, proposals, samples)
        return TensorForward(_flatten((feats, rpn_raw, roi_raw)), proposals)
    if task == 'detector':
        return TensorForward(_flatten(model(inputs, detection_samples(inputs), mode='tensor')))
    return TensorForward(_flatten(model(inputs, mode='tensor')))


@dataclass
class Difference:
    """How far two sets of outputs are apart.

    Attributes:
        max_abs: Largest absolute difference over all elements of all outputs.
        max_rel: Largest per-output ``max |a - b| / max |b|``.
        worst_output: Index of the output with the largest relative difference.
    """
    max_abs: float
    max_rel: float
    worst_output: int

    def within(self, tolerance: float = RELATIVE_TOLERANCE) -> bool:
        return self.max_rel <= tolerance

    def __str__(self) -> str:
        return (f'max relative difference {self.max_rel:.3e} (output #{self.worst_output}), '
                f'max absolute difference {self.max_abs:.3e}')


def compare_outputs(actual: Sequence[Tensor], expected: Sequence[Tensor]) -> Difference:
    """Compares two output lists element-wise (same count and shapes required)."""
    if len(actual) != len(expected):
        raise InputError(f'the compared models return {len(actual)} and {len(expected)} outputs')
    max_abs, max_rel, worst = 0.0, 0.0, 0
    for index, (a, b) in enumerate(zip(actual, expected)):
        a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
        if a.shape != b.shape:
            raise InputError(f'output #{index} has shape {tuple(a.shape)} vs {tuple(b.shape)}')
        if b.numel() == 0:
            continue
        abs_diff = (a - b).abs().max().item()
        rel = abs_diff / max(b.abs().max().item(), 1e-12)
        max_abs = max(max_abs, abs_diff)
        if rel > max_rel:
            max_rel, worst = rel, index
    return Difference(max_abs, max_rel, worst)
