"""Core ML export (``mlprogram`` ``.mlpackage`` for iOS 16+) with a JSON report.

The fused model is traced and converted with coremltools. The input is an ``ImageType`` so an
app passes a ``CVPixelBuffer`` directly: the data preprocessor's normalization
``(pixel - mean_c) / std_c`` is split into Core ML's image preprocessing ``scale * pixel + bias_c``
(one scale for all channels: ``1 / mean(std)``) and an exact per-channel factor
``mean(std) / std_c`` folded into the first convolution's weights.

Core ML can only load, compile and run models on macOS/iOS; on Linux the package is converted
and described (op histogram, kernel shapes, MACs) but not executed.
"""
from __future__ import annotations

import collections
import copy
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from repnext_mm.benchmark.counting import count_macs, count_params
from repnext_mm.utils.errors import InputError
from .exportable import ExportWrapper, fold_input_channel_scale
from repnext_mm.apis.model import Preprocessing
from repnext_mm.utils.fileio import atomic_write, atomic_write_json, check_output_path

Precision = Literal['fp16', 'fp32']
COMPUTE_UNITS = ('ALL', 'CPU_AND_NE', 'CPU_AND_GPU', 'CPU_ONLY')
INPUT_NAME = 'image'

LINUX_NOTE = (
    'Core ML cannot load, compile or run a model on {system}: prediction needs macOS or iOS. The '
    '.mlpackage was converted and described only. To measure latency as in the paper (iPhone, '
    'median of 20+ runs): export with --ios-bench DIR and run the printed xcodebuild line on a Mac '
    'with the iPhone attached, or open the .mlpackage in Xcode (Performance tab, "+", choose the '
    'device) for a performance report.')


def require_coremltools():
    try:
        import coremltools as ct
    except ImportError as error:
        raise InputError('Core ML export needs coremltools: pip install coremltools '
                          '(with -c requirements/constraints.txt)') from error
    return ct


@dataclass
class CoreMLExport:
    """Result of :func:`export_coreml`.

    Attributes:
        path: The written ``.mlpackage``.
        report_path: The JSON report beside it.
        report: The report's content.
    """
    path: Path
    report_path: Path
    report: dict


def _walk_operations(block) -> list:
    operations = []
    for op in block.operations:
        operations.append(op)
        for inner in getattr(op, 'blocks', ()) or ():
            operations.extend(_walk_operations(inner))
    return operations


def describe_mil_program(program) -> dict[str, Any]:
    """Op-type histogram and convolution kernel-shape histogram of a converted MIL program."""
    ops = [op for function in program.functions.values() for op in _walk_operations(function)]
    histogram = collections.Counter(op.op_type for op in ops)
    kernels = collections.Counter()
    for op in ops:
        if op.op_type != 'conv':
            continue
        out_channels, in_per_group, kh, kw = op.inputs['weight'].shape
        groups = int(op.inputs['groups'].val) if 'groups' in op.inputs else 1
        strides = tuple(int(s) for s in op.inputs['strides'].val) if 'strides' in op.inputs else (1, 1)
        dilations = (tuple(int(d) for d in op.inputs['dilations'].val)
                     if 'dilations' in op.inputs else (1, 1))
        if groups > 1 and in_per_group == 1:
            kind = 'depthwise'
        elif (kh, kw) == (1, 1):
            kind = 'pointwise'
        else:
            kind = 'dense'
        label = f'{kind} {kh}x{kw}'
        if strides != (1, 1):
            label += f' stride {strides[0]}x{strides[1]}'
        if dilations != (1, 1):
            label += f' dilation {dilations[0]}x{dilations[1]}'
        kernels[label] += 1
    return dict(op_histogram=dict(histogram.most_common()), conv_kernels=dict(kernels.most_common()),
                num_ops=sum(v for k, v in histogram.items() if k != 'const'))


def _feature_shapes(spec) -> tuple[list[dict], list[dict]]:
    def describe(feature) -> dict:
        kind = feature.type.WhichOneof('Type')
        if kind == 'imageType':
            image = feature.type.imageType
            from coremltools.proto import FeatureTypes_pb2
            layout = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)
            return dict(name=feature.name, type='image', height=int(image.height),
                        width=int(image.width), color_layout=layout)
        array = feature.type.multiArrayType
        from coremltools.proto import FeatureTypes_pb2
        dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
        return dict(name=feature.name, type='multiarray', shape=[int(s) for s in array.shape],
                    dtype=dtype)
    return ([describe(f) for f in spec.description.input],
            [describe(f) for f in spec.description.output])


def export_coreml(wrapper: ExportWrapper, shape: tuple[int, int], out: str | os.PathLike,
                  preprocessing: Preprocessing, precision: Precision = 'fp16',
                  force: bool = False, description: dict | None = None,
                  log: Callable[[str], None] = print) -> CoreMLExport:
    """Traces the fused ``wrapper`` and writes ``out`` (.mlpackage) plus ``out`` + ``.json``.

    Args:
        wrapper: Fused model wrapper (it is copied; the caller's weights are not changed).
        shape: Input ``(height, width)``.
        out: ``.mlpackage`` path.
        preprocessing: Normalization to fold into the image input.
        precision: ``'fp16'`` (default, as deployed) or ``'fp32'`` compute precision.
        force: Overwrite existing outputs.
        description: Extra fields for the report (model, weights, arch).
        log: Receives progress lines.
    """
    ct = require_coremltools()
    out = Path(out)
    if out.suffix != '.mlpackage':
        raise InputError(f'a Core ML ML program is saved as a .mlpackage directory; got --out {out}')
    report_path = out.with_suffix('.json')
    check_output_path(out, force, kind='dir')
    check_output_path(report_path, force)

    height, width = shape
    example = torch.zeros(1, 3, height, width)
    wrapper = copy.deepcopy(wrapper).eval()
    with torch.no_grad():
        torch_outputs = wrapper(example)
    params = count_params(wrapper)
    macs = count_macs(wrapper, example)

    # scale * pixel + bias_c == (pixel - mean_c) / std_ref, then * std_ref / std_c in the conv.
    std_ref = sum(preprocessing.std) / 3
    channel_scale = torch.tensor([std_ref / s for s in preprocessing.std])
    folded = True
    if not torch.allclose(channel_scale, torch.ones(3)):
        folded = fold_input_channel_scale(wrapper, channel_scale)
        if not folded:
            raise InputError('the per-channel std of the data preprocessor cannot be folded: the '
                              'first layer is not a plain 3-channel convolution')
    scale = 1.0 / std_ref
    bias = [-m / std_ref for m in preprocessing.mean]

    traced = torch.jit.trace(wrapper, example, check_trace=False)
    layout = ct.colorlayout.RGB if preprocessing.color_layout == 'RGB' else ct.colorlayout.BGR
    log(f'converting to Core ML ({precision}, iOS16 mlprogram); this takes a minute or two')
    started = time.perf_counter()
    mlmodel = ct.convert(
        traced,
        inputs=[ct.ImageType(name=INPUT_NAME, shape=example.shape, scale=scale, bias=bias,
                             color_layout=layout)],
        outputs=[ct.TensorType(name=name) for name in wrapper.output_names],
        convert_to='mlprogram',
        minimum_deployment_target=ct.target.iOS16,
        compute_precision=ct.precision.FLOAT16 if precision == 'fp16' else ct.precision.FLOAT32,
    )
    seconds = time.perf_counter() - started
    mlmodel.short_description = (description or {}).get('model', 'RepNeXt')
    mlmodel.user_defined_metadata['repnext_mm.preprocessing'] = (
        f'{preprocessing.color_layout} pixels 0-255; (pixel - {list(preprocessing.mean)}) / '
        f'{list(preprocessing.std)} built in')

    inputs, outputs = _feature_shapes(mlmodel.get_spec())
    program_info = describe_mil_program(mlmodel._mil_program)
    import coremltools
    report = dict(
        **(description or {}),
        format='mlprogram (.mlpackage)',
        minimum_deployment_target='iOS16',
        precision=precision,
        input_shape=[1, 3, height, width],
        inputs=inputs,
        outputs=outputs,
        torch_output_shapes={n: list(t.shape) for n, t in zip(wrapper.output_names, torch_outputs)},
        preprocessing=dict(color_layout=preprocessing.color_layout, mean=list(preprocessing.mean),
                           std=list(preprocessing.std), image_scale=scale, image_bias=bias,
                           per_channel_std_folded_into_first_conv=[float(s) for s in channel_scale]),
        params=params,
        macs=macs,
        gmacs=round(macs / 1e9, 4),
        **program_info,
        conversion_seconds=round(seconds, 1),
        coremltools_version=coremltools.__version__,
        torch_version=str(torch.__version__),
        converted_on=f'{platform.system()} {platform.machine()}',
    )
    atomic_write(out, lambda tmp: mlmodel.save(str(tmp)))
    atomic_write_json(report, report_path)
    return CoreMLExport(out, report_path, report)


def can_run_coreml() -> bool:
    """Core ML prediction exists on macOS only (and iOS)."""
    return sys.platform == 'darwin'


def time_coreml(path: str | os.PathLike, shape: tuple[int, int], compute_units=COMPUTE_UNITS,
                warmup: int = 5, runs: int = 20) -> dict[str, dict]:
    """Median ``MLModel.predict`` latency per compute unit (macOS only).

    Returns:
        ``{compute unit: {'median_ms', 'p25_ms', 'p75_ms', 'runs'}}``.
    """
    if not can_run_coreml():
        raise InputError(LINUX_NOTE.format(system=platform.system()))
    ct = require_coremltools()
    from PIL import Image

    height, width = shape
    image = Image.new('RGB', (width, height), color=(124, 116, 104))
    results = {}
    for unit in compute_units:
        model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, unit))
        for _ in range(warmup):
            model.predict({INPUT_NAME: image})
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            model.predict({INPUT_NAME: image})
            samples.append((time.perf_counter() - start) * 1e3)
        quartiles = statistics.quantiles(samples, n=4)
        results[unit] = dict(median_ms=statistics.median(samples), p25_ms=quartiles[0],
                             p75_ms=quartiles[2], runs=runs)
    return results


def output_shapes(report: dict) -> dict[str, list[int]]:
    """``{output name: shape}`` from an export report (as Core ML declares them)."""
    return {o['name']: o['shape'] for o in report['outputs'] if o['type'] == 'multiarray'}
