"""An exported detector file checked against mmdet's own predictions, before it is written.

The random-input parity check of :func:`~.onnx_export.export_onnx` compares raw tensors; a
trained detector finds little in noise, so it says little about the detections. This check runs
the first images of the config's test dataloader through mmdet's inference of the fused model
(``model.test_step``) and through the file on ONNX Runtime the way the evaluator runs it
(:class:`~.evaluate.DeployedModel`: same padding, same post-processing), then matches the two
sets of detections per image: the count matched, the worst box and score difference of a match
and the mask IoU of the matches. A file outside :data:`BOUNDS` is refused, so nothing is
written.

Example:
    >>> check = check_detector_file('/tmp/det.onnx', fused_detector, cfg)
    >>> print(check.describe())
"""
from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from repnext_mm.utils.errors import InputError
from .evaluate import DeployedModel, preprocessor_cfg
from .quantize import MATCH_IOU, match_detections

#: How many test images the check runs (each through both models).
CHECK_IMAGES = 8
#: What an fp32 file must reproduce of mmdet's predictions: matched fraction of all
#: detections (F1), the largest box coordinate difference of a match (pixels of the original
#: image), the largest score difference and the lowest mask IoU of a match.
BOUNDS = dict(agreement=0.98, box_pixels=1.0, score=1e-3, mask_iou=0.95)


@dataclass(frozen=True)
class DetectorCheck:
    """What :func:`check_detector_file` found on ``images`` test images.

    Attributes:
        images: Images compared.
        reference: mmdet's detections, summed over the images.
        candidate: The file's detections.
        matched: Pairs of the same label with IoU >= :data:`~.quantize.MATCH_IOU`.
        agreement: ``2 matched / (reference + candidate)`` (1 when both are empty).
        box_pixels: Largest box coordinate difference of a match.
        score: Largest score difference of a match.
        mask_iou: Lowest IoU of the binary masks of a match (1 without masks or matches).
        skipped: Why the check did not run (no test images), else ``None``.
    """
    images: int = 0
    reference: int = 0
    candidate: int = 0
    matched: int = 0
    agreement: float = 1.0
    box_pixels: float = 0.0
    score: float = 0.0
    mask_iou: float = 1.0
    skipped: str | None = None

    def describe(self) -> str:
        if self.skipped:
            return f'not checked against mmdet on test images ({self.skipped})'
        return (f'vs mmdet on {self.images} test images: {self.matched} of {self.reference} '
                f'detections matched by {self.candidate} (same label, IoU >= {MATCH_IOU}), '
                f'worst box difference {self.box_pixels:.3g} px, score {self.score:.2g}, '
                f'lowest mask IoU {self.mask_iou:.4f}')

    def failures(self) -> list[str]:
        """The :data:`BOUNDS` this check is outside of."""
        if self.skipped:
            return []
        worse = dict(agreement=self.agreement < BOUNDS['agreement'],
                     box_pixels=self.box_pixels > BOUNDS['box_pixels'],
                     score=self.score > BOUNDS['score'], mask_iou=self.mask_iou < BOUNDS['mask_iou'])
        return [f'{key} (bound {BOUNDS[key]})' for key, bad in worse.items() if bad]


def _instances(sample) -> dict[str, np.ndarray]:
    pred = sample.pred_instances
    out = {key: pred[key].detach().cpu().numpy() for key in ('bboxes', 'scores', 'labels')}
    out['boxes'] = out.pop('bboxes')
    if 'masks' in pred:
        out['masks'] = pred.masks.detach().cpu().numpy().astype(bool)
    return out


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare_detections(pairs: list[tuple[dict, dict]]) -> DetectorCheck:
    """Sums :func:`~.quantize.match_detections` over ``(mmdet, file)`` detections per image."""
    reference = candidate = matched = 0
    box_pixels = score = 0.0
    mask_iou = 1.0
    for ref, cand in pairs:
        matches = match_detections(ref, cand)
        reference, candidate = reference + len(ref['scores']), candidate + len(cand['scores'])
        matched += len(matches)
        for a, b, _ in matches:
            box_pixels = max(box_pixels, float(np.abs(ref['boxes'][a] - cand['boxes'][b]).max()))
            score = max(score, abs(float(ref['scores'][a] - cand['scores'][b])))
            if 'masks' in ref and 'masks' in cand:
                mask_iou = min(mask_iou, _mask_iou(ref['masks'][a], cand['masks'][b]))
    total = reference + candidate
    return DetectorCheck(len(pairs), reference, candidate, matched,
                         1.0 if total == 0 else 2 * matched / total, box_pixels, score, mask_iou)


def _test_batches(cfg: Config, images: int) -> list[dict] | str:
    """The first ``images`` batches of one image of the test dataloader, or why there are none."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    from repnext_mm.apis.inputs import check_data

    try:
        check_data(cfg, ['test'])
    except InputError as error:
        return f'the test data is not there: {error}'
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    loader_cfg.update(batch_size=1, num_workers=0, persistent_workers=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        loader = Runner.build_dataloader(loader_cfg)
        return list(itertools.islice(loader, images))


def _fits(detector: nn.Module, batch: dict, shape: tuple[int, int]) -> bool:
    h, w = detector.data_preprocessor(copy.deepcopy(batch))['inputs'].shape[-2:]
    return h <= shape[0] and w <= shape[1]


@torch.no_grad()
def check_detector_file(path: str | os.PathLike, detector: nn.Module, cfg: Config,
                        images: int = CHECK_IMAGES) -> DetectorCheck:
    """Runs the first ``images`` test images through ``detector`` (mmdet) and the file at
    ``path`` (ONNX Runtime) and compares their detections (:func:`compare_detections`).

    Raises:
        InputError: The file is outside :data:`BOUNDS`.
    """
    batches = _test_batches(cfg, images)
    if isinstance(batches, str):
        return DetectorCheck(skipped=batches)
    deployed = DeployedModel(str(path), 'onnxruntime',
                             data_preprocessor=preprocessor_cfg(cfg, 'detector'))
    height, width = deployed.info.input_shape
    detector.eval()
    # An export smaller than the test pipeline's images (e.g. 512x512 of a COCO config, for
    # latency) is compared on the images that fit it, if any.
    fitting = [batch for batch in batches if _fits(detector, batch, (height, width))]
    if not fitting:
        return DetectorCheck(skipped=f'the test pipeline makes its images larger than the '
                                     f'file\'s {height}x{width} input')
    pairs = []
    for batch in fitting:
        reference = detector.test_step(copy.deepcopy(batch))[0]
        candidate = deployed.test_step(copy.deepcopy(batch))[0]
        pairs.append((_instances(reference), _instances(candidate)))
    check = compare_detections(pairs)
    failures = check.failures()
    if failures:
        raise InputError(f'the exported detector does not reproduce mmdet ({check.describe()}; '
                         f'outside: {", ".join(failures)}); nothing was written. Report this '
                         'with the config and the command')
    return check


__all__ = ['BOUNDS', 'CHECK_IMAGES', 'DetectorCheck', 'check_detector_file', 'compare_detections']
