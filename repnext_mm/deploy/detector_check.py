"""An exported detector file checked against PyTorch and mmdet, before it is written.

A detector's raw outputs are a ranked list whose order among equal scores (random weights,
``score_thr=0``) is arbitrary, so they are compared as detections, not tensor by tensor: the two
sets are matched per image (same label, IoU >= :data:`~.quantize.MATCH_IOU`) and the count
matched, the worst box and score difference of a match and the mask IoU of the matches are
measured (:func:`compare_detections`). Two comparisons (:func:`check_detector_file`):

* **a random input**: the export wrapper in torch against the file on ONNX Runtime, the
  graph's own outputs (the 28x28 masks binarized at ``mask_thr_binary``);
* **the config's test images** (the first :data:`CHECK_IMAGES` of its test dataloader): mmdet's
  inference of the fused model (``model.test_step``) against the file run the way the evaluator
  runs it (:class:`~.evaluate.DeployedModel`: same padding, same post-processing). Where the test
  data is missing, or its images do not fit the file's input, this part is skipped and the
  report says so.

A file outside :data:`BOUNDS` in either is refused, so nothing is written.

Example:
    >>> check = check_detector_file('/tmp/det.onnx', wrapper, fused_detector, cfg, (128, 128))
    >>> print(check.describe())
"""
from __future__ import annotations

import contextlib
import copy
import io
import itertools
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from repnext_mm.utils.errors import InputError
from .deployed_io import deployed_call, detector_test_settings
from .evaluate import DeployedModel, preprocessor_cfg
from .quantize import MATCH_IOU, match_detections
from .verify import example_inputs

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
        against: What the file was compared with, for the report.
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
    against: str = 'mmdet on test images'

    def describe(self) -> str:
        if self.skipped:
            return f'not checked against {self.against} ({self.skipped})'
        images = f'{self.images} image{"s" if self.images != 1 else ""}'
        return (f'vs {self.against} ({images}): {self.matched} of {self.reference} detections '
                f'matched by {self.candidate} (same label, IoU >= {MATCH_IOU}), worst box '
                f'difference {self.box_pixels:.3g} px, score {self.score:.2g}, lowest mask IoU '
                f'{self.mask_iou:.4f}')

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


def compare_detections(pairs: list[tuple[dict, dict]],
                       against: str = 'mmdet on test images') -> DetectorCheck:
    """Sums :func:`~.quantize.match_detections` over ``(reference, file)`` detections per
    image."""
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
                         1.0 if total == 0 else 2 * matched / total, box_pixels, score, mask_iou,
                         against=against)


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
    # pycocotools prints its index building on stdout, which is the tool's report.
    with DefaultScope.overwrite_default_scope(cfg.default_scope), \
            contextlib.redirect_stdout(io.StringIO()):
        loader = Runner.build_dataloader(loader_cfg)
        return list(itertools.islice(loader, images))


def _fits(detector: nn.Module, batch: dict, shape: tuple[int, int]) -> bool:
    h, w = detector.data_preprocessor(copy.deepcopy(batch))['inputs'].shape[-2:]
    return h <= shape[0] and w <= shape[1]


def _refuse_outside_bounds(check: DetectorCheck) -> DetectorCheck:
    failures = check.failures()
    if failures:
        raise InputError(f'the exported detector does not reproduce {check.against} '
                         f'({check.describe()}; outside: {", ".join(failures)}); nothing was '
                         'written. Report this with the config and the command')
    return check


def _graph_detections(outputs: Sequence, names: Sequence[str], mask_thr: float) -> dict:
    found = {name: np.asarray(value) for name, value in zip(names, outputs)}
    if 'masks' in found:
        found['masks'] = found['masks'] >= mask_thr
    return found


@torch.no_grad()
def check_random_input(path: str | os.PathLike, wrapper: nn.Module, shape: Sequence[int],
                       mask_thr: float) -> DetectorCheck:
    """The export wrapper in torch against the file on ONNX Runtime on a random input.

    Raises:
        InputError: The file is outside :data:`BOUNDS`.
    """
    example = example_inputs(shape, seed=0)
    reference = [t.numpy() for t in wrapper.eval()(example)]
    candidate = deployed_call(path, 'onnxruntime')(example.numpy())
    names = list(wrapper.output_names)
    pair = (_graph_detections(reference, names, mask_thr),
            _graph_detections([candidate[n] for n in names], names, mask_thr))
    return _refuse_outside_bounds(compare_detections([pair], 'torch on a random input'))


@torch.no_grad()
def check_test_images(path: str | os.PathLike, detector: nn.Module, cfg: Config,
                      images: int = CHECK_IMAGES) -> DetectorCheck:
    """Runs the first ``images`` test images through ``detector`` (mmdet) and the file at
    ``path`` (ONNX Runtime, as the evaluator runs it) and compares their detections.

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
    return _refuse_outside_bounds(compare_detections(pairs))


def check_detector_file(path: str | os.PathLike, wrapper: nn.Module, detector: nn.Module,
                        cfg: Config, shape: Sequence[int],
                        images: int = CHECK_IMAGES) -> tuple[DetectorCheck, DetectorCheck]:
    """:func:`check_random_input`, then :func:`check_test_images`: both reports.

    Raises:
        InputError: The file is outside :data:`BOUNDS` in either.
    """
    mask_thr = detector_test_settings(cfg)['mask_thr_binary']
    return (check_random_input(path, wrapper, shape, mask_thr),
            check_test_images(path, detector, cfg, images))


__all__ = ['BOUNDS', 'CHECK_IMAGES', 'DetectorCheck', 'check_detector_file', 'check_random_input',
           'check_test_images', 'compare_detections']
