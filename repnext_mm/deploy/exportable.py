"""One traceable ``forward(image) -> tuple[Tensor, ...]`` per task, for ONNX and Core ML."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repnext_mm.apis.model import Task
from .deployed_io import CLASSIFIER_OUTPUTS, SEG_MAP_OUTPUT, SEGMENTOR_OUTPUTS
from .detector_graph import DetectorGraph


class ExportWrapper(nn.Module):
    """One traceable ``forward(image) -> tuple[Tensor, ...]`` for every task.

    Args:
        model: Classifier, segmentor, detector or bare backbone.
        task: Its task (see :func:`~repnext_mm.apis.model.model_task`).
        backbone_only: Export only ``model.backbone`` (all its configured stage outputs).
        seg_argmax: Segmentor only: also output the argmax class map ``seg_map``.

    Outputs (names in :mod:`.deployed_io`): a detector gives its whole inference
    (:class:`.detector_graph.DetectorGraph`: ``boxes``, ``scores``, ``labels``, ``masks``); a classifier gives ``logits`` and their softmax
    ``scores`` ``[B, C]`` (mmpretrain's ``pred_score``); a segmentor gives ``seg_logits``
    ``[B, C, H, W]`` resized to the input as mmseg resizes them (bilinear, the decode head's
    ``align_corners``), and with ``seg_argmax`` ``seg_map`` ``[B, H, W]`` int64 (the class per
    pixel; a one-channel head: sigmoid above its ``threshold``, as mmseg's).
    """

    def __init__(self, model: nn.Module, task: Task, backbone_only: bool = False,
                 seg_argmax: bool = False) -> None:
        super().__init__()
        self.kind = 'backbone' if backbone_only or task == 'backbone' else task
        if self.kind == 'detector':
            self.net = DetectorGraph(model)
        else:
            self.net = model.backbone if backbone_only and task != 'backbone' else model
        self.seg_argmax = seg_argmax and self.kind == 'segmentor'
        self.output_names = self._output_names()

    def _output_names(self) -> list[str]:
        if self.kind == 'detector':
            return list(self.net.output_names)
        if self.kind == 'classifier':
            return list(CLASSIFIER_OUTPUTS)
        if self.kind == 'segmentor':
            return list(SEGMENTOR_OUTPUTS) + ([SEG_MAP_OUTPUT] if self.seg_argmax else [])
        indices = getattr(self.net, 'out_indices', None)
        if indices is None:
            return ['features']
        return [f'stage{i}' for i in indices]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        if self.kind == 'backbone':
            out = self.net(image)
            return tuple(out) if isinstance(out, (list, tuple)) else (out,)
        if self.kind == 'detector':
            return self.net(image)
        if self.kind == 'classifier':
            return self._classifier_outputs(image)
        if self.kind == 'segmentor':
            return self._segmentor_outputs(image)
        return (self.net(image, mode='tensor'),)

    def _classifier_outputs(self, image: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.net(image, mode='tensor')
        return logits, logits.softmax(dim=1)

    def _segmentor_outputs(self, image: Tensor) -> tuple[Tensor, ...]:
        # mmseg's decode head predicts at stride 4 and resizes to the input in predict().
        logits = F.interpolate(self.net(image, mode='tensor'), size=image.shape[-2:],
                               mode='bilinear', align_corners=self.net.align_corners)
        if not self.seg_argmax:
            return (logits,)
        if logits.shape[1] == 1:
            seg_map = (logits.sigmoid() > self.net.decode_head.threshold)[:, 0].long()
        else:
            seg_map = logits.argmax(dim=1)
        return logits, seg_map


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
