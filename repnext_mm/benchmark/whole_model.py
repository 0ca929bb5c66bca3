"""Whole-model latency of one image on every path, interleaved: the logic of
``tools/analysis/benchmark_deployed.py``.

Paths: the library's own inference (mmdet / mmseg / mmpretrain) of the unfused and of the fused
model in PyTorch, and the exported file (``tools/deploy/export.py``) in fp32 and int8 on ONNX
Runtime and OpenVINO (int8 on OpenVINO: the QDQ file and NNCF's IR, both).

**The timed region is the same for every path:** ``model.test_step(batch)`` of MMEngine, from the
test pipeline's output (the resized image, a uint8 ``[3, h, w]`` tensor, and its data sample)
through the data preprocessor (channel order, ``(x - mean) / std``, padding), the model, and the
post-processing into the original image's frame: a detector's boxes rescaled and masks pasted
(mmdet's own code in PyTorch, :func:`~repnext_mm.deploy.deployed_io.detections_to_instances`
for the files), a segmentor's logits resized to the original image and its argmax. A file runs
in :class:`~repnext_mm.deploy.evaluate.DeployedModel`, the evaluator's model, which also pads
to the file's fixed shape. Image decoding and the test pipeline's resize are outside.

Each round calls every path once (:func:`~.timing.round_robin`), so a ratio to the fused
PyTorch inference is the median of per-round ratios. A random detector's detection count (and
so its mask head's cost) depends on its scores: the count of each path is reported, and the
tool sets ``score_thr=0`` for random weights so that every path returns ``max_per_img``.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from repnext_mm.utils.errors import InputError
from .runtimes import describe_cpu, torch_threads
from .timing import TimingStats, paired_ratio, round_robin

TIMED_REGION = ('model.test_step: data preprocessor (normalize, pad) + model + post-processing '
                'to the original image (boxes rescaled and masks pasted / logits resized and '
                'argmax); not image decoding or the pipeline resize')
REFERENCE_PATH = 'torch fused'
#: The deployed paths: (name, precision, backend, int8 backend of the file).
DEPLOYED_PATHS = (('onnxruntime fp32', None, 'onnxruntime'),
                  ('onnxruntime int8', 'onnxruntime', 'onnxruntime'),
                  ('openvino fp32', None, 'openvino'),
                  ('openvino int8 QDQ', 'onnxruntime', 'openvino'),
                  ('openvino int8 NNCF', 'openvino', 'openvino'))
#: Random weights: every image gets max_per_img detections on every path.
RANDOM_DETECTOR_OPTIONS = {'model.test_cfg.rcnn.score_thr': 0.0}


@dataclass
class WholeModelSettings:
    """What ``tools/analysis/benchmark_deployed.py`` measures."""
    config: str
    checkpoint: str | None = None
    shape: tuple[int, int] = (512, 512)
    threads: list[int] = field(default_factory=lambda: [1])
    warmup: int = 3
    runs: int = 10
    calib_images: int = 8
    paths: list[str] | None = None
    work_dir: str | None = None
    cfg_options: dict[str, Any] | None = None
    progress: bool = True


def _pipeline_options(shape: Sequence[int]) -> dict[str, Any]:
    """The test pipeline's Resize to ``shape`` (keep ratio) for a square image of that size."""
    return {'test_dataloader.dataset.pipeline.1.scale': (int(shape[1]), int(shape[0]))}


def _test_image(folder: Path, shape: Sequence[int]) -> Path:
    """A deterministic ``shape`` image (smooth random shapes of colour) for timing and calibration."""
    import cv2

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    height, width = int(shape[0]), int(shape[1])
    for index in range(4):
        image = np.full((height, width, 3), 114, np.uint8)
        for _ in range(12):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            radius = int(rng.integers(height // 20, height // 5))
            cv2.circle(image, centre, radius, tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
        cv2.imwrite(str(folder / f'image_{index}.jpg'), image)
    return folder / 'image_0.jpg'


def _batch(cfg, image: Path) -> dict:
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import init_default_scope

    from repnext_mm.deploy.calibration import inference_pipeline

    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return pseudo_collate([Compose(inference_pipeline(cfg))(dict(img_path=str(image)))])


def _count(results: list) -> int | None:
    instances = getattr(results[0], 'pred_instances', None)
    return None if instances is None else len(instances)


def _export(settings: WholeModelSettings, folder: Path, calib: Path, int8_backend: str | None,
            options: dict[str, Any]) -> Path:
    from repnext_mm.deploy.export import ExportSettings, default_out_path, output_variant, \
        run_export

    export = ExportSettings(settings.config, 'onnx', checkpoint=settings.checkpoint,
                            shape=settings.shape, force=True, cfg_options=options,
                            int8=int8_backend is not None, int8_backend=int8_backend,
                            calib_dir=str(calib) if int8_backend else None,
                            calib_images=settings.calib_images if int8_backend else None,
                            # random weights' outputs mean nothing: time the file whatever
                            # its int8 drift (a note says so)
                            int8_drift_bound=settings.checkpoint is not None)
    export.out = str(folder / default_out_path(settings.config, 'onnx', False, settings.shape,
                                               output_variant(export)))
    run_export(export)
    return Path(export.out)


def build_paths(settings: WholeModelSettings, folder: Path) -> tuple[dict[str, Callable], dict,
                                                                      list[str]]:
    """``({path: test_step call}, batch, notes)``: the models of every path, exported once."""
    from repnext_mm.apis.model import load_model_config, prepare_model
    from repnext_mm.deploy.deployed_io import config_task, read_deployed_info
    from repnext_mm.deploy.evaluate import _model_cfg
    from repnext_mm.registry import MODELS

    options = dict(settings.cfg_options or {})
    options.update(_pipeline_options(settings.shape))
    notes = []
    if config_task(load_model_config(settings.config)) == 'detector' and \
            settings.checkpoint is None:
        options.update(RANDOM_DETECTOR_OPTIONS)
        notes.append('random weights: score_thr=0, so every path returns max_per_img detections')
    if settings.checkpoint is None:
        notes.append('random weights: the int8 files are timed without the export\'s drift '
                     'bound (their outputs mean nothing; accuracy: tools/deploy/test_deployed.py '
                     'on a trained checkpoint)')
    prepared = prepare_model(settings.config, settings.checkpoint, options)
    notes += prepared.notes
    calib = folder / 'images'
    image = _test_image(calib, settings.shape)
    batch = _batch(prepared.cfg, image)
    wanted = settings.paths
    models: dict[str, Any] = {}
    for name, form in (('torch unfused', 'unfused'), (REFERENCE_PATH, 'fused')):
        model = prepared.fused() if form == 'fused' else prepared.unfused('branches')
        if model is not None and (wanted is None or name in wanted or name == REFERENCE_PATH):
            models[name] = model.eval()
    files: dict[str | None, Path] = {}
    for name, int8_backend, backend in DEPLOYED_PATHS:
        if wanted is not None and name not in wanted:
            continue
        try:
            if int8_backend not in files:
                files[int8_backend] = _export(settings, folder, calib, int8_backend, options)
        except InputError as error:
            notes.append(f'{name}: not measured ({error})')
            continue
        info = read_deployed_info(files[int8_backend])
        models[name] = (info, backend)

    def deployed(name: str) -> Callable:
        info, backend = models[name]
        return lambda threads: MODELS.build(_model_cfg(prepared.cfg, info, backend, threads))
    builders = {name: (deployed(name) if isinstance(model, tuple) else (lambda threads, m=model: m))
                for name, model in models.items()}
    return builders, batch, notes


@dataclass
class PathResult:
    """One path at one thread count."""
    stats: TimingStats
    ratio: float
    detections: int | None


def measure(settings: WholeModelSettings) -> list[tuple[int, dict[str, PathResult]]]:
    """Times every path at each thread count; prints the table; returns the results."""
    if settings.runs < 1 or settings.warmup < 0:
        raise InputError(f'need --runs >= 1 and --warmup >= 0, got {settings.runs}, '
                         f'{settings.warmup}')
    if min(settings.threads) < 1:
        raise InputError(f'--threads must be >= 1, got {min(settings.threads)}')
    results = []
    with tempfile.TemporaryDirectory(prefix='repnext_whole_') as work:
        folder = Path(settings.work_dir or work)
        builders, batch, notes = build_paths(settings, folder)
        for note in notes:
            print(f'note: {note}')
        for threads in settings.threads:
            with torch_threads(threads):
                models = {name: build(threads) for name, build in builders.items()}
                counts = {}
                calls = {}
                for name, model in models.items():
                    def call(model=model):
                        with torch.no_grad():
                            return model.test_step(batch)
                    counts[name] = _count(call())
                    calls[name] = call
                samples = round_robin(calls, settings.warmup, settings.runs,
                                      progress=settings.progress,
                                      label=f'{threads} thread(s)')
            reference = samples[REFERENCE_PATH]
            results.append((threads, {
                name: PathResult(TimingStats.from_seconds(values),
                                 paired_ratio(values, reference), counts[name])
                for name, values in samples.items()}))
    return results


def format_results(settings: WholeModelSettings, results) -> list[str]:
    """The Markdown table of :func:`measure`, with the machine and the timed region."""
    height, width = settings.shape
    lines = [f'{Path(settings.config).stem}, {height}x{width} image, '
             f'{"random weights" if settings.checkpoint is None else settings.checkpoint}; '
             f'{describe_cpu()}; load average {" ".join(f"{v:.2f}" for v in os.getloadavg())}',
             f'timed region: {TIMED_REGION}', '',
             '| threads | path | median ms | IQR ms | x torch fused | detections |',
             '|---|---|---|---|---|---|']
    for threads, paths in results:
        for name, result in paths.items():
            count = '-' if result.detections is None else str(result.detections)
            lines.append(f'| {threads} | {name} | {result.stats.median_ms:.1f} | '
                         f'{result.stats.iqr_ms:.1f} | {result.ratio:.3f} | {count} |')
    return lines


def run_whole_model(settings: WholeModelSettings) -> list:
    """:func:`measure`, then the table on stdout."""
    results = measure(settings)
    print('\n'.join(format_results(settings, results)))
    return results
