"""int8 OpenVINO IR by OpenVINO's own post-training quantizer, NNCF (``--int8-backend openvino``).

The verified fp32 ONNX file is read into OpenVINO, quantized with ``nncf.quantize`` on the same
calibration images as the ONNX Runtime QDQ path (:mod:`.quantize`), and saved as an OpenVINO IR
(``.xml`` + ``.bin``, weights not compressed to fp16):

* ``preset=MIXED``: symmetric int8 weights (per output channel), asymmetric activations, as the
  QDQ file's u8 x s8; ``target_device=CPU``; no ``model_type`` (a CNN, not a transformer);
* the same nodes stay float as in the QDQ file (:func:`.quantize.plan_quantization`: the exact
  GELUs, the output post-processing, a detector's heads and their NMS/TopK/RoiAlign/decoding),
  as NNCF's ignored scope;
* NNCF's fast bias correction (on by default) adjusts the biases of quantized layers so that
  their mean output matches fp32 on the calibration images.

The IR carries the fp32 file's metadata (:mod:`.deployed_io`) in its ``rt_info``
(:mod:`.openvino_ir`), plus ``precision: int8``. It is written only after the int8 IR, run on
OpenVINO, passed the same agreement bounds as the QDQ file (:func:`.quantize.refuse_drift`); the
``.bin`` is moved into place before the ``.xml``, so a reader that finds the ``.xml`` finds its
weights.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write, check_output_path
from repnext_mm.utils.imports import require
from .calibration import ImageSet
from .onnx_export import OnnxExport
from .onnx_runtime import onnxruntime_call
from .openvino_ir import IR_SUFFIX, ir_weights_path, set_ir_metadata
from .openvino_runtime import compiled_call, openvino_model, output_names
from .quantize import (Int8Export, QuantizationPlan, check_method, detection_agreement,
                       cosine_similarity, int8_metadata, plan_quantization, refuse_drift,
                       summarize_detections, with_outputs)

#: What ``--int8-backend`` chooses: the quantizer and the file it writes.
INT8_BACKENDS = {'onnxruntime': '.onnx', 'openvino': IR_SUFFIX}
QUANTIZER = ('nncf.quantize (OpenVINO IR): preset mixed, per-channel symmetric int8 weights, '
             'asymmetric int8 activations, fast bias correction')


def ignored_scope(model, plan: QuantizationPlan):
    """``nncf.IgnoredScope`` of the OpenVINO ops translated from the plan's float ONNX nodes.

    OpenVINO's ONNX reader names an op after its ONNX node (a decomposed node's parts get
    ``name/...``), or after the output tensor for a node that produces a graph output.
    """
    nncf = require('nncf', 'int8 export with --int8-backend openvino')
    onnx_names = set(plan.excluded())
    outside = set(plan.nodes_to_quantize)
    names = []
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        base = name.split('/WithoutBiases')[0]
        tensors = {t for output in op.outputs() for t in output.get_names()}
        float_node = base in onnx_names or bool(tensors & onnx_names)
        if outside and not float_node:  # only the modules' nodes are quantized
            float_node = not (base in outside or any(n.startswith(f'{base}_output')
                                                     for n in tensors))
        if float_node and op.get_type_name() not in ('Constant', 'Parameter', 'Result'):
            names.append(name)
    return nncf.IgnoredScope(names=names, validate=False)


def _openvino_features_call(xml: Path, tensors: Sequence[str], work: Path,
                            threads: int | None = 1) -> Callable[[np.ndarray], dict]:
    """``f(input) -> {name: array}`` of an IR on OpenVINO, also returning the inner ``tensors``."""
    ov = require('openvino', 'int8 export with --int8-backend openvino')
    model = ov.Core().read_model(str(xml))
    if tensors:
        model.add_outputs(list(tensors))
        xml = work / 'int8_features.xml'
        ov.save_model(model, str(xml), compress_to_fp16=False)
    compiled = openvino_model(xml, threads)
    names = output_names(compiled)
    run = compiled_call(compiled)
    return lambda feed: dict(zip(names, run(feed)))


def _onnx_features_call(path: Path, tensors: Sequence[str], work: Path) -> Callable:
    onnx = require('onnx', 'int8 export')
    extended = work / 'fp32_features.onnx'
    onnx.save(with_outputs(onnx.load(str(path)), tensors), str(extended))
    names = [o.name for o in onnx.load(str(extended), load_external_data=False).graph.output]
    run = onnxruntime_call(extended)
    return lambda feed: dict(zip(names, run(feed)))


def ir_agreement(fp32_path: Path, xml: Path, inputs, output_names: Sequence[str], task: str,
                 features: Sequence[str], work: Path) -> tuple[dict[str, list[float]],
                                                               dict | None]:
    """:func:`.quantize.check_agreement` for an IR run on OpenVINO against the fp32 ONNX file
    run on ONNX Runtime."""
    compared = list(features) if task == 'detector' else list(output_names)
    reference = _onnx_features_call(fp32_path, compared, work)
    candidate = _openvino_features_call(xml, [f for f in compared if f not in output_names],
                                        work)
    cosines: dict[str, list[float]] = {name: [] for name in compared}
    agreements = []
    for x in inputs:
        feed = x.numpy()
        expected, actual = reference(feed), candidate(feed)
        for name in compared:
            cosines[name].append(cosine_similarity(actual[name], expected[name]))
        if task == 'detector':
            agreements.append(detection_agreement(expected, actual))
    return cosines, (summarize_detections(agreements) if task == 'detector' else None)


def save_ir_atomically(model, out: Path) -> None:
    """Saves an ``ov.Model`` as ``out`` (.xml) and its ``.bin``, each moved into place whole,
    the weights first."""
    ov = require('openvino', 'int8 export with --int8-backend openvino')
    with tempfile.TemporaryDirectory(prefix='repnext_ir_') as work:
        staged = Path(work) / 'model.xml'
        ov.save_model(model, str(staged), compress_to_fp16=False)
        atomic_write(ir_weights_path(out), lambda tmp: shutil.copyfile(
            ir_weights_path(staged), tmp))
        atomic_write(out, lambda tmp: shutil.copyfile(staged, tmp))


def quantize_openvino_ir(fp32: OnnxExport, out: str | os.PathLike, calibration: ImageSet,
                         task: str, method: str = 'minmax', modules: Sequence[str] | None = None,
                         force: bool = False, log: Callable[[str], None] = print,
                         drift_bound: bool = True) -> Int8Export:
    """Quantizes a verified fp32 ONNX file with NNCF into an int8 OpenVINO IR ``out`` (.xml).

    Args:
        fp32: The fp32 export.
        out: The ``.xml`` path (its ``.bin`` is written beside it).
        calibration: Preprocessed calibration images (as for the QDQ file).
        task: The exported kind (:func:`.quantize.plan_quantization`).
        method: ``'minmax'`` only: NNCF's own range estimator (min/max of the calibration
            images, as the QDQ file's default).
        modules: Quantize only these modules (see :func:`.quantize.plan_quantization`).
        force: Overwrite existing files.
        log: Receives progress lines.
        drift_bound: Refuse a file past the bounds of :func:`refuse_drift` (``False``: only
            to time random weights, whose outputs mean nothing).

    Raises:
        InputError: nncf missing, a bad option, or an IR past the bounds of
            :func:`.quantize.refuse_drift`; nothing is written.
    """
    nncf = require('nncf', 'int8 export with --int8-backend openvino')
    ov = require('openvino', 'int8 export with --int8-backend openvino')
    onnx = require('onnx', 'int8 export')
    nncf.set_log_level(logging.WARNING)  # its INFO lines (one per ignored node) go to stdout
    check_method(method)
    if method != 'minmax':
        raise InputError(f'--calib-method {method} is for the ONNX Runtime quantizer; '
                         '--int8-backend openvino calibrates with NNCF\'s own ranges: leave '
                         '--calib-method out')
    out = Path(out)
    if out.suffix != IR_SUFFIX:
        raise InputError(f'--out {out}: an OpenVINO IR is written as NAME{IR_SUFFIX} (with '
                         'NAME.bin beside it)')
    check_output_path(out, force)
    check_output_path(ir_weights_path(out), force)
    plan = plan_quantization(onnx.load(str(fp32.path)), task, modules)
    model = ov.Core().read_model(str(fp32.path))
    feeds = [x.numpy() for x in calibration.inputs]
    log(f'calibrating (NNCF) on {calibration.describe()}')
    with contextlib.redirect_stdout(sys.stderr):  # NNCF prints progress bars
        quantized = nncf.quantize(model, nncf.Dataset(feeds), preset=nncf.QuantizationPreset.MIXED,
                                  target_device=nncf.TargetDevice.CPU, subset_size=len(feeds),
                                  ignored_scope=ignored_scope(model, plan))
    fp32_metadata = {p.key: p.value for p in
                     onnx.load(str(fp32.path), load_external_data=False).metadata_props}
    metadata = int8_metadata(fp32_metadata, QUANTIZER, f'nncf on {len(feeds)} images',
                             plan.kept_float)
    set_ir_metadata(quantized, metadata)
    with tempfile.TemporaryDirectory(prefix='repnext_nncf_') as work:
        staged = Path(work) / 'int8.xml'
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        cosines, detections = ir_agreement(fp32.path, staged, calibration.inputs,
                                           fp32.output_names, task, plan.features, Path(work))
        cosine = {name: float(np.mean(values)) for name, values in cosines.items()}
        if drift_bound:
            refuse_drift(cosine, detections)
        save_ir_atomically(quantized, out)
    int8_ops = {'FakeQuantize': sum(op.get_type_name() == 'FakeQuantize'
                                    for op in quantized.get_ordered_ops())}
    return Int8Export(out, fp32, calibration.describe(), 'nncf', int8_ops, {}, plan.kept_float,
                      cosine, {name: min(values) for name, values in cosines.items()},
                      detections)
