"""The task metric of a deployed file: the logic of ``tools/deploy/test_deployed.py``.

:func:`evaluate_deployed` runs the config's own test dataloader, test loop and evaluator
(CocoMetric, IoUMetric, Accuracy) through MMEngine's ``Runner``, as ``tools/test.py`` does
(:func:`repnext_mm.engine.run.test`), with the PyTorch model replaced by :class:`DeployedModel`:
the config's data preprocessor, the batch zero-padded to the file's fixed input shape
(:func:`~.deployed_io.pad_to_shape`), the file run on ONNX Runtime or OpenVINO, and its outputs
turned into the library's data samples exactly as the library's own post-processing does
(mmdet's mask pasting and box rescaling, mmseg's ``postprocess_result``, mmpretrain's scores).
So the printed table is the one ``tools/test.py`` prints, measured on the file.

Before any work the file is checked against the config (task, classes, normalization, and the
test pipeline's first input against the file's input shape): a file that does not fit is one
:class:`~repnext_mm.utils.errors.InputError`. An image that the test pipeline makes larger than
the file's input is refused, not shrunk (shrinking would measure another resolution than
``tools/test.py``): the fix is an export with a larger ``--shape``.
"""
from __future__ import annotations

import copy
import json
import sys
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.model import BaseModel

from repnext_mm.apis.build_errors import config_errors
from repnext_mm.apis.config import load_config, set_work_dir
from repnext_mm.apis.inputs import check_data
from repnext_mm.apis.model import preprocessing_of
from repnext_mm.datasets.guard import guard_dataloaders
from repnext_mm.engine.run import write_errors
from repnext_mm.engine.runner import build_runner, discard_run_folder_on_input_error
from repnext_mm.engine.tasks import TASK_ADAPTERS
from repnext_mm.registry import MODELS
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import check_output_dir
from repnext_mm.utils.imports import require
from .deployed_io import (BACKENDS, DeployedFileInfo, config_classes, config_num_classes,
                          config_task, deployed_call, detections_to_instances,
                          detector_test_settings, pad_to_shape, read_deployed_info)

#: The data preprocessor each library's models default to when the config names no type.
DEFAULT_PREPROCESSORS = {'detector': 'mmdet.DetDataPreprocessor',
                         'segmentor': 'mmseg.SegDataPreProcessor',
                         'classifier': 'mmpretrain.ClsDataPreprocessor'}
#: mmseg's threshold of a one-channel (binary) decode head when its config gives none.
MMSEG_BINARY_THRESHOLD = 0.3


@MODELS.register_module()
class DeployedModel(BaseModel):
    """A deployed file in the place of the PyTorch model in MMEngine's test loop (predict only).

    Args:
        file: The exported file (its metadata: :func:`~.deployed_io.read_deployed_info`).
        backend: One of :data:`~.deployed_io.BACKENDS`.
        threads: The runtime's intra-op threads (default: its choice, one per core).
        data_preprocessor: The config's data preprocessor (as the model would build it).
        align_corners: Segmentor: the decode head's ``align_corners`` (mmseg resizes the logits
            to the original image with it).
        threshold: Segmentor with one output channel: the decode head's ``threshold``.
        mask_thr_binary: Detector: binarizes the pasted masks; default the file's.
    """

    def __init__(self, file: str, backend: str, threads: int | None = None,
                 data_preprocessor: dict | None = None, align_corners: bool = False,
                 threshold: float | None = None, mask_thr_binary: float | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.info = read_deployed_info(file)
        self.run_file = deployed_call(file, backend, threads)
        # What mmseg's postprocess_result reads of a segmentor: its and its head's settings.
        self.segmentor_settings = SimpleNamespace(
            align_corners=align_corners, decode_head=SimpleNamespace(
                threshold=MMSEG_BINARY_THRESHOLD if threshold is None else threshold))
        self.mask_thr_binary = (self.info.mask_thr_binary if mask_thr_binary is None
                                else mask_thr_binary)

    def forward(self, inputs: torch.Tensor, data_samples: list | None = None,
                mode: str = 'predict') -> list:
        if mode != 'predict':
            raise InputError(f'a deployed file only predicts (mode={mode!r}); train and compute '
                             'losses with the PyTorch model and tools/train.py')
        predict = dict(detector=self._detections, segmentor=self._segmentation,
                       classifier=self._classification)[self.info.task]
        return [predict(inputs[i:i + 1], sample) for i, sample in enumerate(data_samples)]

    def _outputs(self, inputs: torch.Tensor) -> dict[str, np.ndarray]:
        padded = pad_to_shape(inputs.float(), self.info.input_shape)
        return self.run_file(np.ascontiguousarray(padded.cpu().numpy()))

    def _detections(self, inputs: torch.Tensor, sample: Any) -> Any:
        sample.pred_instances = detections_to_instances(self._outputs(inputs), sample.metainfo,
                                                        self.mask_thr_binary)
        return sample

    def _segmentation(self, inputs: torch.Tensor, sample: Any) -> Any:
        from mmseg.models.segmentors.base import BaseSegmentor

        height, width = inputs.shape[-2:]
        logits = torch.from_numpy(self._outputs(inputs)['seg_logits'])[..., :height, :width]
        # mmseg's own step: its padding removed, flipped back, resized to the original image,
        # argmax (or the threshold of a one-channel head).
        (sample,) = BaseSegmentor.postprocess_result(self.segmentor_settings, logits, [sample])
        return sample

    def _classification(self, inputs: torch.Tensor, sample: Any) -> Any:
        outputs = self._outputs(inputs)
        scores = torch.from_numpy(outputs['scores'] if 'scores' in outputs
                                  else _softmax(outputs['logits']))[0]
        return sample.set_pred_score(scores).set_pred_label(scores.argmax(dim=0, keepdim=True))


def _softmax(logits: np.ndarray) -> np.ndarray:
    """A classifier file of an earlier version outputs ``logits`` only."""
    return torch.from_numpy(logits).softmax(dim=1).numpy()


def check_file_fits(info: DeployedFileInfo, cfg: Config, config: str) -> None:
    """Refuses a file of another task, class count, class names or normalization than ``cfg``.

    Raises:
        InputError: One line naming what differs and the fix (export from this config).
    """
    fix = f'export this config\'s model: tools/deploy/export.py {config} CHECKPOINT --format onnx'
    task = config_task(cfg)
    if info.task != task:
        what = ('a backbone (exported with --backbone-only: no head, no task outputs)'
                if info.task == 'backbone' else f'a {info.task}')
        raise InputError(f'{info.path} is {what} but {config} is a {task} config; {fix}')
    num_classes = config_num_classes(cfg)
    if None not in (num_classes, info.num_classes) and num_classes != info.num_classes:
        raise InputError(f'{info.path} predicts {info.num_classes} classes but {config} has '
                         f'{num_classes}; {fix}')
    classes = config_classes(cfg)
    if None not in (classes, info.classes) and list(info.classes) != classes:
        raise InputError(f'{info.path} was exported for the classes {list(info.classes)} but the '
                         f'test set of {config} has {classes}; {fix}')
    expected = preprocessing_of(cfg)
    for name, ours in (('mean', expected.mean), ('std', expected.std)):
        theirs = getattr(info, name)
        if theirs is not None and not np.allclose(theirs, ours, rtol=1e-6):
            raise InputError(f'{info.path} expects inputs normalized with {name} {list(theirs)} '
                             f'but {config} normalizes with {list(ours)}; {fix}')
    if info.color_layout is not None and info.color_layout != expected.color_layout:
        raise InputError(f'{info.path} takes {info.color_layout} inputs but {config} feeds '
                         f'{expected.color_layout}; {fix}')


def preprocessor_cfg(cfg: Config, task: str) -> dict:
    """The data preprocessor the config's model builds (its own, else the top-level one)."""
    model_pre = (cfg.get('model') or {}).get('data_preprocessor')
    pre = copy.deepcopy(dict(model_pre or cfg.get('data_preprocessor') or {}))
    pre.setdefault('type', DEFAULT_PREPROCESSORS[task])
    return pre


def first_input_shape(cfg: Config, task: str) -> tuple[int, int]:
    """The ``(h, w)`` the test pipeline and data preprocessor make of the first test image."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS, DefaultScope
    from mmengine.registry import MODELS as ROOT_MODELS

    with DefaultScope.overwrite_default_scope(cfg.default_scope), config_errors(cfg):
        dataset = DATASETS.build(copy.deepcopy(cfg.test_dataloader.dataset))
        preprocessor = ROOT_MODELS.build(preprocessor_cfg(cfg, task))
        batch = preprocessor(pseudo_collate([dataset[0]]), False)
    return tuple(batch['inputs'].shape[-2:])


def check_input_fits(info: DeployedFileInfo, shape: Sequence[int], config: str) -> None:
    """A classifier's input must be the pipeline's exactly (global pooling would see the padding);
    a detector's or segmentor's at least as large (the rest is zero padding, as mmdet pads)."""
    (h, w), (height, width) = shape, info.input_shape
    fix_shape = f'tools/deploy/export.py {config} CHECKPOINT --format onnx --shape {h} {w}'
    if info.task == 'classifier' and (h, w) != (height, width):
        raise InputError(f'{info.path} takes {height}x{width} inputs but the test pipeline of '
                         f'{config} gives {h}x{w}; export at that size: {fix_shape}')
    if h > height or w > width:
        raise InputError(f'the test pipeline of {config} gives a {h}x{w} input (first test image, '
                         f'after the data preprocessor) but {info.path} takes {height}x{width}; '
                         f'export with a --shape that holds it ({fix_shape}, or larger for '
                         "other image sizes), or set the test pipeline's Resize scale with "
                         '--cfg-options')


def _model_cfg(cfg: Config, info: DeployedFileInfo, backend: str, threads: int | None) -> dict:
    model = dict(type='repnext_mm.DeployedModel', file=str(info.path), backend=backend,
                 threads=threads, data_preprocessor=preprocessor_cfg(cfg, info.task))
    if info.task == 'segmentor':
        head = cfg.model.get('decode_head') or {}
        model.update(align_corners=bool(head.get('align_corners', False)),
                     threshold=head.get('threshold'))
    if info.task == 'detector' and info.mask_thr_binary is None:
        model['mask_thr_binary'] = detector_test_settings(cfg)['mask_thr_binary']
    return model


def notes_on(info: DeployedFileInfo, cfg: Config, shape: Sequence[int]) -> list[str]:
    """What differs from ``tools/test.py``'s run, said once."""
    notes = []
    if tuple(shape) != info.input_shape:
        notes.append(f'the test inputs ({shape[0]}x{shape[1]} for the first image) are '
                     f'zero-padded at the bottom and right to the file\'s '
                     f'{info.input_shape[0]}x{info.input_shape[1]}')
    mode = ((cfg.model.get('test_cfg') or {}) if info.task == 'segmentor' else {}).get('mode')
    if mode == 'slide':
        notes.append("the config's test_cfg mode is 'slide'; the file runs the whole (padded) "
                     'image in one pass')
    return notes


def evaluate_deployed(config: str, model_file: str, backend: str = 'onnxruntime',
                      threads: int | None = None, work_dir: str | None = None,
                      cfg_options: dict[str, Any] | None = None) -> dict:
    """Evaluates a deployed file on the test split of ``config`` (``tools/deploy/test_deployed.py``).

    Args:
        config: The config the file was exported from.
        model_file: The exported ``.onnx`` file.
        backend: ``'onnxruntime'`` or ``'openvino'`` (CPU).
        threads: The runtime's intra-op threads (default: one per core).
        work_dir: Output folder for logs and metrics (default as ``tools/test.py``).
        cfg_options: Config overrides, as ``--cfg-options``.

    Returns:
        The metrics (also printed as a last ``test metrics: {...}`` line).

    Raises:
        InputError: A file that is not a deployed file of this config (task, classes, input
            size, normalization), a bad config, option, data path or work folder.
    """
    if backend not in BACKENDS:
        raise InputError(f'--backend must be one of {", ".join(BACKENDS)}, got {backend!r}')
    if threads is not None and threads < 1:
        raise InputError(f'--threads must be >= 1, got {threads}')
    info = read_deployed_info(model_file)
    require(backend, f'the {backend} backend')
    cfg = load_config(config, cfg_options)
    set_work_dir(cfg, config, work_dir)
    TASK_ADAPTERS[cfg.default_scope].dataloader_defaults(cfg)
    check_output_dir(cfg.work_dir, '--work-dir')
    check_file_fits(info, cfg, config)
    check_data(cfg, ['test'])
    shape = first_input_shape(cfg, info.task)
    check_input_fits(info, shape, config)
    for note in notes_on(info, cfg, shape):
        print(f'note: {note}', file=sys.stderr)
    guard_dataloaders(cfg)
    cfg.model = _model_cfg(cfg, info, backend, threads)
    cfg.pop('data_preprocessor', None)
    cfg.load_from, cfg.resume = None, False
    with discard_run_folder_on_input_error(cfg.work_dir), write_errors('--work-dir'), \
            config_errors(cfg):
        metrics = build_runner(cfg).test()
    if not metrics:
        print(f'note: {info.path} found nothing in any test image: the metric is empty',
              file=sys.stderr)
    print('test metrics: ' + json.dumps(metrics, default=float))
    return metrics
