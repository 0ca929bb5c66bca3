"""Core ML export (``mlprogram`` ``.mlpackage`` for iOS 16+) with a JSON report.

The fused model is traced and converted with coremltools. The input is an ``ImageType`` so an
app passes a ``CVPixelBuffer`` directly: the data preprocessor's normalization
``(pixel - mean_c) / std_c`` is split into Core ML's image preprocessing ``scale * pixel + bias_c``
(one scale for all channels: ``1 / mean(std)``) and an exact per-channel factor
``mean(std) / std_c`` folded into the first convolution's weights.

Optionally the weights are compressed with ``coremltools.optimize.coreml`` (``compression``):
int8 linear quantization or k-means palettization (a lookup table of 2^n values per tensor). The
report then holds the package size before and after, the error of every compressed weight as
coremltools decompresses it (``decompress_weights``), and the outputs of the model run in torch
with those decompressed weights: what can be checked without Core ML's runtime.

Core ML can only load, compile and run models on macOS/iOS; on Linux the package is converted
and described (op histogram, kernel shapes, MACs) but not executed.
"""
from __future__ import annotations

import collections
import copy
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from repnext_mm.apis.model import Preprocessing
from repnext_mm.models.utils.complexity import count_macs, count_params
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write, atomic_write_json, check_output_path
from repnext_mm.utils.imports import require
from .exportable import ExportWrapper, fold_input_channel_scale
from .verify import example_inputs

Precision = Literal['fp16', 'fp32']
#: ``--coreml-compress`` choices: int8 = per-channel symmetric linear quantization of the
#: weights; palettizeN = per-tensor k-means lookup table of 2^N values (iOS 16 ops).
COMPRESSIONS = ('none', 'int8', 'palettize8', 'palettize6', 'palettize4')
#: Weights with fewer elements stay uncompressed (coremltools' default: a scale or lookup table
#: per tensor would cost more than the few bytes saved).
COMPRESSION_WEIGHT_THRESHOLD = 2048
COMPUTE_UNITS = ('ALL', 'CPU_AND_NE', 'CPU_AND_GPU', 'CPU_ONLY')
INPUT_NAME = 'image'

LINUX_NOTE = (
    'Core ML cannot load, compile or run a model on {system}: prediction needs macOS or iOS. The '
    '.mlpackage was converted and described only. To measure latency as in the paper (iPhone, '
    'median of 20+ runs): export with --ios-bench DIR and run the printed xcodebuild line on a Mac '
    'with the iPhone attached, or open the .mlpackage in Xcode (Performance tab, "+", choose the '
    'device) for a performance report.')


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


def compress_weights(mlmodel, compression: str):
    """The ``mlmodel`` with its weights compressed by ``coremltools.optimize.coreml``.

    Args:
        mlmodel: A converted ML program.
        compression: One of :data:`COMPRESSIONS` other than ``'none'``.
    """
    ct = require('coremltools', 'Core ML export')
    optimize = ct.optimize.coreml
    if compression == 'int8':
        config = optimize.OpLinearQuantizerConfig(
            mode='linear_symmetric', weight_threshold=COMPRESSION_WEIGHT_THRESHOLD)
        return optimize.linear_quantize_weights(mlmodel, optimize.OptimizationConfig(config))
    if compression.startswith('palettize'):
        nbits = int(compression[len('palettize'):])
        config = optimize.OpPalettizerConfig(mode='kmeans', nbits=nbits,
                                             weight_threshold=COMPRESSION_WEIGHT_THRESHOLD)
        return optimize.palettize_weights(mlmodel, optimize.OptimizationConfig(config))
    raise InputError(f'--coreml-compress must be one of {", ".join(COMPRESSIONS)}, '
                     f'got {compression!r}')


def mil_weights(mlmodel) -> dict[str, np.ndarray]:
    """``{name: value}`` of every constant of an ML program, compressed ones decompressed.

    Uses coremltools' own ``decompress_weights`` and ``get_weights_metadata`` (both run on
    Linux: they rewrite the MIL program, nothing is executed). A decompressed weight keeps its
    compressed name (``..._quantized``, ``..._palettized``).
    """
    optimize = require('coremltools', 'Core ML export').optimize.coreml
    decompressed = optimize.decompress_weights(mlmodel)
    metadata = optimize.get_weights_metadata(decompressed, weight_threshold=0)
    return {name: np.asarray(entry.val) for name, entry in metadata.items()}


_COMPRESSED_SUFFIX = re.compile(r'_(quantized|palettized)$')


def _torch_name(mil_name: str) -> str:
    """MIL constant name -> ``_``-joined torch parameter name (``net_stem_0_conv_weight``)."""
    return re.sub(r'_to_fp16$', '', _COMPRESSED_SUFFIX.sub('', mil_name))


@torch.no_grad()
def with_mil_weights(module: nn.Module,
                     weights: Mapping[str, np.ndarray]) -> tuple[nn.Module, list[str]]:
    """A copy of the traced ``module`` whose parameters are the ML program's constants.

    The torch frontend names a parameter's constant after the parameter (``net.stem.0.conv.weight``
    -> ``net_stem_0_conv_weight_to_fp16``); a constant that maps to no parameter of the same
    shape is left out.

    Returns:
        The copy and the names of the constants that replaced a parameter.
    """
    module = copy.deepcopy(module)
    params = {name.replace('.', '_'): p for name, p in module.named_parameters()}
    replaced = []
    for name, value in weights.items():
        param = params.get(_torch_name(name))
        if param is not None and tuple(param.shape) == value.shape:
            param.copy_(torch.from_numpy(value.astype(np.float32)))
            replaced.append(name)
    return module, replaced


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    expected = expected.astype(np.float64)
    norm = np.linalg.norm(expected)
    return float(np.linalg.norm(actual.astype(np.float64) - expected) / norm) if norm else 0.0


def _output_agreement(actual: Sequence[Tensor], expected: Sequence[Tensor],
                      names: Sequence[str]) -> dict[str, dict[str, float]]:
    from .quantize import cosine_similarity

    return {name: dict(cosine=round(cosine_similarity(a.numpy(), e.numpy()), 6),
                       relative_error=round(_relative_error(a.numpy(), e.numpy()), 6))
            for name, a, e in zip(names, actual, expected)}


def package_bytes(path: str | os.PathLike) -> int:
    """Total size of the files of an ``.mlpackage`` (or any folder)."""
    return sum(f.stat().st_size for f in Path(path).rglob('*') if f.is_file())


def describe_compression(mlmodel, compressed, module: nn.Module, example: Tensor,
                         output_names: Sequence[str], compression: str) -> dict[str, Any]:
    """Sizes, weight errors and torch-replayed output agreement of a compressed ML program.

    Args:
        mlmodel: The uncompressed ML program.
        compressed: ``mlmodel`` after :func:`compress_weights`.
        module: The traced module (its parameters are ``mlmodel``'s weights).
        example: A normalized input for the output comparison.
        output_names: Names of ``module``'s outputs.
        compression: The :data:`COMPRESSIONS` entry used.

    Returns:
        ``package_bytes`` before/after; per compressed weight the relative error of its
        decompressed value; and the outputs of ``module`` run with the uncompressed (fp16) and
        with the decompressed weights, each compared with ``module``'s own (fp32) outputs.
    """
    with tempfile.TemporaryDirectory(prefix='repnext_coreml_') as work:
        before, after = Path(work) / 'before.mlpackage', Path(work) / 'after.mlpackage'
        mlmodel.save(str(before))
        compressed.save(str(after))
        sizes = dict(before=package_bytes(before), after=package_bytes(after))
    original, decompressed = mil_weights(mlmodel), mil_weights(compressed)
    errors = {name: _relative_error(value, original[_COMPRESSED_SUFFIX.sub('', name)])
              for name, value in decompressed.items()
              if _COMPRESSED_SUFFIX.search(name) and _COMPRESSED_SUFFIX.sub('', name) in original}
    with torch.no_grad():
        reference = module(example)
        uncompressed_module, _ = with_mil_weights(module, original)
        compressed_module, replaced = with_mil_weights(module, decompressed)
        fp16 = uncompressed_module(example)
        replayed = compressed_module(example)
    elements = {name: decompressed[name].size for name in replaced}
    compressed_elements = sum(elements.get(name, 0) for name in errors)
    return dict(
        kind=compression,
        package_bytes=sizes,
        size_ratio=round(sizes['after'] / sizes['before'], 4),
        compressed_weights=len(errors),
        parameter_tensors=len(replaced),
        compressed_fraction_of_parameters=round(compressed_elements / max(sum(elements.values()),
                                                                         1), 4),
        left_uncompressed=f'{len(replaced) - len(errors)} parameter tensors (biases, small '
                          f'kernels) below {COMPRESSION_WEIGHT_THRESHOLD} elements stay '
                          'uncompressed',
        weight_relative_error=dict(max=round(max(errors.values(), default=0.0), 6),
                                   mean=round(float(np.mean(list(errors.values()) or [0.0])), 6)),
        torch_replay=dict(
            parameters_replaced=len(replaced),
            note='outputs of the traced torch module run with the ML program\'s weights as '
                 'coremltools decompresses them, vs the fp32 torch outputs; Core ML\'s own '
                 'fp16 arithmetic needs macOS',
            uncompressed_weights=_output_agreement(fp16, reference, output_names),
            compressed_weights=_output_agreement(replayed, reference, output_names)),
    )


def export_coreml(wrapper: ExportWrapper, shape: tuple[int, int], out: str | os.PathLike,
                  preprocessing: Preprocessing, precision: Precision = 'fp16',
                  force: bool = False, description: dict | None = None,
                  log: Callable[[str], None] = print, compression: str = 'none') -> CoreMLExport:
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
        compression: Weight compression, one of :data:`COMPRESSIONS` (see
            :func:`describe_compression` for what the report then holds).
    """
    ct = require('coremltools', 'Core ML export')
    if compression not in COMPRESSIONS:
        raise InputError(f'--coreml-compress must be one of {", ".join(COMPRESSIONS)}, '
                         f'got {compression!r}')
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
    compression_info = None
    if compression != 'none':
        log(f'compressing the weights ({compression}) with coremltools.optimize.coreml')
        compressed = compress_weights(mlmodel, compression)
        compression_info = describe_compression(mlmodel, compressed, wrapper,
                                                example_inputs(shape), wrapper.output_names,
                                                compression)
        mlmodel = compressed
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
    if compression_info is not None:
        report['compression'] = compression_info
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
    ct = require('coremltools', 'Core ML export')
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
