"""A two-stage mmdet detector's whole inference as one traceable graph of standard ONNX operators.

:class:`DetectorGraph` runs what mmdet's ``TwoStageDetector.predict`` runs for one image -
backbone, neck, RPN proposals with their NMS, multi-level RoIAlign, the box head with its per-class
score threshold and NMS, and the mask head - calling the detector's own modules and box coders,
with the data-dependent steps written so that ``torch.onnx.export`` traces them into the standard
operators ``TopK``, ``NonMaxSuppression`` (torchvision's ``nms``) and ``RoiAlign`` (torchvision's
``roi_align``, ``half_pixel`` = mmcv's ``aligned=True``), with no custom-op library:

* every top-k has a size fixed at export (scores of removed candidates are set below any kept
  one and the kept ones are picked by a final comparison), so no ``TopK`` has a dynamic ``k``;
* the per-level RPN NMS and the per-class box NMS are one NMS over boxes shifted apart by their
  level or class (as mmdet's ``batched_nms`` does), with a shift fixed by the input size;
* each RoI is pooled from the pyramid level mmdet's ``SingleRoIExtractor.map_roi_levels`` picks.

Outputs (:data:`~.deployed_io.DETECTOR_OUTPUTS`): ``boxes [N, 4]`` (x1, y1, x2, y2 in the input
tensor's frame), ``scores [N]``, ``labels [N]`` (int64), ``masks [N, M, M]`` (the sigmoid of each
detection's class channel of the mask head; pasting into the image happens outside the graph,
in :func:`~.deployed_io.detections_to_instances`), sorted by score, ``0 <= N <= max_per_img``.

What differs from mmdet, by design: boxes are clipped to the (padded) input rather than to each
image's unpadded size, which the graph does not receive; :func:`~.deployed_io.detections_to_instances`
clips them to the image afterwards. Boxes reaching into the padding can therefore differ slightly
for images smaller than the file's input; at the input size (the demo) the graph is mmdet's.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repnext_mm.utils.errors import InputError
from .deployed_io import DETECTOR_OUTPUTS

#: What a detector must be made of for :class:`DetectorGraph` (mmdet class names).
SUPPORTED_PARTS = {
    'rpn_head': ('RPNHead',),
    'roi_head': ('StandardRoIHead',),
    'bbox_roi_extractor': ('SingleRoIExtractor',),
    'mask_roi_extractor': ('SingleRoIExtractor',),
    'bbox_head': ('Shared2FCBBoxHead', 'Shared4Conv1FCBBoxHead', 'ConvFCBBoxHead', 'BBoxHead'),
    'mask_head': ('FCNMaskHead',),
    'bbox_coder': ('DeltaXYWHBBoxCoder',),
    'roi_layer': ('RoIAlign',),
}
#: Score given to candidates removed by a filter or an NMS: below every softmax/sigmoid score.
REMOVED = -1.0


def _class_name(module: Any) -> str:
    return type(module).__name__


def _require(part: str, module: Any) -> None:
    if _class_name(module) not in SUPPORTED_PARTS[part]:
        raise InputError(f'the whole-detector export supports two-stage detectors (Faster / Mask '
                         f'R-CNN) with {part} one of {", ".join(SUPPORTED_PARTS[part])}; this '
                         f'model has {_class_name(module)}: export the backbone with '
                         '--backbone-only')


def check_supported(detector: nn.Module) -> None:
    """Refuses a detector this graph does not reproduce, naming the part and the way out.

    Raises:
        InputError: Not a two-stage detector with mmdet's RPN, standard RoI head, RoIAlign
            extractors, delta box coders and a sigmoid RPN, or RoIAlign not ``aligned``/``avg``.
    """
    if not (getattr(detector, 'with_rpn', False) and getattr(detector, 'with_roi_head', False)):
        raise InputError(f'the whole-detector export supports two-stage detectors (Faster / Mask '
                         f'R-CNN); {_class_name(detector)} has no RPN and RoI head: export the '
                         'backbone with --backbone-only')
    rpn_head, roi_head = detector.rpn_head, detector.roi_head
    _require('rpn_head', rpn_head)
    _require('roi_head', roi_head)
    _require('bbox_coder', rpn_head.bbox_coder)
    if not rpn_head.use_sigmoid_cls:
        raise InputError('the whole-detector export supports an RPN with sigmoid scores '
                         '(loss_cls use_sigmoid=True)')
    extractors = [('bbox', roi_head.bbox_roi_extractor, roi_head.bbox_head)]
    if roi_head.with_mask:
        if roi_head.share_roi_extractor:
            raise InputError('the whole-detector export needs a mask RoI extractor of its own '
                             '(share_roi_extractor=False, as in mmdet\'s Mask R-CNN configs)')
        extractors.append(('mask', roi_head.mask_roi_extractor, roi_head.mask_head))
    for kind, extractor, head in extractors:
        _require(f'{kind}_roi_extractor', extractor)
        _require(f'{kind}_head', head)
        for layer in extractor.roi_layers:
            _require('roi_layer', layer)
            if not layer.aligned or layer.pool_mode != 'avg':
                raise InputError('the whole-detector export supports RoIAlign with aligned=True '
                                 "and pool_mode='avg' (ONNX RoiAlign half_pixel)")
    _require('bbox_coder', roi_head.bbox_head.bbox_coder)
    if getattr(roi_head.bbox_head, 'custom_cls_channels', False):
        raise InputError('the whole-detector export supports a softmax box classifier')


def _top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``min(k, n)`` highest scores and their indices; ``n`` is fixed at export."""
    return scores.topk(min(int(k), scores.shape[0]))


def _nms_keep(boxes: Tensor, scores: Tensor, groups: Tensor, iou: float, shift: float) -> Tensor:
    """Indices kept by NMS within each group (level or class), highest score first.

    One NMS over boxes shifted apart by ``group * shift`` (``shift`` larger than any coordinate):
    boxes of different groups never overlap, as in mmdet's ``batched_nms``.
    """
    from torchvision.ops import nms

    return nms(boxes + groups.to(boxes.dtype)[:, None] * shift, scores, float(iou))


def _decode(coder: nn.Module, priors: Tensor, deltas: Tensor,
            max_shape: tuple[int, int]) -> Tensor:
    """mmdet's ``delta2bbox`` with the coder's settings (its ``decode`` switches to an mmdet-2
    ONNX path, broken in mmdet 3, while exporting)."""
    from mmdet.models.task_modules.coders.delta_xywh_bbox_coder import delta2bbox

    return delta2bbox(priors, deltas, coder.means, coder.stds, max_shape,
                      clip_border=coder.clip_border, add_ctr_clamp=coder.add_ctr_clamp,
                      ctr_clamp=coder.ctr_clamp)


def _keep_scores(scores: Tensor, keep: Tensor) -> Tensor:
    """``scores`` where ``keep`` indexes, :data:`REMOVED` elsewhere (same, static size)."""
    return torch.full_like(scores, REMOVED).scatter(0, keep, scores[keep])


class DetectorGraph(nn.Module):
    """mmdet's two-stage inference for one image as a traceable module (see the module doc).

    Args:
        detector: A built (fused) mmdet ``TwoStageDetector`` with a standard RoI head
            (:func:`check_supported`); its ``test_cfg`` gives the thresholds and budgets.

    Raises:
        InputError: A detector this graph does not reproduce.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        check_supported(detector)
        self.detector = detector
        self.rpn_cfg = detector.test_cfg.rpn
        self.rcnn_cfg = detector.test_cfg.rcnn
        self.with_mask = bool(detector.roi_head.with_mask)
        self.output_names = list(DETECTOR_OUTPUTS if self.with_mask else DETECTOR_OUTPUTS[:3])

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        if image.shape[0] != 1:
            raise InputError(f'a whole-detector graph takes one image, got a batch of '
                             f'{image.shape[0]}')
        image_shape = tuple(int(side) for side in image.shape[-2:])
        # Larger than any coordinate: boxes are clipped to the input.
        shift = float(max(image_shape) + 1)
        features = self.detector.extract_feat(image)
        proposals, proposal_valid = self._proposals(features, image_shape, shift)
        boxes, scores, labels = self._detections(features, proposals, proposal_valid,
                                                 image_shape, shift)
        if not self.with_mask:
            return boxes, scores, labels
        return boxes, scores, labels, self._masks(features, boxes, labels)

    # ----------------------------------- the RPN -----------------------------------

    def _proposals(self, features: Sequence[Tensor], image_shape: tuple[int, int],
                   shift: float) -> tuple[Tensor, Tensor]:
        """``max_per_img`` proposals (fixed count) and which of them mmdet would keep."""
        rpn_head, cfg = self.detector.rpn_head, self.rpn_cfg
        cls_scores, bbox_preds = rpn_head(features)
        anchors = rpn_head.prior_generator.grid_priors(
            [f.shape[-2:] for f in features], device=features[0].device)
        level_scores, level_deltas, level_anchors, level_ids = [], [], [], []
        for level, (cls_score, bbox_pred, priors) in enumerate(
                zip(cls_scores, bbox_preds, anchors)):
            scores = cls_score[0].permute(1, 2, 0).reshape(-1).sigmoid()
            deltas = bbox_pred[0].permute(1, 2, 0).reshape(-1, 4)
            nms_pre = cfg.get('nms_pre', -1)
            if 0 < nms_pre < scores.shape[0]:
                scores, ranked = _top_k(scores, nms_pre)
                deltas, priors = deltas[ranked], priors[ranked]
            level_scores.append(scores)
            level_deltas.append(deltas)
            level_anchors.append(priors)
            level_ids.append(torch.full((scores.shape[0],), level, dtype=torch.long))
        scores = torch.cat(level_scores)
        boxes = _decode(rpn_head.bbox_coder, torch.cat(level_anchors), torch.cat(level_deltas),
                        image_shape)
        min_size = cfg.get('min_bbox_size', -1)
        if min_size >= 0:
            large_enough = ((boxes[:, 2] - boxes[:, 0]) > min_size) & (
                (boxes[:, 3] - boxes[:, 1]) > min_size)
            # Removed boxes score lowest: in NMS they cannot suppress a kept box.
            scores = torch.where(large_enough, scores, torch.full_like(scores, REMOVED))
        keep = _nms_keep(boxes, scores, torch.cat(level_ids), cfg.nms.iou_threshold, shift)
        top_scores, top = _top_k(_keep_scores(scores, keep), cfg.max_per_img)
        return boxes[top], top_scores > REMOVED

    # ----------------------------------- RoI heads -----------------------------------

    @staticmethod
    def _roi_features(extractor: nn.Module, features: Sequence[Tensor], boxes: Tensor) -> Tensor:
        """``[R, C, S, S]`` RoIAlign features, each box pooled from mmdet's level for it."""
        from torchvision.ops import roi_align

        features = features[:extractor.num_inputs]
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)
        levels = extractor.map_roi_levels(rois, len(features))
        layer = extractor.roi_layers[0]
        pooled = features[0].new_zeros(
            (boxes.shape[0], extractor.out_channels) + tuple(layer.output_size))
        for level, (feature, layer) in enumerate(zip(features, extractor.roi_layers)):
            index = torch.nonzero(levels == level).reshape(-1)
            pooled = pooled.index_put((index,), roi_align(
                feature, rois[index], layer.output_size, layer.spatial_scale,
                layer.sampling_ratio, aligned=True))
        return pooled

    def _detections(self, features: Sequence[Tensor], proposals: Tensor, proposal_valid: Tensor,
                    image_shape: tuple[int, int], shift: float) -> tuple[Tensor, Tensor, Tensor]:
        """The box head and mmdet's ``multiclass_nms``: boxes, scores, labels, best first."""
        roi_head, cfg = self.detector.roi_head, self.rcnn_cfg
        bbox_head = roi_head.bbox_head
        cls_score, bbox_pred = bbox_head(
            self._roi_features(roi_head.bbox_roi_extractor, features, proposals))
        num_rois, num_classes = cls_score.shape[0], bbox_head.num_classes
        # mmdet's softmax puts background last.
        class_scores = F.softmax(cls_score, dim=-1)[:, :num_classes]
        class_scores = torch.where(proposal_valid[:, None], class_scores,
                                   torch.full_like(class_scores, REMOVED))
        per_class = 1 if bbox_head.reg_class_agnostic else num_classes
        boxes = _decode(
            bbox_head.bbox_coder, proposals.repeat_interleave(per_class, dim=0),
            bbox_pred.reshape(-1, 4), image_shape).reshape(num_rois, per_class, 4).expand(
                num_rois, num_classes, 4).reshape(-1, 4)
        scores = class_scores.reshape(-1)
        labels = torch.arange(num_classes).repeat(num_rois)
        # The score threshold first, as mmdet does (NMS over every class of every RoI would
        # be quadratic in RoIs x classes); the kept candidates go back to their fixed slots.
        candidates = torch.nonzero(scores > cfg.score_thr).reshape(-1)
        keep = candidates[_nms_keep(boxes[candidates], scores[candidates], labels[candidates],
                                    cfg.nms.iou_threshold, shift)]
        top_scores, top = _top_k(_keep_scores(scores, keep), cfg.max_per_img)
        top = top[torch.nonzero(top_scores > REMOVED).reshape(-1)]
        return boxes[top], scores[top], labels[top]

    def _masks(self, features: Sequence[Tensor], boxes: Tensor, labels: Tensor) -> Tensor:
        """``[N, M, M]`` mask probabilities of each detection's class."""
        roi_head = self.detector.roi_head
        # One extra box, dropped after the head: with no detection the head would get an empty
        # batch, which GroupNorm's reshape (-1 over zero elements) cannot take on the runtimes.
        padded = torch.cat([boxes, boxes.new_tensor([[0.0, 0.0, 1.0, 1.0]])])
        mask_pred = roi_head.mask_head(
            self._roi_features(roi_head.mask_roi_extractor, features, padded))[:-1]
        if roi_head.mask_head.class_agnostic:
            return mask_pred[:, 0].sigmoid()
        return mask_pred[torch.arange(boxes.shape[0]), labels].sigmoid()


def detector_input_shape(cfg: Any) -> tuple[int, int] | None:
    """The largest input the config's test pipeline gives a landscape image, padded as the data
    preprocessor pads: the keep-ratio ``Resize`` scale ``(long, short)`` as ``(short, long)``
    rounded up to ``pad_size_divisor`` (COCO's 1333x800: 800x1344). ``None`` without a Resize.

    Portrait images come out ``(long, short)``: a file for both needs a square ``--shape``.
    """
    pipeline = ((cfg.get('test_dataloader') or {}).get('dataset') or {}).get('pipeline') or []
    resize = next((step for step in pipeline if step.get('type') in ('Resize', 'mmdet.Resize')
                   and step.get('scale')), None)
    if resize is None:
        return None
    scale = resize['scale']
    if isinstance(scale, int):
        scale = (scale, scale)
    long_side, short_side = max(scale), min(scale)
    if not resize.get('keep_ratio', False):
        short_side, long_side = scale[1], scale[0]  # (w, h) exactly
    preprocessor = (cfg.get('model') or {}).get('data_preprocessor') or {}
    divisor = int(preprocessor.get('pad_size_divisor', 1) or 1)

    def padded(side: int) -> int:
        return -(-int(side) // divisor) * divisor

    return padded(short_side), padded(long_side)
