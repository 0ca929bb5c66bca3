"""fp32 vs int8 of one exported model, measured in the same run: the logic of
``tools/analysis/quantization.py``.

The fused model is exported to fp32 ONNX and quantized to int8 QDQ exactly as
``tools/deploy/export.py --int8`` does, calibrated on one image folder (by default the config's
*train* split) and evaluated on another (by default its *test* split), both read through the
config's test pipeline. Each graph runs on ONNX Runtime and, if installed, on OpenVINO (which
reads the same QDQ file), at one thread, and the report gives:

* latency: the four runners timed in interleaved rounds (:func:`~.timing.round_robin`); the
  int8/fp32 ratio per runtime is the median of per-round ratios (paired samples);
* accuracy (classifiers): top-1 of fp32 and int8 on the labelled evaluation images (label =
  the class folder an image is in), and the fraction of images whose prediction agrees;
* agreement (every output, e.g. each backbone stage): cosine similarity of int8 to fp32 per
  evaluation image, mean and minimum.

OpenVINO's CPU plugin computes in bf16 by default on CPUs with AVX512-BF16; ``f32`` is set
explicitly so that "fp32" means fp32.
"""
from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from repnext_mm.apis.model import PreparedModel, prepare_model, preprocessing_of
from repnext_mm.deploy.calibration import (DEFAULT_CALIBRATION_IMAGES, ImageSet, PipelineInputs,
                                           calibration_dir, list_images)
from repnext_mm.deploy.exportable import ExportWrapper
from repnext_mm.deploy.onnx_runtime import onnxruntime_call
from repnext_mm.deploy.nncf_quantize import quantize_openvino_ir
from repnext_mm.deploy.quantize import Int8Export, cosine_similarity, export_int8_onnx
from repnext_mm.deploy.verify import DEFAULT_SHAPES
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.imports import require
from .runtimes import describe_cpu, openvino_call, set_threads
from .timing import TimingStats, paired_ratio, round_robin

#: ``openvino-nncf``: fp32 on OpenVINO against NNCF's int8 IR (``--int8-backend openvino``)
#: instead of the QDQ file.
RUNTIMES = ('onnxruntime', 'openvino', 'openvino-nncf')
#: What the report runs when the command line names no runtime.
DEFAULT_RUNTIMES = ('onnxruntime', 'openvino')
#: Evaluation images used when the command line names no count.
DEFAULT_EVAL_IMAGES = 200

Runner = Callable[[np.ndarray], list]


@dataclass
class QuantizationSettings:
    """What ``tools/analysis/quantization.py`` measures (its command line options).

    Attributes:
        config: Classifier, detector or segmentor config.
        checkpoint: Training or fused checkpoint; ``None`` for random weights.
        backbone_only: Measure the backbone (all its stage outputs).
        shape: Exported input ``(height, width)``; default as ``tools/deploy/export.py``.
        calib_dir: Calibration images; default the config's train dataloader folder.
        calib_images: Calibration images used (evenly spaced).
        calib_method: ``minmax`` or ``percentile``.
        eval_dir: Held-out images; default the config's test dataloader folder.
        eval_images: Evaluation images used (evenly spaced); ``None``: all.
        runtimes: Runtimes to run both graphs on.
        threads: Intra-op threads of every runtime.
        warmup: Untimed rounds.
        runs: Timed rounds.
        work_dir: Keep the fp32 and int8 ``.onnx`` here (default: a temporary folder).
        unsafe_full_unpickle: Unpickle arbitrary objects in the checkpoint.
        cfg_options: Config overrides.
    """
    config: str
    checkpoint: str | None = None
    backbone_only: bool = False
    shape: Sequence[int] | None = None
    calib_dir: str | None = None
    calib_images: int = DEFAULT_CALIBRATION_IMAGES
    calib_method: str = 'minmax'
    eval_dir: str | None = None
    eval_images: int | None = DEFAULT_EVAL_IMAGES
    runtimes: Sequence[str] = DEFAULT_RUNTIMES
    threads: int = 1
    warmup: int = 10
    runs: int = 50
    work_dir: str | None = None
    unsafe_full_unpickle: bool = False
    cfg_options: dict[str, Any] | None = None


#: ``f(input) -> outputs`` of an ``.onnx`` file, by runtime: the graph on ONNX Runtime's CPU
#: session, or on OpenVINO's CPU plugin pinned to fp32 (:func:`~.runtimes.openvino_model`: the
#: plugin would otherwise run bf16 on this CPU).
RUNNER_FACTORIES = {'onnxruntime': onnxruntime_call, 'openvino': openvino_call,
                   'openvino-nncf': openvino_call}


def class_names(cfg: Any, folder: Path) -> list[str]:
    """The classifier's class names: the config's dataset ``metainfo``, else the sorted class
    folders of ``folder`` (as mmpretrain's ``CustomDataset`` numbers them)."""
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    classes = (dataset.get('metainfo') or cfg.get('metainfo') or {}).get('classes')
    if classes:
        return list(classes)
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def folder_labels(paths: Sequence[Path], folder: Path, classes: Sequence[str]) -> list[int] | None:
    """Label of each image from its class folder (``folder/<class>/...``); ``None`` if any
    image is outside a class folder."""
    labels = []
    for path in paths:
        parts = path.relative_to(folder).parts
        if len(parts) < 2 or parts[0] not in classes:
            return None
        labels.append(list(classes).index(parts[0]))
    return labels


@dataclass
class OutputAgreement:
    """Cosine similarity of int8 to fp32 over the evaluation images (one output)."""
    mean: float
    min: float


@dataclass
class RuntimeResult:
    """fp32 vs int8 on one runtime.

    Attributes:
        fp32: Latency of the fp32 graph.
        int8: Latency of the int8 graph.
        ratio: int8 / fp32 latency, median of per-round ratios.
        cosine: Per output, int8 vs fp32 cosine similarity over the evaluation images.
        top1_fp32: Top-1 (percent) of the fp32 graph (labelled classifier evaluations only).
        top1_int8: Top-1 (percent) of the int8 graph.
        agreement: Percentage of images where both predict the same class (classifiers).
    """
    fp32: TimingStats
    int8: TimingStats
    ratio: float
    cosine: dict[str, OutputAgreement]
    top1_fp32: float | None = None
    top1_int8: float | None = None
    agreement: float | None = None


@dataclass
class QuantizationReport:
    """Everything :func:`run_quantization_report` measured."""
    model: str
    shape: tuple[int, int]
    export: Int8Export
    calibration: str
    evaluation: str
    labelled: bool
    cpu: str
    threads: int
    load_average: tuple[float, float, float]
    runtimes: dict[str, RuntimeResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def evaluate(fp32: Runner, int8: Runner, images: ImageSet, output_names: Sequence[str],
             labels: Sequence[int] | None, classify: bool) -> dict[str, Any]:
    """Per-output cosine similarity and, for classifiers, top-1 and agreement."""
    cosines: dict[str, list[float]] = {name: [] for name in output_names}
    predictions: dict[str, list[int]] = dict(fp32=[], int8=[])
    for x in images.inputs:
        feed = x.numpy()
        expected, actual = fp32(feed), int8(feed)
        for name, e, a in zip(output_names, expected, actual):
            cosines[name].append(cosine_similarity(a, e))
        if classify:
            predictions['fp32'].append(int(np.argmax(expected[0])))
            predictions['int8'].append(int(np.argmax(actual[0])))
    result: dict[str, Any] = dict(cosine={name: OutputAgreement(statistics.fmean(v), min(v))
                                          for name, v in cosines.items()})
    if classify:
        pairs = list(zip(predictions['fp32'], predictions['int8']))
        result['agreement'] = 100.0 * sum(a == b for a, b in pairs) / len(pairs)
        if labels is not None:
            for key in ('fp32', 'int8'):
                hits = sum(p == y for p, y in zip(predictions[key], labels))
                result[f'top1_{key}'] = 100.0 * hits / len(labels)
    return result


def _labels(prepared: PreparedModel, evaluation: ImageSet,
            logits_shape: Sequence[int]) -> tuple[list[int] | None, str | None]:
    """Labels of the evaluation images, or ``None`` and why top-1 cannot be measured."""
    classes = class_names(prepared.cfg, evaluation.folder)
    if len(classes) != logits_shape[-1]:
        return None, (f'the model has {logits_shape[-1]} classes, the evaluation folder '
                      f'{len(classes)}: top-1 not measured, agreement only')
    labels = folder_labels(evaluation.paths, evaluation.folder, classes)
    if labels is None:
        return None, (f'the evaluation images are not all in class folders of '
                      f'{evaluation.folder}: top-1 not measured, agreement only')
    return labels, None


def _resolve_runtimes(names: Sequence[str]) -> list[str]:
    unknown = [name for name in names if name not in RUNTIMES]
    if unknown:
        raise InputError(f'--runtimes must be among {", ".join(RUNTIMES)}, got {unknown}')
    if 'openvino' in names or 'openvino-nncf' in names:
        require('openvino', 'the openvino runtime')
    if 'openvino-nncf' in names:
        require('nncf', 'the openvino-nncf runtime (int8 by NNCF)')
    return list(dict.fromkeys(names))


def _read_images(settings: QuantizationSettings, prepared: PreparedModel,
                 shape: tuple[int, int]) -> tuple[ImageSet, ImageSet]:
    reader = PipelineInputs(prepared.cfg, prepared.fused().data_preprocessor, shape)
    calib_dir = settings.calib_dir or calibration_dir(prepared.cfg, 'train')
    eval_dir = settings.eval_dir or calibration_dir(prepared.cfg, 'test')
    list_images(eval_dir, settings.eval_images, '--eval-dir')  # fail before calibrating
    calibration = reader.read_folder(calib_dir, settings.calib_images)
    evaluation = reader.read_folder(eval_dir, settings.eval_images, '--eval-dir')
    return calibration, evaluation


def run_quantization_report(settings: QuantizationSettings,
                            log: Callable[[str], None] = print) -> QuantizationReport:
    """Exports, quantizes, times and evaluates fp32 vs int8 (see the module docstring).

    Raises:
        InputError: A bad config, checkpoint, image folder, runtime or option.
    """
    if settings.warmup < 0 or settings.runs < 1:
        raise InputError(f'--warmup must be >= 0 and --runs >= 1, got {settings.warmup} and '
                         f'{settings.runs}')
    runtimes = _resolve_runtimes(settings.runtimes)
    threads = set_threads(settings.threads)
    prepared = prepare_model(settings.config, settings.checkpoint, settings.cfg_options,
                             settings.unsafe_full_unpickle)
    wrapper = ExportWrapper(prepared.fused(), prepared.task, settings.backbone_only)
    shape = tuple(settings.shape or DEFAULT_SHAPES[wrapper.kind])
    calibration, evaluation = _read_images(settings, prepared, shape)
    classify = wrapper.kind == 'classifier'

    with tempfile.TemporaryDirectory(prefix='repnext_quant_') as scratch:
        work = Path(settings.work_dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        fp32_path, int8_path = work / 'fp32.onnx', work / 'int8.onnx'
        export = export_int8_onnx(wrapper, shape, int8_path, wrapper.output_names, calibration,
                                  preprocessing=preprocessing_of(prepared.cfg),
                                  method=settings.calib_method, force=True, fp32_out=fp32_path,
                                  log=log)
        labels, label_note = (_labels(prepared, evaluation, export.fp32.output_shapes['logits'])
                              if classify else (None, None))
        int8_paths = {runtime: int8_path for runtime in runtimes}
        if 'openvino-nncf' in runtimes:
            int8_paths['openvino-nncf'] = quantize_openvino_ir(
                export.fp32, work / 'int8_nncf.xml', calibration, wrapper.kind, force=True,
                log=log).path
        runners = {(runtime, precision): RUNNER_FACTORIES[runtime](path, threads)
                   for runtime in runtimes
                   for precision, path in (('fp32', fp32_path), ('int8', int8_paths[runtime]))}
        report = QuantizationReport(
            model=f'{Path(settings.config).stem}{" backbone" if settings.backbone_only else ""}'
                  f' ({prepared.weights})', shape=shape, export=export,
            calibration=calibration.describe(), evaluation=evaluation.describe(),
            labelled=labels is not None, cpu=describe_cpu(), threads=threads,
            load_average=os.getloadavg(), notes=list(prepared.notes))
        if label_note:
            report.notes.append(label_note)
        report.runtimes = measure_runtimes(runners, evaluation, wrapper.output_names, labels,
                                           classify, settings.warmup, settings.runs)
    return report


def measure_runtimes(runners: dict[tuple[str, str], Runner], evaluation: ImageSet,
                     output_names: Sequence[str], labels: Sequence[int] | None, classify: bool,
                     warmup: int, runs: int) -> dict[str, RuntimeResult]:
    """Times all ``{(runtime, 'fp32' | 'int8'): runner}`` in the same rounds, then evaluates.

    The timed input is the first evaluation image; every runner sees the same load because
    each round calls each of them once (:func:`~.timing.round_robin`).
    """
    feed = evaluation.inputs[0].numpy()
    samples = round_robin({f'{r} {p}': (lambda run=run: run(feed))
                           for (r, p), run in runners.items()},
                          warmup=warmup, runs=runs, label='fp32 vs int8')
    results = {}
    for runtime in dict.fromkeys(r for r, _ in runners):
        fp32, int8 = samples[f'{runtime} fp32'], samples[f'{runtime} int8']
        quality = evaluate(runners[runtime, 'fp32'], runners[runtime, 'int8'], evaluation,
                           output_names, labels, classify)
        results[runtime] = RuntimeResult(TimingStats.from_seconds(fp32),
                                         TimingStats.from_seconds(int8),
                                         paired_ratio(int8, fp32), **quality)
    return results


def format_report(report: QuantizationReport) -> list[str]:
    """The report as printed lines (one table row per runtime, then per-output agreement)."""
    height, width = report.shape
    lines = [f'{report.model}, input {height}x{width}; {report.cpu}, {report.threads} thread(s), '
             f'load average {" ".join(f"{v:.2f}" for v in report.load_average)}',
             f'calibration: {report.export.method} on {report.calibration}',
             f'evaluation: {report.evaluation}',
             'excluded from quantization: '
             + ('; '.join(f'{len(v)} nodes, {k}' for k, v in report.export.kept_float.items())
                or 'none')]
    lines += [f'note: {note}' for note in report.notes]
    header = (f'{"runtime":<14} {"fp32 ms":>9} {"int8 ms":>9} {"int8/fp32":>9}'
              + (f' {"top-1 fp32":>10} {"top-1 int8":>10} {"agree %":>8}'
                 if any(r.agreement is not None for r in report.runtimes.values()) else ''))
    lines += ['', header]
    for name, result in report.runtimes.items():
        row = (f'{name:<14} {result.fp32.median_ms:>9.3f} {result.int8.median_ms:>9.3f} '
               f'{result.ratio:>9.3f}')
        if result.agreement is not None:
            top1 = [f'{v:>10.2f}' if v is not None else f'{"-":>10}'
                    for v in (result.top1_fp32, result.top1_int8)]
            row += f' {top1[0]} {top1[1]} {result.agreement:>8.2f}'
        lines.append(row)
    lines += ['', 'int8 vs fp32 cosine similarity over the evaluation images (mean / min):']
    for name, result in report.runtimes.items():
        lines.append(f'  {name}: ' + ', '.join(f'{output} {a.mean:.5f} / {a.min:.5f}'
                                               for output, a in result.cosine.items()))
    return lines


def report_as_dict(report: QuantizationReport) -> dict[str, Any]:
    """A JSON-serializable form of the report (for ``--json``)."""
    from dataclasses import asdict

    data = asdict(report)
    data['export'] = dict(path=str(report.export.path), method=report.export.method,
                          int8_ops=report.export.int8_ops, float_ops=report.export.float_ops,
                          kept_float={k: len(v) for k, v in report.export.kept_float.items()},
                          calibration_cosine=report.export.cosine,
                          calibration_cosine_min=report.export.cosine_min)
    data['export']['fp32_vs_torch'] = str(report.export.fp32.difference)
    return data
