"""One traceable ``forward(image) -> tuple[Tensor, ...]`` per task, for ONNX and Core ML."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from repnext_mm.apis.model import Task
from repnext_mm.utils.errors import InputError


class ExportWrapper(nn.Module):
    """One traceable ``forward(image) -> tuple[Tensor, ...]`` for every task.

    Args:
        model: Classifier, segmentor, detector or bare backbone.
        task: Its task (see :func:`~repnext_mm.apis.model.model_task`).
        backbone_only: Export only ``model.backbone`` (all its configured stage outputs). Required
            for detectors, whose post-processing (NMS) does not belong in a traced graph.
    """

    def __init__(self, model: nn.Module, task: Task, backbone_only: bool = False) -> None:
        super().__init__()
        if task == 'detector' and not backbone_only:
            raise InputError('a whole detector cannot be exported or timed as one traced graph '
                              '(NMS and box decoding are data dependent); pass --backbone-only, '
                              'or use --dataset in tools/analysis/benchmark.py for end-to-end '
                              'images/s')
        self.kind = 'backbone' if backbone_only or task == 'backbone' else task
        self.net = model.backbone if backbone_only and task != 'backbone' else model
        self.output_names = self._output_names()

    def _output_names(self) -> list[str]:
        if self.kind == 'classifier':
            return ['logits']
        if self.kind == 'segmentor':
            return ['seg_logits']
        indices = getattr(self.net, 'out_indices', None)
        if indices is None:
            return ['features']
        return [f'stage{i}' for i in indices]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        if self.kind == 'backbone':
            out = self.net(image)
            return tuple(out) if isinstance(out, (list, tuple)) else (out,)
        return (self.net(image, mode='tensor'),)


@torch.no_grad()
def fold_input_channel_scale(wrapper: ExportWrapper, scale: Tensor) -> bool:
    """Multiplies the input channels of the first convolution by ``scale`` (in place).

    Exact for a conv with zero padding (a scaled zero is still zero). Used to absorb the
    per-channel part of the std that Core ML's single-scalar ``ImageType.scale`` cannot express.

    Returns:
        ``True`` if folded, ``False`` if the first layer is not a plain conv on the 3 input channels.
    """
    stem = getattr(wrapper.net, 'stem', None) or getattr(getattr(wrapper.net, 'backbone', None),
                                                        'stem', None)
    first = stem[0] if isinstance(stem, nn.Sequential) and len(stem) else None
    conv = getattr(first, 'conv', None)
    if not isinstance(conv, nn.Conv2d) or conv.in_channels != scale.numel() or conv.groups != 1 \
            or conv.padding_mode != 'zeros':
        return False
    conv.weight.mul_(scale.to(conv.weight).view(1, -1, 1, 1))
    return True
