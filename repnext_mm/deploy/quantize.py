"""Post-training static int8 quantization of the fused model's ONNX graph.

The fused model is exported to fp32 ONNX (checked against torch, :func:`.onnx_export.export_onnx`),
pre-processed with ONNX Runtime's ``quant_pre_process`` (shape inference, constant folding of
the shape arithmetic in front of the SRP ``Slice`` ops) and quantized with
``onnxruntime.quantization.quantize_static``:

* QDQ format (``QuantizeLinear``/``DequantizeLinear`` pairs around float ops): standard ONNX,
  which ONNX Runtime and OpenVINO both fuse into int8 kernels (OpenVINO runs it faster here);
* int8 weights, symmetric, per output channel (a fused conv folds BN scales that differ widely
  between channels; one scale per tensor would crush the small channels);
* uint8 activations, asymmetric, ranges from the calibration images (MinMax by default): u8 x s8
  is the combination ONNX Runtime's x86 kernels are fast for (s8 x s8 ran 1.6x slower than fp32);
* the exact GELU (``x * 0.5 * (1 + erf(x / sqrt 2))``, five ONNX ops) stays in float: quantized
  between its ops it cannot be fused back into one GELU, which made OpenVINO's int8 graph 25 %
  slower for no accuracy gain (docs/quantization.md).

What is quantized depends on the task (:func:`plan_quantization`): a classifier, backbone or
segmentor is quantized whole, except its output post-processing after the last weighted layer
(the segmentor's resize of the logits to the input and its argmax, the classifier's softmax),
which stays float; a whole detector has only the modules of :data:`DETECTOR_QUANTIZED_MODULES`
quantized (backbone and FPN neck, measured in docs/whole_model_deployment.md), while its RPN and
RoI heads with their post-processing (TopK, NonMaxSuppression, RoiAlign, box decoding, the mask
head) stay float.

The file is written atomically, and only after the int8 graph was compared with the fp32 one on
the calibration images (:func:`check_agreement`): the cosine similarity of every output (a
detector: of every feature map leaving the quantized modules, i.e. the FPN levels, and the
agreement of its detections, :func:`detection_agreement`).
"""
from __future__ import annotations

import collections
import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from torch import Tensor, nn

from repnext_mm.apis.model import Preprocessing
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write, check_output_path
from repnext_mm.utils.imports import require
from .calibration import ImageSet
from .onnx_export import INPUT_NAME, MIN_OPSET, OnnxExport, export_onnx
from .onnx_runtime import onnxruntime_call

#: ``--calib-method`` choices -> ``onnxruntime.quantization.CalibrationMethod`` members. Not
#: ``Entropy``: ``quantize_static`` gives its calibrator no bin count, and with the default 128
#: histogram bins = 128 quantized bins the only candidate range is the full one (measured
#: identical to MinMax, scale for scale).
CALIBRATION_METHODS = {'minmax': 'MinMax', 'percentile': 'Percentile'}
#: Below this cosine similarity between int8 and fp32 outputs (mean over the calibration
#: images) the quantization is broken (wrong preprocessing, a degenerate range), not merely
#: int8-noisy: nothing is written. Measured means: 0.992-0.9999 (docs/quantization.md). Not the
#: minimum: a classifier's few logits of a near-tie image can legitimately reach 0.88.
MIN_COSINE = 0.9
#: Below this mean detection agreement (:func:`detection_agreement`: F1 of int8 detections
#: matched to fp32 ones, same label and IoU >= :data:`MATCH_IOU`) over the calibration images a
#: detector's int8 file is refused. Measured: 0.95-1.0 on the trained shapes detector; a
#: detector whose backbone features still agree (cosine > 0.99) but whose scores sit near the
#: threshold can lose matches at the threshold, hence not nearer 1 (docs/whole_model_deployment.md).
MIN_DETECTION_AGREEMENT = 0.5
#: IoU above which an int8 detection matches an fp32 one of the same label.
MATCH_IOU = 0.5
#: Why the float-kept nodes stay float, for the report.
GELU_REASON = ('exact GELU (Div, Erf, Add, Mul, Mul) kept in float so that ONNX Runtime and '
               'OpenVINO fuse it into one op')
TAIL_REASON = ('output post-processing after the last weighted layer (resize to the input, '
               'argmax, softmax) kept in float')
GROUP_NORM_REASON = ('GroupNorm (Reshape, InstanceNormalization, Reshape, Mul, Add) kept in '
                     'float: in int8 its per-group statistics lose the FPN levels (cosine 0.76 '
                     'on the shapes detector)')
SCOPE_REASON = ('outside the quantized modules ({modules}): RPN and RoI heads and their '
                'post-processing (TopK, NonMaxSuppression, RoiAlign, box decoding) kept in float')
#: The modules of a whole detector that are quantized (node-name scopes of the exported graph):
#: the convolutions that dominate its time; the heads (their NMS, RoiAlign and small FC layers)
#: stay float (docs/whole_model_deployment.md: int8 heads not measured).
DETECTOR_QUANTIZED_MODULES = ('backbone', 'neck')
#: Ops that output post-processing walks back through (:func:`float_tail_nodes`); shape
#: arithmetic is among them because it feeds the final resize.
TAIL_OPS = frozenset({'Resize', 'ArgMax', 'Softmax', 'Sigmoid', 'Greater', 'Cast', 'Squeeze',
                      'Shape', 'Slice', 'Concat', 'Constant', 'Gather', 'Unsqueeze'})
#: Of those, the ones a quantizer could put in int8 (the ones the report lists).
_QUANTIZABLE_TAIL_OPS = frozenset({'Resize', 'ArgMax', 'Softmax', 'Sigmoid'})


@dataclass
class Int8Export:
    """Result of :func:`export_int8_onnx`.

    Attributes:
        path: The int8 QDQ ``.onnx`` file.
        fp32: The fp32 graph it was made from, checked against torch (its file is kept only
            where ``fp32_out`` says).
        calibration: What it was calibrated on (:meth:`.calibration.ImageSet.describe`).
        method: Calibration method (a key of :data:`CALIBRATION_METHODS`).
        int8_ops: ``{op type: count}`` of ops that run in int8 (:func:`op_precisions`).
        float_ops: ``{op type: count}`` of compute ops left in float.
        kept_float: ``{reason: node names}`` of the nodes excluded from quantization.
        cosine: ``{output: mean cosine similarity int8 vs fp32 over the calibration images}``;
            for a detector, of each feature map leaving the quantized modules (the FPN levels).
        cosine_min: ``{output: the lowest one}``.
        detections: Detector only: :func:`detection_agreement` summed over the calibration
            images (``agreement`` is the mean F1).
    """
    path: Path
    fp32: OnnxExport
    calibration: str
    method: str
    int8_ops: dict[str, int] = field(default_factory=dict)
    float_ops: dict[str, int] = field(default_factory=dict)
    kept_float: dict[str, list[str]] = field(default_factory=dict)
    cosine: dict[str, float] = field(default_factory=dict)
    cosine_min: dict[str, float] = field(default_factory=dict)
    detections: dict[str, float] | None = None


@dataclass
class QuantizationPlan:
    """Which nodes of an fp32 graph :func:`quantize_onnx` quantizes.

    Attributes:
        nodes_to_quantize: Only these (empty: every node not excluded).
        kept_float: ``{reason: node names}`` excluded from quantization.
        features: Tensors leaving the quantized nodes towards float ones, compared int8 vs fp32
            by :func:`check_agreement` (a detector's FPN levels); empty for a graph quantized
            up to its outputs.
    """
    nodes_to_quantize: list[str] = field(default_factory=list)
    kept_float: dict[str, list[str]] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)

    def excluded(self) -> list[str]:
        """Every node name kept in float, for ``nodes_to_exclude``."""
        return [name for names in self.kept_float.values() for name in names]


def gelu_nodes(model) -> list[str]:
    """Names of the nodes of every exact-GELU subgraph ``x * (1 + erf(x / c)) * 0.5``.

    Args:
        model: An ``onnx.ModelProto`` (as torch's exporter writes ``nn.GELU()``).
    """
    consumers: dict[str, list] = collections.defaultdict(list)
    producers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
        for name in node.output:
            producers[name] = node

    def only_consumer(node, op_type: str):
        found = consumers.get(node.output[0], [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    names = []
    for erf in (n for n in model.graph.node if n.op_type == 'Erf'):
        div = producers.get(erf.input[0])
        add = only_consumer(erf, 'Add')
        mul = add and only_consumer(add, 'Mul')
        half = mul and only_consumer(mul, 'Mul')
        if div is None or div.op_type != 'Div' or half is None:
            continue
        if div.input[0] not in mul.input:  # x / c and x * (...) must read the same x
            continue
        names += [div.name, erf.name, add.name, mul.name, half.name]
    return names


def group_norm_nodes(model) -> list[str]:
    """Names of the nodes of every GroupNorm, as torch exports it: the nodes of the module
    that holds an ``InstanceNormalization`` (``'/net/neck/fpn_convs.1/gn/...'``)."""
    prefixes = {node.name.rsplit('/', 1)[0] + '/' for node in model.graph.node
                if node.op_type == 'InstanceNormalization' and '/' in node.name}
    return [node.name for node in model.graph.node
            if any(node.name.startswith(prefix) for prefix in prefixes)]


def op_precisions(model) -> tuple[dict[str, int], dict[str, int]]:
    """``({op: count} in int8, {op: count} in float)`` of a QDQ graph's compute ops.

    An op runs in int8 when a runtime can fuse it with its Q/DQ pairs: it reads a dequantized
    tensor and every consumer of its outputs is a ``QuantizeLinear``.
    """
    dequantized = {o for n in model.graph.node if n.op_type == 'DequantizeLinear' for o in n.output}
    consumers: dict[str, list[str]] = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node.op_type)
    int8, floating = collections.Counter(), collections.Counter()
    for node in model.graph.node:
        if node.op_type in ('QuantizeLinear', 'DequantizeLinear', 'Constant'):
            continue
        requantized = all(consumers[o] and set(consumers[o]) == {'QuantizeLinear'}
                          for o in node.output)
        reads_int8 = any(name in dequantized for name in node.input)
        (int8 if reads_int8 and requantized else floating)[node.op_type] += 1
    return dict(int8.most_common()), dict(floating.most_common())


def float_tail_nodes(model) -> list[str]:
    """Names of the output post-processing nodes: from each graph output back through
    :data:`TAIL_OPS` (resize to the input, argmax, softmax and their shape arithmetic), up to
    the last weighted layer."""
    producers = {o: node for node in model.graph.node for o in node.output}
    found: dict[str, None] = {}
    pending = [producers[o.name] for o in model.graph.output if o.name in producers]
    while pending:
        node = pending.pop()
        if node.op_type not in TAIL_OPS or node.name in found:
            continue
        found[node.name] = None
        pending += [producers[name] for name in node.input if name in producers]
    return list(found)


def _in_module(node_name: str, module: str) -> bool:
    # The TorchScript exporter names a node by its module path: '/net/backbone/stem/.../Conv'.
    return f'/{module.replace(".", "/")}/' in node_name


def module_nodes(model, modules: Sequence[str]) -> list[str]:
    """Names of the nodes inside any of ``modules`` (dotted module paths, e.g. ``'neck'``,
    ``'roi_head.mask_head'``), by the module path the exporter writes into node names."""
    return [node.name for node in model.graph.node
            if any(_in_module(node.name, module) for module in modules)]


def boundary_tensors(model, inside: set[str]) -> list[str]:
    """Float tensors that nodes in ``inside`` produce and nodes outside read (or the graph
    outputs): what leaves a quantized region, e.g. a detector's FPN levels."""
    outputs = {o.name for o in model.graph.output}
    read_outside = {name for node in model.graph.node if node.name not in inside
                    for name in node.input} | outputs
    tensors = [name for node in model.graph.node if node.name in inside
               for name in node.output if name in read_outside]
    return list(dict.fromkeys(tensors))


def plan_quantization(model, task: str,
                      modules: Sequence[str] | None = None) -> QuantizationPlan:
    """What :func:`quantize_onnx` quantizes in a (pre-processed) fp32 graph of ``task``.

    Args:
        model: The ``onnx.ModelProto``.
        task: ``'detector'``, ``'segmentor'``, ``'classifier'`` or ``'backbone'``.
        modules: Quantize only the nodes of these modules (default: a detector's
            :data:`DETECTOR_QUANTIZED_MODULES`; every other task: the whole graph).

    Raises:
        InputError: ``modules`` match no node of the graph.
    """
    gelus, group_norms = gelu_nodes(model), group_norm_nodes(model)
    if modules is None and task == 'detector':
        modules = DETECTOR_QUANTIZED_MODULES
    plan = QuantizationPlan()
    if gelus:
        plan.kept_float[GELU_REASON] = gelus
    if group_norms:
        plan.kept_float[GROUP_NORM_REASON] = group_norms
    if modules is None:
        ops = {node.name: node.op_type for node in model.graph.node}
        tail = [name for name in float_tail_nodes(model) if ops[name] in _QUANTIZABLE_TAIL_OPS]
        if tail:
            plan.kept_float[TAIL_REASON] = tail
        return plan
    inside = module_nodes(model, modules)
    if not inside:
        raise InputError(f'no node of the graph belongs to the modules {", ".join(modules)} '
                         'to quantize; name modules of the exported model (e.g. backbone neck)')
    excluded = set(gelus) | set(group_norms)
    plan.nodes_to_quantize = [name for name in inside if name not in excluded]
    inside_set = set(inside)
    outside = [node.name for node in model.graph.node
               if node.name not in inside_set and node.op_type != 'Constant']
    plan.kept_float[SCOPE_REASON.format(modules=', '.join(modules))] = outside
    plan.features = boundary_tensors(model, inside_set)
    return plan


def _reader(inputs: Sequence[Tensor]):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over preprocessed images."""
    quantization = require('onnxruntime.quantization', 'int8 export')

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter([{INPUT_NAME: x.numpy()} for x in inputs])

        def get_next(self) -> dict | None:
            return next(self._feeds, None)

    return Reader()


def quantize_onnx(fp32_path: str | os.PathLike, out: str | os.PathLike,
                  inputs: Sequence[Tensor], method: str = 'minmax',
                  nodes_to_exclude: Sequence[str] = (),
                  nodes_to_quantize: Sequence[str] = ()) -> None:
    """``quantize_static`` in QDQ format (see the module docstring for the choices); with
    ``nodes_to_quantize``, only those nodes are quantized."""
    quantization = require('onnxruntime.quantization', 'int8 export')
    check_method(method)
    with contextlib.redirect_stdout(sys.stderr):  # calibrators print; stdout is for results
        quantization.quantize_static(
            str(fp32_path), str(out), _reader(inputs),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=getattr(quantization.CalibrationMethod, CALIBRATION_METHODS[method]),
            nodes_to_exclude=list(nodes_to_exclude),
            nodes_to_quantize=list(nodes_to_quantize))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened (1.0 for two all-zero arrays)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return 1.0 if norms == 0 else float(a @ b / norms)


def output_cosines(reference: Callable[[np.ndarray], list], candidate: Callable[[np.ndarray], list],
                   inputs: Sequence[Tensor], names: Sequence[str]) -> dict[str, list[float]]:
    """Per output, the cosine similarity of ``candidate`` to ``reference`` on every input."""
    cosines: dict[str, list[float]] = {name: [] for name in names}
    for x in inputs:
        feed = x.numpy()
        for name, a, b in zip(names, reference(feed), candidate(feed)):
            cosines[name].append(cosine_similarity(b, a))
    return cosines


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU of ``(x1, y1, x2, y2)`` boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_detections(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                     iou: float = MATCH_IOU) -> list[tuple[int, int, float]]:
    """Pairs one image's detections (``boxes``, ``scores``, ``labels``) with another's.

    Greedy matching in the reference's score order: each reference detection takes the
    unmatched candidate of the same label with the highest IoU, if at least ``iou``.

    Returns:
        ``(reference index, candidate index, IoU)`` of every match.
    """
    boxes_a, boxes_b = (np.asarray(d['boxes']).reshape(-1, 4) for d in (reference, candidate))
    labels_a, labels_b = (np.asarray(d['labels']).reshape(-1) for d in (reference, candidate))
    overlaps = box_iou(boxes_a, boxes_b)
    overlaps[labels_a[:, None] != labels_b[None, :]] = -1
    taken = np.zeros(len(boxes_b), bool)
    matches = []
    for index in np.argsort(-np.asarray(reference['scores']).reshape(-1), kind='stable'):
        if not len(boxes_b):
            break
        row = np.where(taken, -1, overlaps[index])
        best = int(row.argmax())
        if row[best] >= iou:
            taken[best] = True
            matches.append((int(index), best, float(row[best])))
    return matches


def detection_agreement(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                        iou: float = MATCH_IOU) -> dict[str, float]:
    """How well one image's detections reproduce another's (:func:`match_detections`).

    Returns:
        ``reference`` / ``candidate`` / ``matched`` counts, ``agreement`` (F1: ``2 matched /
        (reference + candidate)``, 1 for two empty sets), the lowest IoU and the largest score
        difference among the matches.
    """
    matches = match_detections(reference, candidate, iou)
    scores_a, scores_b = (np.asarray(d['scores']).reshape(-1) for d in (reference, candidate))
    total = len(scores_a) + len(scores_b)
    return dict(reference=len(scores_a), candidate=len(scores_b), matched=len(matches),
                agreement=1.0 if total == 0 else 2 * len(matches) / total,
                worst_iou=min((m[2] for m in matches), default=1.0),
                max_score_difference=max((abs(float(scores_a[a] - scores_b[b]))
                                          for a, b, _ in matches), default=0.0))


def with_outputs(model, tensors: Sequence[str]):
    """A copy of ``model`` that also outputs the float ``tensors`` (to compare inner features)."""
    onnx = require('onnx', 'int8 export')
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    present = {o.name for o in extended.graph.output}
    for name in tensors:
        if name not in present:
            extended.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return extended


def check_agreement(fp32_path: Path, int8_path: Path, inputs: Sequence[Tensor],
                    output_names: Sequence[str], task: str, features: Sequence[str] = (),
                    work: Path | None = None) -> tuple[dict[str, list[float]], dict | None]:
    """int8 vs fp32 on ``inputs``: per compared tensor the cosine per image, and for a
    detector the summed :func:`detection_agreement` (``agreement``: the mean F1).

    A graph quantized up to its outputs is compared on its outputs; a detector (whose raw
    outputs' set changes) on ``features`` (the tensors leaving the quantized modules) and its
    detections.
    """
    onnx = require('onnx', 'int8 export')
    if task != 'detector':
        return output_cosines(onnxruntime_call(fp32_path), onnxruntime_call(int8_path),
                              inputs, output_names), None
    calls = []
    for name, path in (('fp32', fp32_path), ('int8', int8_path)):
        extended = Path(work or path.parent) / f'{name}_features.onnx'
        onnx.save(with_outputs(onnx.load(str(path)), features), str(extended))
        calls.append(onnxruntime_call(extended))
    names = list(output_names) + [f for f in features if f not in output_names]
    cosines: dict[str, list[float]] = {name: [] for name in features}
    agreements = []
    for x in inputs:
        feed = x.numpy()
        reference, candidate = (dict(zip(names, call(feed))) for call in calls)
        for name in features:
            cosines[name].append(cosine_similarity(candidate[name], reference[name]))
        agreements.append(detection_agreement(reference, candidate))
    return cosines, summarize_detections(agreements)


def summarize_detections(agreements: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-image :func:`detection_agreement` results summed: counts, the mean ``agreement``
    (F1), the lowest matched IoU and the largest score difference, over ``images``."""
    summary = {key: int(sum(a[key] for a in agreements))
               for key in ('reference', 'candidate', 'matched')}
    summary.update(
        agreement=float(np.mean([a['agreement'] for a in agreements])) if agreements else 1.0,
        images=len(agreements),
        worst_iou=min((a['worst_iou'] for a in agreements), default=1.0),
        max_score_difference=max((a['max_score_difference'] for a in agreements), default=0.0))
    return summary


def _add_metadata(model, entries: dict[str, str]) -> None:
    existing = {entry.key: entry for entry in model.metadata_props}
    for key, value in entries.items():
        entry = existing.get(key) or model.metadata_props.add()
        entry.key, entry.value = key, value


def check_method(method: str, kind: str | None = None) -> None:
    """Refuses an unknown calibration method, and percentile for a whole detector: ONNX
    Runtime's histogram calibrator stacks each tensor over the images, and a detector's
    per-detection tensors have a different length in every image."""
    if method not in CALIBRATION_METHODS:
        raise InputError(f'--calib-method must be one of {", ".join(CALIBRATION_METHODS)}, '
                         f'got {method!r}')
    if kind == 'detector' and method == 'percentile':
        raise InputError('--calib-method percentile cannot calibrate a whole detector (its '
                         'detection count varies per image, which ONNX Runtime\'s histogram '
                         'calibrator cannot stack): use the default minmax, or --int8-backend '
                         'openvino, or --backbone-only')


def int8_metadata(fp32_metadata: Mapping[str, str], quantizer: str, calibration: str,
                  kept_float: Mapping[str, list[str]]) -> dict[str, str]:
    """The fp32 file's metadata (:func:`.deployed_io.deployed_metadata`) plus what the int8
    file is: ``precision: int8``, the quantizer, its calibration and what stayed float."""
    metadata = dict(fp32_metadata)
    metadata.update(precision='int8', quantizer=quantizer, calibration=calibration,
                    kept_float='; '.join(f'{len(nodes)} nodes: {reason}'
                                         for reason, nodes in kept_float.items()) or 'none')
    return metadata


def refuse_drift(cosine: Mapping[str, float], detections: Mapping[str, float] | None) -> None:
    """Raises unless the int8 graph stays within the bounds of the module docstring.

    Raises:
        InputError: A mean cosine below :data:`MIN_COSINE`, or a detector's mean detection
            agreement below :data:`MIN_DETECTION_AGREEMENT`; nothing is written.
    """
    # ONNX Runtime's percentile calibrator cannot run a whole detector (check_method).
    other = ('--int8-backend openvino' if detections is not None
             else '--calib-method percentile')
    hint = (f'are they the kind of images the model was trained on? try {other}); nothing was '
            'written')
    worst = min(cosine.items(), key=lambda item: item[1], default=None)
    if worst is not None and worst[1] < MIN_COSINE:
        raise InputError(f'the int8 model does not reproduce the fp32 one: output {worst[0]} '
                         f'has a mean cosine similarity of {worst[1]:.4f} < {MIN_COSINE} on '
                         f'the calibration images ({hint}')
    if detections is not None and detections['agreement'] < MIN_DETECTION_AGREEMENT:
        raise InputError(f'the int8 model does not reproduce the fp32 one: its detections agree '
                         f'with fp32 at {detections["agreement"]:.3f} < '
                         f'{MIN_DETECTION_AGREEMENT} (mean F1 of matched detections, same label '
                         f'and IoU >= {MATCH_IOU}) on the calibration images ({hint}')


def quantize_onnx_file(fp32: OnnxExport, out: str | os.PathLike, calibration: ImageSet,
                       task: str, method: str = 'minmax', modules: Sequence[str] | None = None,
                       force: bool = False, log: Callable[[str], None] = print,
                       drift_bound: bool = True) -> Int8Export:
    """Quantizes an exported, verified fp32 file to int8 QDQ and writes ``out`` atomically.

    Args:
        fp32: The fp32 export (its file is read, not changed).
        out: The int8 ``.onnx`` path.
        calibration: Preprocessed calibration images (:class:`.calibration.PipelineInputs`).
        task: The exported kind (:func:`plan_quantization`).
        method: Calibration method, a key of :data:`CALIBRATION_METHODS`.
        modules: Quantize only these modules (see :func:`plan_quantization`).
        force: Overwrite an existing ``out``.
        log: Receives progress lines.
        drift_bound: Refuse a file past the bounds of :func:`refuse_drift` (``False``: only
            to time random weights, whose outputs mean nothing).

    Raises:
        InputError: A bad option, or an int8 graph past the bounds of :func:`refuse_drift`;
            nothing is written.
    """
    onnx = require('onnx', 'int8 export')
    quantization = require('onnxruntime.quantization', 'int8 export')
    check_method(method)
    out = check_output_path(out, force)
    result: dict = {}

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix='repnext_int8_') as work:
            prepared_path = Path(work) / 'fp32_pre.onnx'
            quantization.shape_inference.quant_pre_process(str(fp32.path), str(prepared_path))
            plan = plan_quantization(onnx.load(str(prepared_path)), task, modules)
            log(f'calibrating ({method}) on {calibration.describe()}')
            quantize_onnx(prepared_path, tmp, calibration.inputs, method, plan.excluded(),
                          plan.nodes_to_quantize)
            model = onnx.load(str(tmp))
            onnx.checker.check_model(model)
            fp32_metadata = {p.key: p.value for p in onnx.load(str(fp32.path)).metadata_props}
            _add_metadata(model, int8_metadata(
                fp32_metadata, 'onnxruntime.quantization.quantize_static: QDQ, per-channel '
                'symmetric int8 weights, uint8 activations',
                f'{method} on {len(calibration.inputs)} images', plan.kept_float))
            onnx.save(model, str(tmp))
            cosines, detections = check_agreement(prepared_path, tmp, calibration.inputs,
                                                  fp32.output_names, task, plan.features,
                                                  Path(work))
        result['cosine'] = {name: float(np.mean(values)) for name, values in cosines.items()}
        result['cosine_min'] = {name: min(values) for name, values in cosines.items()}
        result['ops'] = op_precisions(model)
        result['plan'], result['detections'] = plan, detections
        if drift_bound:
            refuse_drift(result['cosine'], detections)

    try:
        atomic_write(out, write)
    except onnx.checker.ValidationError as error:
        raise InputError(f'onnx.checker rejected the quantized graph: {error}') from error
    int8_ops, float_ops = result['ops']
    return Int8Export(out, fp32, calibration.describe(), method, int8_ops, float_ops,
                      result['plan'].kept_float, result['cosine'], result['cosine_min'],
                      result['detections'])


def export_int8_onnx(module: nn.Module, shape: tuple[int, int], out: str | os.PathLike,
                     output_names: list[str], calibration: ImageSet, opset: int = MIN_OPSET,
                     preprocessing: Preprocessing | None = None, method: str = 'minmax',
                     force: bool = False, fp32_out: str | os.PathLike | None = None,
                     log: Callable[[str], None] = print, task: str | None = None) -> Int8Export:
    """Exports ``module`` to fp32 ONNX, quantizes it to int8 QDQ and writes ``out`` atomically.

    Args:
        module: ``forward(image) -> tuple`` (the fused :class:`.exportable.ExportWrapper`).
        shape: Fixed input ``(height, width)``.
        out: The int8 ``.onnx`` path.
        output_names: Names of the graph outputs.
        calibration: Preprocessed calibration images (:class:`.calibration.PipelineInputs`).
        opset: ONNX opset (>= 17).
        preprocessing: Normalization recorded in the metadata.
        method: Calibration method, a key of :data:`CALIBRATION_METHODS`.
        force: Overwrite an existing ``out``.
        fp32_out: Also keep the fp32 graph here (by default it is a temporary file).
        log: Receives progress lines.
        task: The exported kind (default: ``module.kind``, else ``'backbone'``).

    Raises:
        InputError: A bad option, an fp32 graph that does not reproduce torch, or an int8 graph
            past the bounds of :func:`refuse_drift`; nothing is written.
    """
    require('onnx', 'int8 export')
    require('onnxruntime.quantization', 'int8 export')
    check_method(method)
    out = check_output_path(out, force)
    with tempfile.TemporaryDirectory(prefix='repnext_int8_fp32_') as work:
        fp32_path = Path(fp32_out) if fp32_out else Path(work) / 'fp32.onnx'
        fp32 = export_onnx(module, shape, fp32_path, output_names, opset=opset,
                           preprocessing=preprocessing, force=True, log=log)
        task = task or getattr(module, 'kind', 'backbone')
        return quantize_onnx_file(fp32, out, calibration, task, method, force=force, log=log)
