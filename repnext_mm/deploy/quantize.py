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

The file is written atomically, and only after the int8 outputs were compared with the fp32
graph's on the calibration images.
"""
from __future__ import annotations

import collections
import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

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
#: Why the float-kept nodes stay float, for the report.
GELU_REASON = ('exact GELU (Div, Erf, Add, Mul, Mul) kept in float so that ONNX Runtime and '
               'OpenVINO fuse it into one op')


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
        cosine: ``{output: mean cosine similarity int8 vs fp32 over the calibration images}``.
        cosine_min: ``{output: the lowest one}``.
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
                  nodes_to_exclude: Sequence[str] = ()) -> None:
    """``quantize_static`` in QDQ format (see the module docstring for the choices)."""
    quantization = require('onnxruntime.quantization', 'int8 export')
    if method not in CALIBRATION_METHODS:
        raise InputError(f'--calib-method must be one of {", ".join(CALIBRATION_METHODS)}, '
                         f'got {method!r}')
    with contextlib.redirect_stdout(sys.stderr):  # calibrators print; stdout is for results
        quantization.quantize_static(
            str(fp32_path), str(out), _reader(inputs),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=getattr(quantization.CalibrationMethod, CALIBRATION_METHODS[method]),
            nodes_to_exclude=list(nodes_to_exclude))


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


def _add_metadata(model, entries: dict[str, str]) -> None:
    existing = {entry.key: entry for entry in model.metadata_props}
    for key, value in entries.items():
        entry = existing.get(key) or model.metadata_props.add()
        entry.key, entry.value = key, value


def export_int8_onnx(module: nn.Module, shape: tuple[int, int], out: str | os.PathLike,
                     output_names: list[str], calibration: ImageSet, opset: int = MIN_OPSET,
                     preprocessing: Preprocessing | None = None, method: str = 'minmax',
                     force: bool = False, fp32_out: str | os.PathLike | None = None,
                     log: Callable[[str], None] = print) -> Int8Export:
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

    Raises:
        InputError: A bad option, an fp32 graph that does not reproduce torch, or int8 outputs
            whose cosine similarity to fp32 falls below :data:`MIN_COSINE`; nothing is written.
    """
    onnx = require('onnx', 'int8 export')
    quantization = require('onnxruntime.quantization', 'int8 export')
    if method not in CALIBRATION_METHODS:
        raise InputError(f'--calib-method must be one of {", ".join(CALIBRATION_METHODS)}, '
                         f'got {method!r}')
    out = check_output_path(out, force)
    result: dict = {}

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix='repnext_int8_') as work:
            fp32_path = Path(fp32_out) if fp32_out else Path(work) / 'fp32.onnx'
            prepared_path = Path(work) / 'fp32_pre.onnx'
            result['fp32'] = export_onnx(module, shape, fp32_path, output_names, opset=opset,
                                         preprocessing=preprocessing, force=True, log=log)
            quantization.shape_inference.quant_pre_process(str(fp32_path), str(prepared_path))
            excluded = gelu_nodes(onnx.load(str(prepared_path)))
            log(f'calibrating ({method}) on {calibration.describe()}')
            quantize_onnx(prepared_path, tmp, calibration.inputs, method, excluded)
            model = onnx.load(str(tmp))
            onnx.checker.check_model(model)
            metadata = {p.key: p.value for p in onnx.load(str(fp32_path)).metadata_props}
            metadata.update(
                precision='int8 QDQ: per-channel symmetric int8 weights, uint8 activations',
                quantizer='onnxruntime.quantization.quantize_static',
                calibration=f'{method} on {len(calibration.inputs)} images',
                kept_float=f'{len(excluded) // 5} GELU subgraphs')
            _add_metadata(model, metadata)
            onnx.save(model, str(tmp))
            cosines = output_cosines(onnxruntime_call(fp32_path), onnxruntime_call(tmp),
                                     calibration.inputs, output_names)
        result['cosine'] = {name: float(np.mean(values)) for name, values in cosines.items()}
        result['cosine_min'] = {name: min(values) for name, values in cosines.items()}
        result['ops'] = op_precisions(model)
        result['excluded'] = excluded
        worst = min(result['cosine'].items(), key=lambda item: item[1])
        if worst[1] < MIN_COSINE:
            raise InputError(f'the int8 model does not reproduce the fp32 one: output {worst[0]} '
                             f'has a mean cosine similarity of {worst[1]:.4f} < {MIN_COSINE} on '
                             'the calibration images (are they the kind of images the model was '
                             'trained on? try --calib-method percentile); nothing was written')

    try:
        atomic_write(out, write)
    except onnx.checker.ValidationError as error:
        raise InputError(f'onnx.checker rejected the quantized graph: {error}') from error
    int8_ops, float_ops = result['ops']
    kept = {GELU_REASON: result['excluded']} if result['excluded'] else {}
    return Int8Export(out, result['fp32'], calibration.describe(), method, int8_ops, float_ops,
                      kept, result['cosine'], result['cosine_min'])
