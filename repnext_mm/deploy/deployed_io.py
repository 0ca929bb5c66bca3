"""The interface of a deployed whole-model file: what it records, what it takes, what it returns.

One module that the exporter (which writes the file), the evaluator (:mod:`.evaluate`) and the
latency benchmark (which read it) share, so that the three agree by construction:

* the metadata every exported ONNX file carries (:func:`deployed_metadata` writes it,
  :func:`read_deployed_info` reads it back into a :class:`DeployedFileInfo`): task, fixed input
  shape, classes, normalization, output names and the detector's thresholds;
* the input: the data preprocessor's batch, zero-padded bottom/right to the file's fixed shape
  (:func:`pad_to_shape`);
* a detector's outputs (``boxes``, ``scores``, ``labels``, ``masks`` in the input frame) turned
  into mmdet's ``pred_instances`` at the original image size (:func:`detections_to_instances`,
  pasting the masks with mmdet's own code: :func:`paste_masks`);
* running the file on a backend by output name (:func:`deployed_call`).

Example:
    >>> info = read_deployed_info('mask_rcnn_repnext_m0_fpn_shapes_128x128.onnx')
    >>> run = deployed_call(info.path, 'openvino', threads=1)
    >>> outputs = run(pad_to_shape(batch_inputs, info.input_shape).numpy())
    >>> instances = detections_to_instances(outputs, img_meta, info.mask_thr_binary)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from repnext_mm.utils.errors import InputError
from .openvino_ir import IR_SUFFIX, ir_metadata

#: The value of :data:`PRODUCER_KEY` in every file this package writes.
PRODUCER = 'repnext_mm'
#: How the input tensor is laid out (:data:`INPUT_LAYOUT_KEY`).
INPUT_LAYOUT = 'NCHW float32, normalized'

# Metadata keys (``model.metadata_props``; string values, JSON-encoded where not a plain string).
PRODUCER_KEY = 'producer'
INPUT_LAYOUT_KEY = 'input_layout'
MEAN_KEY = 'mean'
STD_KEY = 'std'
COLOR_LAYOUT_KEY = 'color_layout'
TASK_KEY = 'task'
INPUT_SHAPE_KEY = 'input_shape'
NUM_CLASSES_KEY = 'num_classes'
CLASSES_KEY = 'classes'
CONFIG_KEY = 'config'
OUTPUTS_KEY = 'outputs'
SCORE_THR_KEY = 'score_thr'
MASK_THR_KEY = 'mask_thr_binary'
MAX_PER_IMG_KEY = 'max_per_img'
#: The detector-only keys, from the config's ``model.test_cfg.rcnn``.
DETECTOR_KEYS = (SCORE_THR_KEY, MASK_THR_KEY, MAX_PER_IMG_KEY)
#: Every key a file may carry.
METADATA_KEYS = (PRODUCER_KEY, INPUT_LAYOUT_KEY, MEAN_KEY, STD_KEY, COLOR_LAYOUT_KEY, TASK_KEY,
                 INPUT_SHAPE_KEY, NUM_CLASSES_KEY, CLASSES_KEY, CONFIG_KEY, OUTPUTS_KEY
                 ) + DETECTOR_KEYS
#: Values stored as they are; every other value is JSON.
PLAIN_STRING_KEYS = (PRODUCER_KEY, INPUT_LAYOUT_KEY, COLOR_LAYOUT_KEY, TASK_KEY, CONFIG_KEY)

TASKS = ('detector', 'segmentor', 'classifier', 'backbone')
#: Which task a config of each library holds (its ``default_scope``).
SCOPE_TASKS = {'mmdet': 'detector', 'mmseg': 'segmentor', 'mmpretrain': 'classifier'}

#: The output names of each task's file, in order.
DETECTOR_OUTPUTS = ('boxes', 'scores', 'labels', 'masks')
SEGMENTOR_OUTPUTS = ('seg_logits',)
#: The segmentor's optional second output (``--seg-argmax``): the argmax class map.
SEG_MAP_OUTPUT = 'seg_map'
CLASSIFIER_OUTPUTS = ('logits', 'scores')

#: What a user does when a file does not carry what the tools need.
REEXPORT_FIX = 're-export it with tools/deploy/export.py CONFIG CHECKPOINT --format onnx'
#: The backends a deployed file runs on (:func:`deployed_call`).
BACKENDS = ('onnxruntime', 'openvino')


@dataclass(frozen=True)
class DeployedFileInfo:
    """What a deployed file records about itself (:func:`read_deployed_info`).

    Attributes:
        path: The file.
        task: One of :data:`TASKS`.
        input_shape: The fixed input ``(height, width)``.
        outputs: The output names, in order.
        num_classes: Classes of the head (``None`` for a backbone).
        classes: Class names, when the config's dataset names them.
        mean: The data preprocessor's per-channel mean (in :attr:`color_layout` order).
        std: Its per-channel std.
        color_layout: ``'RGB'`` or ``'BGR'``: the channel order the input is in.
        config: The config's file name it was exported from.
        score_thr: Detector: the score threshold applied in the graph.
        mask_thr_binary: Detector: the threshold that binarizes the pasted masks (outside the
            graph: :func:`paste_masks`).
        max_per_img: Detector: the most detections the graph returns.
    """
    path: Path
    task: str
    input_shape: tuple[int, int]
    outputs: tuple[str, ...]
    num_classes: int | None = None
    classes: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    color_layout: str | None = None
    config: str | None = None
    score_thr: float | None = None
    mask_thr_binary: float | None = None
    max_per_img: int | None = None


def encode_metadata(values: Mapping[str, Any]) -> dict[str, str]:
    """The string form of each value: plain strings for :data:`PLAIN_STRING_KEYS`, else JSON.

    ``None`` values are left out (the key is absent from the file).
    """
    encoded = {}
    for key, value in values.items():
        if value is None:
            continue
        if key in PLAIN_STRING_KEYS:
            encoded[key] = str(value)
        else:
            encoded[key] = json.dumps(list(value) if isinstance(value, tuple) else value)
    return encoded


def deployed_metadata(task: str, input_shape: Sequence[int], num_classes: int | None,
                      classes: Sequence[str] | None, config: str | os.PathLike,
                      outputs: Sequence[str], **extra: Any) -> dict[str, str]:
    """The metadata an exported file carries, encoded (what the exporter writes).

    Args:
        task: One of :data:`TASKS`.
        input_shape: The fixed input ``(height, width)``.
        num_classes: Classes of the head (``None``: left out, for a backbone).
        classes: Class names (``None``: left out).
        config: The config path; its file name is recorded.
        outputs: The output names, in the graph's order.
        **extra: Further keys of :data:`METADATA_KEYS`: ``mean``, ``std``, ``color_layout``;
            for detectors ``score_thr``, ``mask_thr_binary``, ``max_per_img``
            (:func:`detector_test_settings`). ``None`` values are left out.

    Returns:
        ``{key: string}`` for ``model.metadata_props``.

    Raises:
        ValueError: An unknown task or key, or a detector without its thresholds (a bug of the
            caller, not of the user's input).
    """
    if task not in TASKS:
        raise ValueError(f'task must be one of {TASKS}, got {task!r}')
    unknown = sorted(set(extra) - set(METADATA_KEYS))
    if unknown:
        raise ValueError(f'unknown metadata keys {unknown}; the keys are {METADATA_KEYS}')
    if task == 'detector' and any(extra.get(key) is None for key in DETECTOR_KEYS):
        raise ValueError(f'a detector file records {DETECTOR_KEYS}')
    height, width = (int(side) for side in input_shape)
    values = {PRODUCER_KEY: PRODUCER, INPUT_LAYOUT_KEY: INPUT_LAYOUT, TASK_KEY: task,
              INPUT_SHAPE_KEY: [height, width],
              NUM_CLASSES_KEY: None if num_classes is None else int(num_classes),
              CLASSES_KEY: None if classes is None else [str(c) for c in classes],
              CONFIG_KEY: Path(config).name, OUTPUTS_KEY: [str(o) for o in outputs]}
    values.update(extra)
    return encode_metadata(values)


def _onnx_metadata(path: Path) -> dict[str, str]:
    onnx = require_onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends: not ONNX, or cut short
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f'{path} is not a readable ONNX file (another format, or truncated: '
                         f'{first}); {REEXPORT_FIX}') from None
    return {entry.key: entry.value for entry in model.metadata_props}


def require_onnx():
    """The ``onnx`` module (reading a file's metadata)."""
    from repnext_mm.utils.imports import require

    return require('onnx', "reading a deployed file's metadata")


#: How the metadata of each kind of model file is read, by suffix. One place, so that another
#: form (OpenVINO IR) is one entry here and one in :func:`deployed_call`.
METADATA_READERS: dict[str, Callable[[Path], dict[str, str]]] = {'.onnx': _onnx_metadata,
                                                                  IR_SUFFIX: ir_metadata}


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The raw ``{key: string}`` metadata of a model file (by its suffix: :data:`METADATA_READERS`).

    Raises:
        InputError: The file is missing, of a kind this package does not write, or unreadable.
    """
    path = Path(path)
    reader = METADATA_READERS.get(path.suffix.lower())
    if reader is None:
        raise InputError(f'{path}: a deployed model file must end with '
                         f'{" or ".join(METADATA_READERS)} (written by tools/deploy/export.py '
                         '--format onnx)')
    if not path.is_file():
        raise InputError(f'model file {path} does not exist'
                         + (' (it is a directory)' if path.is_dir() else ''))
    return reader(path)


def _decode(metadata: Mapping[str, str], key: str, path: Path) -> Any:
    value = metadata.get(key)
    if value is None or key in PLAIN_STRING_KEYS:
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise InputError(f'{path}: its metadata {key}={value!r} is not valid JSON; '
                         f'{REEXPORT_FIX}') from None


def read_deployed_info(path: str | os.PathLike) -> DeployedFileInfo:
    """Reads what an exported file records about itself (see :func:`deployed_metadata`).

    Raises:
        InputError: The file is missing, not a readable model file, or lacks this package's
            metadata (written by an older version or another tool), naming the fix: re-export
            it with ``tools/deploy/export.py``.
    """
    path = Path(path)
    metadata = read_metadata(path)
    missing = [key for key in (TASK_KEY, INPUT_SHAPE_KEY, OUTPUTS_KEY) if key not in metadata]
    if metadata.get(PRODUCER_KEY) != PRODUCER or missing:
        what = (f'lacks {", ".join(missing)}' if metadata.get(PRODUCER_KEY) == PRODUCER
                else f'was not written by {PRODUCER}')
        raise InputError(f'{path} has no deployment metadata ({what}): the evaluator needs its '
                         f'task, input shape and outputs; {REEXPORT_FIX}')
    values = {key: _decode(metadata, key, path) for key in METADATA_KEYS}
    task, shape = values[TASK_KEY], values[INPUT_SHAPE_KEY]
    if task not in TASKS or not (isinstance(shape, list) and len(shape) == 2):
        raise InputError(f'{path}: metadata task={task!r} input_shape={shape!r} is not one this '
                         f'version reads; {REEXPORT_FIX}')

    def optional(key: str, kind: type) -> Any:
        value = values[key]
        return None if value is None else kind(value)

    return DeployedFileInfo(
        path=path, task=task, input_shape=(int(shape[0]), int(shape[1])),
        outputs=tuple(values[OUTPUTS_KEY]), num_classes=optional(NUM_CLASSES_KEY, int),
        classes=optional(CLASSES_KEY, tuple), mean=optional(MEAN_KEY, tuple),
        std=optional(STD_KEY, tuple), color_layout=values[COLOR_LAYOUT_KEY],
        config=values[CONFIG_KEY], score_thr=optional(SCORE_THR_KEY, float),
        mask_thr_binary=optional(MASK_THR_KEY, float),
        max_per_img=optional(MAX_PER_IMG_KEY, int))


# ------------------------------ what a config says ------------------------------

def config_task(cfg: Any) -> str:
    """The task of a config's model, from its ``default_scope`` (:data:`SCOPE_TASKS`)."""
    scope = cfg.get('default_scope')
    if scope not in SCOPE_TASKS:
        raise InputError(f'default_scope={scope!r}: expected one of {", ".join(SCOPE_TASKS)}')
    return SCOPE_TASKS[scope]


def _first(node: Any) -> Any:
    # Cascade heads are lists of heads; every stage has the same classes.
    return node[-1] if isinstance(node, (list, tuple)) and node else node


def config_num_classes(cfg: Any) -> int | None:
    """The classes of the config's head: ``roi_head.bbox_head`` (or ``bbox_head``),
    ``decode_head`` or ``head``'s ``num_classes``; ``None`` if the config names none."""
    model = cfg.get('model') or {}
    task = config_task(cfg)
    if task == 'detector':
        roi_head = model.get('roi_head') or {}
        head = _first(roi_head.get('bbox_head')) if roi_head else model.get('bbox_head')
    elif task == 'segmentor':
        head = model.get('decode_head')
    else:
        head = model.get('head')
    value = (head or {}).get('num_classes') if isinstance(head, Mapping) else None
    return None if value is None else int(value)


def config_classes(cfg: Any, split: str = 'test') -> list[str] | None:
    """The class names of the config's ``<split>_dataloader`` dataset: its ``metainfo``, else the
    dataset class's ``METAINFO`` (e.g. COCO's 80 names); ``None`` if neither names them."""
    import importlib

    dataset = _first(((cfg.get(f'{split}_dataloader') or {}).get('dataset')) or {})
    while isinstance(dataset, Mapping) and 'dataset' in dataset:  # wrappers: RepeatDataset, ...
        dataset = dataset['dataset']
    if not isinstance(dataset, Mapping):
        return None
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes is None and isinstance(dataset.get('type'), str):
        # The library's own registry: the root one finds a scope's classes only once that
        # library's registry module has been imported.
        registry = importlib.import_module(f'{cfg.get("default_scope", "mmengine")}.registry')
        with registry.DATASETS.switch_scope_and_registry(cfg.get('default_scope')) as datasets:
            dataset_class = datasets.get(dataset['type'])
        classes = getattr(dataset_class, 'METAINFO', {}).get('classes')
    return None if classes is None else [str(c) for c in classes]


def detector_test_settings(cfg: Any) -> dict[str, float | int]:
    """``score_thr``, ``mask_thr_binary`` and ``max_per_img`` of ``model.test_cfg.rcnn`` (or of
    ``model.test_cfg`` for a single-stage detector); ``mask_thr_binary`` defaults to mmdet's 0.5."""
    test_cfg = (cfg.get('model') or {}).get('test_cfg') or {}
    rcnn = test_cfg.get('rcnn') or test_cfg
    return {SCORE_THR_KEY: float(rcnn.get('score_thr', 0.05)),
            MASK_THR_KEY: float(rcnn.get('mask_thr_binary', 0.5)),
            MAX_PER_IMG_KEY: int(rcnn.get('max_per_img', 100))}


# --------------------------------- the input ---------------------------------

def pad_to_shape(inputs: Tensor, shape: Sequence[int]) -> Tensor:
    """Zero-pads a preprocessed batch ``[B, 3, h, w]`` at the bottom and right to ``shape``.

    Zero is what mmdet's and mmseg's preprocessors pad with (after normalization), so a detector
    sees what it sees in mmdet, only more of the padding.

    Raises:
        InputError: The input is larger than ``shape`` in a side, naming both sizes and the fix.
    """
    height, width = int(shape[0]), int(shape[1])
    h, w = inputs.shape[-2:]
    if h > height or w > width:
        raise InputError(f'the test pipeline gives a {h}x{w} input but the file takes '
                         f'{height}x{width}: export with --shape large enough (at least {h} {w}), '
                         "or set the test pipeline's Resize scale so the images fit, e.g. "
                         '--cfg-options with the Resize scale of the test pipeline')
    if (h, w) == (height, width):
        return inputs
    return F.pad(inputs, (0, width - w, 0, height - h), value=0.0)


# ------------------------------ the detector's outputs ------------------------------

def paste_masks(masks: np.ndarray, boxes: np.ndarray, image_shape: Sequence[int],
                threshold: float) -> np.ndarray:
    """Pastes per-detection ``[N, M, M]`` mask probabilities into ``[N, h, w]`` boolean masks.

    What mmdet's ``FCNMaskHead.predict_by_feat`` does on a CPU: each mask is resampled into its
    box with mmdet's own ``_do_paste_mask`` (one at a time, only around the box) and binarized
    with ``>= threshold``.

    Args:
        masks: Sigmoid probabilities of each detection's class channel.
        boxes: ``(x1, y1, x2, y2)`` in the frame of ``image_shape``.
        image_shape: ``(h, w)`` of the image to paste into (the original image for evaluation).
        threshold: ``mask_thr_binary``, at least 0.
    """
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask

    if threshold < 0:
        raise ValueError(f'threshold must be >= 0 (boolean masks), got {threshold}')
    height, width = int(image_shape[0]), int(image_shape[1])
    pasted = torch.zeros(len(masks), height, width, dtype=torch.bool)
    probabilities = torch.as_tensor(np.asarray(masks), dtype=torch.float32)[:, None]
    box_tensor = torch.as_tensor(np.asarray(boxes), dtype=torch.float32).reshape(-1, 4)
    for index in range(len(masks)):
        chunk, region = _do_paste_mask(probabilities[index:index + 1],
                                       box_tensor[index:index + 1], height, width,
                                       skip_empty=True)
        pasted[(slice(index, index + 1),) + region] = chunk >= threshold
    return pasted.numpy()


def detections_to_instances(outputs: Mapping[str, np.ndarray], img_meta: Mapping[str, Any],
                            mask_thr: float):
    """A detector file's outputs for one image as mmdet's ``pred_instances``.

    As mmdet's RoI head does: boxes clipped to the resized image (``img_shape``: the padding
    holds no image), then divided by ``scale_factor`` into the original image's frame; masks
    pasted into the original image (``ori_shape``) by :func:`paste_masks`.

    Args:
        outputs: ``boxes [N, 4]``, ``scores [N]``, ``labels [N]`` and (optional)
            ``masks [N, M, M]``, in the input tensor's frame (:data:`DETECTOR_OUTPUTS`).
        img_meta: The sample's ``img_shape``, ``ori_shape`` and ``scale_factor`` (w, h).
        mask_thr: ``mask_thr_binary``.

    Returns:
        ``InstanceData`` with ``bboxes`` (float32), ``scores``, ``labels`` (int64) and ``masks``
        (bool ``[N, H, W]`` at ``ori_shape``), as torch tensors, ``N`` possibly 0.
    """
    from mmengine.structures import InstanceData

    boxes = np.asarray(outputs['boxes'], dtype=np.float32).reshape(-1, 4).copy()
    img_h, img_w = img_meta['img_shape'][:2]
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, img_w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, img_h)
    scale_w, scale_h = img_meta.get('scale_factor', (1.0, 1.0))[:2]
    boxes /= np.array([scale_w, scale_h, scale_w, scale_h], dtype=np.float32)
    instances = InstanceData()
    instances.bboxes = torch.from_numpy(boxes)
    instances.scores = torch.as_tensor(np.asarray(outputs['scores'], dtype=np.float32).reshape(-1))
    instances.labels = torch.as_tensor(np.asarray(outputs['labels'], dtype=np.int64).reshape(-1))
    if 'masks' in outputs:
        instances.masks = torch.from_numpy(
            paste_masks(outputs['masks'], boxes, img_meta['ori_shape'][:2], mask_thr))
    return instances


# ------------------------------ running the file ------------------------------

def deployed_call(path: str | os.PathLike, backend: str,
                  threads: int | None = None) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """``f(input) -> {output name: array}`` of a deployed file on a CPU backend.

    Args:
        path: The model file (``.onnx``).
        backend: One of :data:`BACKENDS`: ONNX Runtime's CPU session
            (:func:`.onnx_runtime.onnxruntime_session`) or OpenVINO's CPU plugin pinned to fp32
            (:func:`.openvino_runtime.openvino_model`), both reading the same file.
        threads: Intra-op threads (default: the runtime's choice, one per core).
    """
    if backend not in BACKENDS:
        raise InputError(f'--backend must be one of {", ".join(BACKENDS)}, got {backend!r}')
    if threads is not None and threads < 1:
        raise InputError(f'--threads must be >= 1, got {threads}')
    if backend == 'onnxruntime' and Path(path).suffix.lower() == IR_SUFFIX:
        raise InputError(f'{path} is an OpenVINO IR: run it with --backend openvino')
    if backend == 'onnxruntime':
        from .onnx_runtime import onnxruntime_session

        session = onnxruntime_session(path, threads)
        input_name = session.get_inputs()[0].name
        names = [output.name for output in session.get_outputs()]
        return lambda feed: dict(zip(names, session.run(names, {input_name: feed})))
    from .openvino_runtime import compiled_call, openvino_model, output_names

    compiled = openvino_model(path, threads)
    names = output_names(compiled)
    run = compiled_call(compiled)
    return lambda feed: dict(zip(names, run(feed)))
