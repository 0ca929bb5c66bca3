"""Core ML or ONNX export of a config's model, end to end: the logic of ``tools/deploy/export.py``.

:func:`run_export` builds and fuses the model, exports it (ONNX: checked against torch with
onnxruntime, optionally quantized to int8 on calibration images (:mod:`.quantize`); Core ML:
converted, optionally weight-compressed, on macOS also timed, optionally wrapped in the Xcode
test package of :mod:`.ios_bench`) with a step-by-step progress display on stderr, and prints
what was written on stdout. Every option is checked before the slow steps.

Example:
    >>> run_export(ExportSettings('configs/mmpretrain/repnext_m1_8xb256_in1k.py', 'onnx',
    ...                           checkpoint='m1.pth'))
"""
from __future__ import annotations

import json
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from repnext_mm.apis.model import Preprocessing, PreparedModel, prepare_model, preprocessing_of
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import check_output_path
from repnext_mm.utils.imports import require
from repnext_mm.utils.progress import StepProgress
from .calibration import DEFAULT_CALIBRATION_IMAGES, PipelineInputs, calibration_dir, list_images
from .coreml import (COMPRESSIONS, LINUX_NOTE, CoreMLExport, Precision, can_run_coreml,
                     export_coreml, time_coreml)
from .deployed_io import (config_classes, config_num_classes, deployed_metadata,
                          detector_test_settings)
from .detector_check import DetectorCheck, check_detector_file
from .detector_graph import detector_input_shape
from .exportable import ExportWrapper
from .ios_bench import IOSBench, write_ios_bench
from .onnx_export import MIN_OPSET, OnnxExport, export_onnx
from .nncf_quantize import INT8_BACKENDS, quantize_openvino_ir
from .quantize import (CALIBRATION_METHODS, MATCH_IOU, Int8Export, check_method,
                       quantize_onnx_file)
from .verify import DEFAULT_SHAPES, check_input_shape

FORMATS = ('coreml', 'onnx')

BUILD_STEP = 'building and fusing the model'
ONNX_STEP = 'exporting to ONNX and checking it with onnxruntime'
CALIBRATION_STEP = 'reading the calibration images through the test pipeline'
INT8_STEP = 'exporting to ONNX, quantizing to int8 and comparing with fp32'
COREML_STEP = 'tracing and converting to Core ML'
TIMING_STEP = 'timing MLModel.predict'
IOS_BENCH_STEP = 'writing the Xcode test package'


@dataclass
class ExportSettings:
    """What ``tools/deploy/export.py`` exports (its command line options).

    Attributes:
        config: Classifier, detector or segmentor config.
        format: ``'coreml'`` (.mlpackage) or ``'onnx'``.
        checkpoint: Training or fused checkpoint; ``None`` for random weights.
        shape: Input ``(height, width)``; default :data:`~.verify.DEFAULT_SHAPES` of the
            exported kind (224x224 for classifiers, else 512x512).
        backbone_only: Export only the backbone (all its stage outputs); required for detectors.
        out: Output path; default derived from the config name (:func:`default_out_path`).
        precision: Core ML compute precision.
        opset: ONNX opset, at least 17.
        ios_bench: Core ML only: folder for the Xcode test package that times the model on an
            iPhone.
        force: Overwrite existing outputs.
        unsafe_full_unpickle: Unpickle arbitrary objects in the checkpoint (trusted files only).
        cfg_options: Config overrides.
        int8: ONNX only: post-training static int8 quantization (:mod:`.quantize`).
        calib_dir: Calibration image folder; default the config's test dataloader folder.
        calib_images: How many calibration images (evenly spaced over the folder); default
            :data:`~.calibration.DEFAULT_CALIBRATION_IMAGES`.
        calib_method: Calibration method, a key of :data:`~.quantize.CALIBRATION_METHODS`;
            default ``'minmax'``.
        coreml_compress: Core ML weight compression, one of :data:`~.coreml.COMPRESSIONS`.
        seg_argmax: Segmentor only: also output the argmax class map ``seg_map``.
        int8_backend: With ``int8``, the quantizer and the file it writes, a key of
            :data:`~.nncf_quantize.INT8_BACKENDS`: ``'onnxruntime'`` (a QDQ ``.onnx`` that both
            runtimes run) or ``'openvino'`` (NNCF: an OpenVINO IR ``.xml`` + ``.bin``).
        int8_drift_bound: With ``int8``, refuse a file whose outputs drift past the bounds of
            :func:`~.quantize.refuse_drift`. Not a command-line option: ``False`` only for
            timing random weights (``tools/analysis/benchmark_deployed.py``).
    """
    config: str
    format: str
    checkpoint: str | None = None
    shape: Sequence[int] | None = None
    backbone_only: bool = False
    out: str | None = None
    precision: Precision = 'fp16'
    opset: int = MIN_OPSET
    ios_bench: str | None = None
    force: bool = False
    unsafe_full_unpickle: bool = False
    cfg_options: dict[str, Any] | None = None
    int8: bool = False
    calib_dir: str | None = None
    calib_images: int | None = None
    calib_method: str | None = None
    coreml_compress: str = 'none'
    seg_argmax: bool = False
    int8_backend: str | None = None
    int8_drift_bound: bool = True


@dataclass
class CoreMLRun:
    """Result of a Core ML :func:`run_export`.

    Attributes:
        export: The package and its report.
        timings: ``MLModel.predict`` latency per compute unit (macOS only, else ``None``).
        bench: The Xcode test package, if asked for.
    """
    export: CoreMLExport
    timings: dict[str, dict] | None = None
    bench: IOSBench | None = None


def check_settings(settings: ExportSettings) -> None:
    """Refuses option combinations that cannot work, before anything is built.

    Raises:
        InputError: Unknown format, ``ios_bench`` without Core ML, a shape below 32x32, int8 or
            calibration options without ONNX int8, Core ML compression without Core ML, or an
            explicit calibration folder without images.
    """
    if settings.format not in FORMATS:
        raise InputError(f'--format must be one of {", ".join(FORMATS)}, got {settings.format!r}')
    if settings.ios_bench and settings.format != 'coreml':
        raise InputError('--ios-bench needs --format coreml (the iPhone test runs a Core ML model)')
    check_input_shape(settings.shape)
    _check_quantization_settings(settings)


def _check_quantization_settings(settings: ExportSettings) -> None:
    if settings.int8 and settings.format != 'onnx':
        raise InputError('--int8 needs --format onnx (for Core ML, compress the weights with '
                         '--coreml-compress int8)')
    calibration = dict(calib_dir=settings.calib_dir, calib_images=settings.calib_images,
                       calib_method=settings.calib_method, int8_backend=settings.int8_backend)
    given = [f'--{key.replace("_", "-")}' for key, value in calibration.items()
             if value is not None]
    if given and not settings.int8:
        raise InputError(f'{", ".join(given)}: only for an int8 export; add --int8')
    if settings.calib_method is not None and settings.calib_method not in CALIBRATION_METHODS:
        raise InputError(f'--calib-method must be one of {", ".join(CALIBRATION_METHODS)}, got '
                         f'{settings.calib_method!r}')
    if settings.int8_backend is not None and settings.int8_backend not in INT8_BACKENDS:
        raise InputError(f'--int8-backend must be one of {", ".join(INT8_BACKENDS)}, got '
                         f'{settings.int8_backend!r}')
    if settings.int8_backend == 'openvino' and settings.calib_method not in (None, 'minmax'):
        raise InputError('--calib-method is for the ONNX Runtime quantizer; --int8-backend '
                         "openvino calibrates with NNCF's own ranges: leave --calib-method out")
    if settings.calib_images is not None and settings.calib_images < 1:
        raise InputError(f'--calib-images must be >= 1, got {settings.calib_images}')
    if settings.coreml_compress not in COMPRESSIONS:
        raise InputError(f'--coreml-compress must be one of {", ".join(COMPRESSIONS)}, got '
                         f'{settings.coreml_compress!r}')
    if settings.coreml_compress != 'none' and settings.format != 'coreml':
        raise InputError('--coreml-compress needs --format coreml (for ONNX, quantize with --int8)')
    if settings.calib_dir is not None:
        list_images(settings.calib_dir)  # a missing or image-less folder fails before the build


def export_steps(settings: ExportSettings, times_on_this_machine: bool) -> list[str]:
    """The steps :func:`run_export` goes through, for the progress display."""
    if settings.format == 'onnx':
        return [BUILD_STEP] + ([CALIBRATION_STEP, INT8_STEP] if settings.int8 else [ONNX_STEP])
    steps = [BUILD_STEP, COREML_STEP]
    if times_on_this_machine:
        steps.append(TIMING_STEP)
    if settings.ios_bench:
        steps.append(IOS_BENCH_STEP)
    return steps


def model_name(config: str, backbone_only: bool) -> str:
    """The exported model's name: the config's file stem, plus ``_backbone`` for a backbone."""
    return Path(config).stem + ('_backbone' if backbone_only else '')


def default_out_path(config: str, format: str, backbone_only: bool,
                     shape: Sequence[int], variant: str | None = None) -> Path:
    """``<config stem>[_backbone]_<H>x<W>[_<variant>].mlpackage`` (or ``.onnx``) in the working
    folder; ``variant`` names a quantized or compressed form (``int8``, ``palettize6``)."""
    suffix = '.mlpackage' if format == 'coreml' else '.onnx'
    if variant == 'int8_openvino':
        variant, suffix = 'int8', INT8_BACKENDS['openvino']
    variant = f'_{variant}' if variant else ''
    return Path(f'{model_name(config, backbone_only)}_{shape[0]}x{shape[1]}{variant}{suffix}')


def output_variant(settings: ExportSettings) -> str | None:
    """``'int8'``, the Core ML compression, or ``None`` for the plain export."""
    if settings.int8:
        return 'int8_openvino' if settings.int8_backend == 'openvino' else 'int8'
    return settings.coreml_compress if settings.coreml_compress != 'none' else None


def _check_model_output(settings: ExportSettings, out: Path) -> None:
    """Fails before the slow conversion if the model's output path exists (without force) or
    cannot be written (:func:`~repnext_mm.utils.fileio.check_output_path`)."""
    check_output_path(out, settings.force, kind='dir' if settings.format == 'coreml' else 'file')


def _check_given_outputs(settings: ExportSettings) -> None:
    """Checks the output paths given as options before any work (a derived ``--out`` depends on
    the model's kind and is checked once the model is built)."""
    if settings.out:
        _check_model_output(settings, Path(settings.out))
    if settings.ios_bench:
        check_output_path(settings.ios_bench, settings.force, kind='dir')


def _export_coreml(settings: ExportSettings, prepared: PreparedModel, wrapper: ExportWrapper,
                   shape: tuple[int, int], out: Path, preprocessing: Preprocessing,
                   progress: StepProgress, times_on_this_machine: bool) -> CoreMLRun:
    """Converts, times (macOS only) and wraps in the Xcode test package (if asked for)."""
    description = dict(model=model_name(settings.config, settings.backbone_only),
                       config=str(settings.config), weights=prepared.weights,
                       arch=prepared.arch, task=prepared.task, exported=wrapper.kind)
    progress.start(COREML_STEP)
    run = CoreMLRun(export_coreml(wrapper, shape, out, preprocessing,
                                  precision=settings.precision, force=settings.force,
                                  description=description,
                                  compression=settings.coreml_compress))
    if times_on_this_machine:
        progress.start(TIMING_STEP)
        run.timings = time_coreml(run.export.path, shape)
    if settings.ios_bench:
        progress.start(IOS_BENCH_STEP)
        run.bench = write_ios_bench(settings.ios_bench, run.export.path, run.export.report,
                                    force=settings.force)
    return run


def print_onnx_report(result: OnnxExport, opset: int) -> None:
    """The written file, the parity check and the output shapes."""
    if result.file_check is None:
        print(f'wrote {result.path} (opset {opset}; onnxruntime vs torch: {result.difference})')
    else:
        print(f'wrote {result.path} (opset {opset})')
    for name, shape in result.output_shapes.items():
        print(f'  output {name}: {shape}')
    for check in result.file_check or ():
        print(f'  onnxruntime detections {check.describe()}')


def _export_int8(settings: ExportSettings, prepared: PreparedModel, wrapper: ExportWrapper,
                 shape: tuple[int, int], out: Path, preprocessing: Preprocessing,
                 progress: StepProgress) -> Int8Export:
    """Reads the calibration images, exports the verified fp32 graph (with the deployment
    metadata, which the int8 file keeps) to a temporary file, then quantizes and checks it with
    the chosen backend (:data:`~.nncf_quantize.INT8_BACKENDS`).

    A detector's calibration images are zero-padded to the export size (its file's input),
    every other model's resized to it where the pipeline gives another size.
    """
    check_method(settings.calib_method or 'minmax', wrapper.kind)  # before the slow steps
    progress.start(CALIBRATION_STEP)
    folder = settings.calib_dir or calibration_dir(prepared.cfg, 'test')
    reader = PipelineInputs(prepared.cfg, prepared.fused().data_preprocessor, shape,
                            pad=wrapper.kind == 'detector')
    calibration = reader.read_folder(folder, settings.calib_images or DEFAULT_CALIBRATION_IMAGES)
    progress.start(INT8_STEP)
    with tempfile.TemporaryDirectory(prefix='repnext_int8_fp32_') as work:
        fp32_path = Path(work) / 'fp32.onnx'
        fp32 = export_onnx(wrapper, shape, fp32_path, wrapper.output_names, opset=settings.opset,
                           preprocessing=preprocessing, force=True,
                           metadata=file_metadata(settings.config, prepared.cfg, wrapper, shape),
                           check_file=file_check(prepared, wrapper, shape),
                           check_parity=wrapper.kind != 'detector')
        quantize = (quantize_openvino_ir if settings.int8_backend == 'openvino'
                    else quantize_onnx_file)
        return quantize(fp32, out, calibration, wrapper.kind,
                        method=settings.calib_method or 'minmax', force=settings.force,
                        drift_bound=settings.int8_drift_bound)


def print_int8_report(result: Int8Export, opset: int) -> None:
    """The written file, its calibration, which ops run in int8, and its agreement with fp32."""
    def counts(ops: dict[str, int]) -> str:
        return ', '.join(f'{op} {n}' for op, n in ops.items()) or 'none'

    kind = ('OpenVINO IR by NNCF' if result.path.suffix == INT8_BACKENDS['openvino']
            else 'int8 QDQ')
    if result.fp32.file_check is None:
        print(f'wrote {result.path} ({kind}, opset {opset}; fp32 graph vs torch: '
              f'{result.fp32.difference})')
    else:
        print(f'wrote {result.path} ({kind}, opset {opset})')
    for check in result.fp32.file_check or ():
        print(f'  fp32 graph on onnxruntime, detections {check.describe()}')
    print(f'  calibration: {result.method} on {result.calibration}')
    print(f'  int8 ops: {counts(result.int8_ops)}')
    if kind == 'int8 QDQ':
        print(f'  float ops: {counts(result.float_ops)}')
    for reason, nodes in result.kept_float.items():
        print(f'  excluded from quantization: {len(nodes)} nodes, {reason}')
    for name, cosine in result.cosine.items():
        what = (f'output {name}: {result.fp32.output_shapes[name]}'
                if name in result.fp32.output_shapes else f'feature {name}')
        print(f'  {what}, int8 vs fp32 cosine similarity {cosine:.4f} on the calibration '
              f'images (lowest {result.cosine_min[name]:.4f})')
    if result.detections is not None:
        found = result.detections
        print(f'  detections: {found["matched"]} of {found["reference"]} fp32 detections matched '
              f'by {found["candidate"]} int8 ones (same label, IoU >= {MATCH_IOU}) on '
              f'{found["images"]} calibration images; mean agreement (F1) '
              f'{found["agreement"]:.3f}, lowest matched IoU {found["worst_iou"]:.3f}, largest '
              f'score difference {found["max_score_difference"]:.3f}')


def print_coreml_report(run: CoreMLRun, shape: tuple[int, int], color_layout: str) -> None:
    """The written files, the model's interface and size, and its timings or how to get them.

    Timings exist on macOS only; elsewhere the note on what Core ML cannot do here is printed.
    With an Xcode test package, the command that runs it on an iPhone ends the report.
    """
    report = run.export.report
    height, width = shape
    outputs = ', '.join(f'{o["name"]} {o.get("shape")}' for o in report['outputs'])
    print(f'wrote {run.export.path} and {run.export.report_path}')
    print(f'  input {report["inputs"][0]["name"]}: {width}x{height} {color_layout} image; '
          f'outputs: {outputs}')
    print(f'  {report["params"] / 1e6:.2f} M params, {report["gmacs"]:.2f} GMACs, '
          f'{report["num_ops"]} ops: ' + json.dumps(report['op_histogram']))
    if 'compression' in report:
        print_compression(report['compression'])
    if run.timings is not None:
        for unit, stats in run.timings.items():
            print(f'  MLModel.predict {unit}: median {stats["median_ms"]:.2f} ms '
                  f'(IQR {stats["p75_ms"] - stats["p25_ms"]:.2f} ms, {stats["runs"]} runs)')
    else:
        print(LINUX_NOTE.format(system=platform.system()))
    if run.bench is not None:
        print(f'wrote the Xcode test package {run.bench.directory}; on a Mac with the iPhone '
              'attached (device id: xcrun xctrace list devices) run:')
        print(f'  {run.bench.command}')


def print_compression(info: dict) -> None:
    """Sizes before/after, weight errors and the torch replay of a compressed Core ML model."""
    sizes = info['package_bytes']
    print(f'  weights compressed ({info["kind"]}): {info["compressed_weights"]} of '
          f'{info["parameter_tensors"]} parameter tensors, '
          f'{info["compressed_fraction_of_parameters"]:.1%} of the parameters; package '
          f'{sizes["before"] / 1e6:.2f} MB -> {sizes["after"] / 1e6:.2f} MB')
    error = info['weight_relative_error']
    print(f'  decompressed weights vs uncompressed: relative error max {error["max"]:.4f}, '
          f'mean {error["mean"]:.4f}')
    for name, agreement in info['torch_replay']['compressed_weights'].items():
        print(f'  output {name} in torch with the decompressed weights vs fp32: cosine '
              f'{agreement["cosine"]:.5f}, relative error {agreement["relative_error"]:.4f}')


def file_metadata(config: str, cfg: Any, wrapper: ExportWrapper,
                  shape: tuple[int, int]) -> dict[str, str]:
    """What a deployed file records about itself (:func:`~.deployed_io.deployed_metadata`)."""
    whole_model = wrapper.kind != 'backbone'
    extra = detector_test_settings(cfg) if wrapper.kind == 'detector' else {}
    return deployed_metadata(wrapper.kind, shape,
                             config_num_classes(cfg) if whole_model else None,
                             config_classes(cfg) if whole_model else None, config,
                             wrapper.output_names, **extra)


def file_check(prepared: PreparedModel, wrapper: ExportWrapper, shape: tuple[int, int]
               ) -> Callable[[Path], tuple[DetectorCheck, DetectorCheck]] | None:
    """A whole detector's file is compared as detections with torch on a random input and
    with mmdet on test images (:func:`~.detector_check.check_detector_file`) before it is
    written; its raw tensors are no parity check (equal scores rank in any order)."""
    if wrapper.kind != 'detector':
        return None
    return lambda path: check_detector_file(path, wrapper, prepared.fused(), prepared.cfg, shape)


def run_export(settings: ExportSettings) -> OnnxExport | Int8Export | CoreMLRun:
    """Builds, fuses and exports the model with a progress display, then prints the results.

    Returns:
        The ONNX export (fp32 or int8), or the Core ML package with its timings and Xcode test
        package.

    Raises:
        InputError: A bad option, config, checkpoint, calibration folder or output path, a
            missing optional dependency (coremltools, onnx), or an export that does not
            reproduce torch (int8: fp32).
    """
    check_settings(settings)
    _check_given_outputs(settings)
    times_on_this_machine = False
    if settings.format == 'coreml':
        require('coremltools', 'Core ML export')  # fail before the slow steps
        times_on_this_machine = can_run_coreml()
    if settings.int8:
        require('onnx', 'int8 export')
        require('onnxruntime.quantization', 'int8 export')
        if settings.int8_backend == 'openvino':
            require('nncf', 'int8 export with --int8-backend openvino')

    with StepProgress(export_steps(settings, times_on_this_machine)) as progress:
        progress.start(BUILD_STEP)
        prepared = prepare_model(settings.config, settings.checkpoint, settings.cfg_options,
                                 settings.unsafe_full_unpickle)
        for note in prepared.notes:
            print(f'note: {note}')
        if settings.seg_argmax and (prepared.task != 'segmentor' or settings.backbone_only):
            raise InputError('--seg-argmax adds the argmax class map of a segmentor; this is a '
                             f'{"backbone" if settings.backbone_only else prepared.task} '
                             'export: leave it out')
        wrapper = ExportWrapper(prepared.fused(), prepared.task, settings.backbone_only,
                                seg_argmax=settings.seg_argmax)
        shape = tuple(settings.shape or (wrapper.kind == 'detector'
                                         and detector_input_shape(prepared.cfg))
                      or DEFAULT_SHAPES[wrapper.kind])
        out = Path(settings.out or default_out_path(settings.config, settings.format,
                                                    settings.backbone_only, shape,
                                                    output_variant(settings)))
        if not settings.out:
            _check_model_output(settings, out)
        preprocessing = preprocessing_of(prepared.cfg)
        if settings.int8:
            result = _export_int8(settings, prepared, wrapper, shape, out, preprocessing, progress)
        elif settings.format == 'onnx':
            progress.start(ONNX_STEP)
            result = export_onnx(wrapper, shape, out, wrapper.output_names, opset=settings.opset,
                                 preprocessing=preprocessing, force=settings.force,
                                 metadata=file_metadata(settings.config, prepared.cfg, wrapper,
                                                        shape),
                                 check_file=file_check(prepared, wrapper, shape),
                                 check_parity=wrapper.kind != 'detector')
        else:
            result = _export_coreml(settings, prepared, wrapper, shape, out, preprocessing,
                                    progress, times_on_this_machine)

    if isinstance(result, Int8Export):
        print_int8_report(result, settings.opset)
    elif isinstance(result, OnnxExport):
        print_onnx_report(result, settings.opset)
    else:
        print_coreml_report(result, shape, preprocessing.color_layout)
    return result
