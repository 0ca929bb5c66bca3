"""Fused vs unfused latency of prepared models on several backends, as table rows.

Driven by ``tools/analysis/benchmark.py``. Each measurement becomes one row (a flat dict) so the
results can be written as CSV or JSON and rendered as a Markdown table (:mod:`.tables`).

"Unfused" is the training structure holding the same weights, run in eval mode with every SRP
branch computed separately (``srp_forward='branches'``, as in the authors' training graph) and
every BatchNorm separate: the cost that structural reparameterization removes.

On the CPU, the forms of a model on one backend are timed in one round-robin together with the
GEMM of the compute floor (:func:`~repnext_mm.benchmark.fused.floor_samples`), all at the same
thread count, so each row's ``x_floor`` is a paired ratio from the same rounds.
"""
from __future__ import annotations

import copy
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from repnext_mm.deploy.verify import example_inputs
from repnext_mm.apis.model import PreparedModel
from repnext_mm.deploy.exportable import ExportWrapper
from repnext_mm.models.utils.complexity import count_macs, count_params
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.imports import require
from .fused import GEMM, check_same_outputs, floor_samples, gemm_callable
from .gpu import cuda_throughput, require_cuda
from .runtimes import ONNX_RUNNERS, describe_cpu, export_for_timing, torch_runner, torch_threads
from .timing import TimingStats, paired_ratio, round_robin

BACKENDS = ('torch', 'onnxruntime', 'openvino', 'cuda')
FORMS = ('fused', 'unfused')

Runner = Callable[[], object]


def _forms(prepared: PreparedModel, include_unfused: bool) -> list[tuple[str, nn.Module]]:
    forms = [('fused', prepared.fused())]
    if include_unfused:
        unfused = prepared.unfused('branches')
        if unfused is not None:
            forms.append(('unfused', unfused))
    return forms


def _model_facts(prepared: PreparedModel, label: str, form: str, wrapper: ExportWrapper,
                 shape: tuple[int, int], macs: int, warmup: int) -> dict[str, Any]:
    """The columns a row takes from the model: names, size and MACs (per image)."""
    return dict(model=label, arch=prepared.arch or '', exported=wrapper.kind, form=form,
                input=f'{shape[0]}x{shape[1]}', params_m=round(count_params(wrapper) / 1e6, 3),
                gmacs=round(macs / 1e9, 3), warmup=warmup, weights=prepared.weights)


def _check_backends(backends: Sequence[str]) -> None:
    """Raises InputError for an unknown or unusable backend, before any work is done."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise InputError(f'unknown backend(s) {unknown}; choose from {BACKENDS}')
    if 'cuda' in backends:
        require_cuda()  # fail before spending minutes on the CPU backends
    for backend in ONNX_RUNNERS:
        if backend in backends:
            require(backend, f'the {backend} backend')
    if any(b in ONNX_RUNNERS for b in backends):
        require('onnx', 'the export both ONNX backends run')


def _backend_name(backend: str) -> str:
    """The backend and its version, as the rows show it."""
    if backend in ONNX_RUNNERS:
        version = require(backend, f'the {backend} backend').__version__
        return f'{backend} {version.split("-")[0]}'  # openvino: '2026.4.1-22982-e213a147257-...'
    return backend


def _cpu_runners(backends: Sequence[str], wrappers: dict[str, ExportWrapper], inputs: Tensor,
                 threads: int, scratch: Path) -> dict[str, dict[str, Runner]]:
    """``{backend: {form: runner}}``; every ONNX backend runs the same export of each form."""
    runners: dict[str, dict[str, Runner]] = {}
    if 'torch' in backends:
        runners['torch'] = {form: torch_runner(w, inputs) for form, w in wrappers.items()}
    onnx_backends = [b for b in backends if b in ONNX_RUNNERS]
    if onnx_backends:
        files = {form: export_for_timing(w, inputs, scratch / f'{form}.onnx', w.output_names)
                 for form, w in wrappers.items()}
        for backend in onnx_backends:
            runners[backend] = {form: ONNX_RUNNERS[backend](path, inputs, threads)
                                for form, path in files.items()}
    return {backend: runners[backend] for backend in backends}  # in the order asked for


def _output_differences(runners: dict[str, dict[str, Runner]],
                        wrappers: dict[str, ExportWrapper], inputs: Tensor,
                        label: str) -> dict[tuple[str, str], float]:
    """Every runner's largest relative difference from eager torch, ``{(backend, form): ...}``.

    Raises:
        RuntimeError: a backend's outputs differ by more than 1e-4 relative; nothing is timed
            then, as a latency of a different computation means nothing.
    """
    differences = {}
    for form, wrapper in wrappers.items():
        variants = {'eager torch': torch_runner(wrapper, inputs),
                    **{backend: forms[form] for backend, forms in runners.items()}}
        try:
            checked = check_same_outputs(variants, reference='eager torch')
        except RuntimeError as error:
            raise RuntimeError(f'{label}, {form} form: {error}; not timed') from error
        differences.update({(backend, form): checked[backend] for backend in runners})
    return differences


def _cpu_row(facts: dict, backend: str, samples: list[float], floor: list[float],
             inputs: Tensor, threads: int) -> dict[str, Any]:
    """One row: the timing and its ratio to the floor, paired per round."""
    timing = TimingStats.from_seconds(samples)
    return dict(facts, backend=_backend_name(backend), batch_size=inputs.shape[0],
                threads=threads, device=describe_cpu(), **timing.as_dict(),
                images_per_s=inputs.shape[0] / (timing.median_ms / 1e3),
                x_floor=paired_ratio(samples, floor), floor_ms=statistics.median(floor) * 1e3)


def _time_backend(backend: str, runners: dict[str, Runner], facts: dict[str, dict],
                  floor_macs: float, inputs: Tensor, threads: int, warmup: int, runs: int,
                  progress: bool, label: str) -> dict[str, dict[str, Any]]:
    """One backend's forms and the floor's GEMM timed in alternation; ``{form: row}``."""
    gemm, gemm_flop = gemm_callable('cpu')
    samples = round_robin({**runners, GEMM: gemm}, warmup, runs, progress=progress, label=label)
    gemm_times = samples.pop(GEMM)
    floor = floor_samples(floor_macs * inputs.shape[0], gemm_times, gemm_flop)
    measured = dict(gemm_gflops=gemm_flop / statistics.median(gemm_times) / 1e9,
                    load_average=round(os.getloadavg()[0], 2))
    return {form: dict(_cpu_row(facts[form], backend, times, floor, inputs, threads), **measured)
            for form, times in samples.items()}


def _time_on_cpu(backends: Sequence[str], wrappers: dict[str, ExportWrapper],
                 facts: dict[str, dict], floor_macs: float, inputs: Tensor, threads: int,
                 warmup: int, runs: int, progress: bool,
                 label: str) -> dict[str, list[dict[str, Any]]]:
    """Each backend's forms timed in alternation with the floor's GEMM, at ``threads``.

    Backends are timed one after the other, not in one round-robin: each runtime keeps its own
    thread pool, whose workers spin after a call, and above one thread they take the cores from
    the next runtime's threads. Interleaved with ONNX Runtime, eager torch at 2 threads took
    553 ms against 96-147 ms alone (M0, 64x64, on 2 cores busy with other work).

    Args:
        floor_macs: MACs of one image through the fused model: the floor of every row.

    Returns:
        ``{backend: [row per form]}``.
    """
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix='repnext_mm_') as scratch:
        runners = _cpu_runners(backends, wrappers, inputs, threads, Path(scratch))
        differences = _output_differences(runners, wrappers, inputs, label)
        rows = {}
        for backend, forms in runners.items():
            title = f'{label} ({" vs ".join(forms)}) on {backend} ({threads} threads)'
            timed = _time_backend(backend, forms, facts, floor_macs, inputs, threads, warmup,
                                  runs, progress, title)
            rows[backend] = [dict(row, max_rel_error=differences[backend, form])
                             for form, row in timed.items()]
    return rows


def _time_on_cuda(label: str, wrappers: dict[str, ExportWrapper], facts: dict[str, dict],
                  shape: tuple[int, int], max_batch: int, warmup: int, runs: int,
                  progress: bool) -> list[dict[str, Any]]:
    """Each form at its own largest batch (the paper's GPU protocol)."""
    rows = []
    for form, wrapper in wrappers.items():
        result = cuda_throughput(wrapper, shape, max_batch, warmup, runs, progress,
                                 f'{label} {form} on cuda')
        rows.append(dict(facts[form], backend='cuda fp32', batch_size=result['batch_size'],
                         threads='', device=torch.cuda.get_device_name(),
                         **result['timing'].as_dict(), images_per_s=result['images_per_s']))
    return rows


def _row_line(row: dict[str, Any]) -> str:
    line = (f'{row["model"]} {row["form"]} on {row["backend"]}: median {row["median_ms"]:.2f} ms '
            f'(IQR {row["iqr_ms"]:.2f} ms), {row["images_per_s"]:.1f} images/s')
    if 'x_floor' in row:
        line += (f', {row["x_floor"]:.2f}x the compute floor ({row["floor_ms"]:.2f} ms, GEMM '
                 f'{row["gemm_gflops"]:.1f} GFLOP/s, threads={row["threads"]})')
    return line


def benchmark_model(prepared: PreparedModel, label: str, backends: Sequence[str],
                    shape: tuple[int, int], batch_size: int = 1, warmup: int = 10, runs: int = 50,
                    threads: int | None = None, backbone_only: bool = False,
                    include_unfused: bool = True, max_batch: int = 4096, progress: bool = True,
                    log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Times the fused (and unfused) model on each backend; one row per backend and form.

    On a CPU backend (torch, onnxruntime, openvino) the forms and a 2048x2048 fp32 GEMM are
    timed in alternation (see :func:`~repnext_mm.benchmark.timing.round_robin`) at ``threads``
    threads, after the outputs of the ONNX backends were checked against eager torch to 1e-4
    relative. Each CPU row's ``x_floor`` is its time over the compute floor
    ``2 x MACs(fused) / (GEMM FLOP/s)``, the median of the per-round ratios. The GPU protocol
    times each form at its own largest batch.

    Raises:
        InputError: an unknown backend, or one that is not installed / has no device.
        RuntimeError: an ONNX backend's outputs differ from torch's by more than 1e-4.
    """
    _check_backends(backends)
    threads = threads or torch.get_num_threads()
    wrappers = {form: ExportWrapper(model, prepared.task, backbone_only).eval()
                for form, model in _forms(prepared, include_unfused)}
    macs = {form: count_macs(wrapper, example_inputs(shape, 1))
            for form, wrapper in wrappers.items()}
    facts = {form: _model_facts(prepared, label, form, wrapper, shape, macs[form], warmup)
             for form, wrapper in wrappers.items()}
    by_backend: dict[str, list[dict[str, Any]]] = {}
    cpu_backends = [b for b in backends if b != 'cuda']
    if cpu_backends:
        by_backend.update(_time_on_cpu(
            cpu_backends, wrappers, facts, macs['fused'], example_inputs(shape, batch_size),
            threads, warmup, runs, progress, label))
    if 'cuda' in backends:
        by_backend['cuda'] = _time_on_cuda(label, wrappers, facts, shape, max_batch, warmup, runs,
                                           progress)
    rows = [row for backend in backends for row in by_backend[backend]]
    for row in rows:
        row['torch_version'] = str(torch.__version__)
        log(_row_line(row))
    return rows


def _test_loader(prepared: PreparedModel):
    """The config's test dataloader at batch size 1, with a clear error if the data is missing."""
    if prepared.cfg is None or 'test_dataloader' not in prepared.cfg:
        raise InputError('--dataset needs a config with a test_dataloader (a detector or '
                         'segmentor config)')
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    init_default_scope(prepared.cfg.get('default_scope', 'mmengine'))
    loader_cfg = copy.deepcopy(prepared.cfg.test_dataloader)
    loader_cfg['batch_size'] = 1
    try:
        return Runner.build_dataloader(loader_cfg)
    except (FileNotFoundError, OSError) as error:
        root = loader_cfg.get('dataset', {}).get('data_root', '?')
        raise InputError(f'cannot open the test dataset (data_root={root}): {error}. Prepare '
                         'the dataset as in the README or point --cfg-options '
                         'test_dataloader.dataset.data_root=... at it') from error


def _time_test_steps(model: nn.Module, loader, images: int, warmup: int,
                     synchronize: Callable[[], None], progress: bool,
                     label: str) -> list[float]:
    """Per-image seconds of ``model.test_step`` over the first ``images`` batches of ``loader``.

    Loading a batch happens before its round, outside the timed interval.
    """
    batches = iter(loader)
    current: list = []

    def load_next() -> None:
        current[:] = [next(batches)]

    def test_step() -> None:
        with torch.no_grad():
            model.test_step(current[0])

    return round_robin({'test_step': test_step}, warmup, images - warmup, synchronize,
                       prepare=load_next, progress=progress, label=label)['test_step']


def dataset_throughput(prepared: PreparedModel, max_iter: int = 200, warmup: int = 5,
                       include_unfused: bool = True, progress: bool = True, device: str = 'cpu',
                       log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Whole-model images/s over the config's test dataloader (batch 1), as mmdet's benchmark.

    Each iteration runs ``model.test_step(data)``: preprocessing, backbone, heads and
    post-processing; data loading is excluded from the timed interval.

    Args:
        max_iter: Images to run, the ``warmup`` untimed ones included.
        device: ``'cpu'`` or ``'cuda'`` (the data preprocessor moves each batch there).
    """
    on_cuda = device.startswith('cuda')
    if on_cuda:
        require_cuda()
    if max_iter <= warmup:
        raise InputError(f'--max-iter ({max_iter}) must exceed the warm-up ({warmup})')
    loader = _test_loader(prepared)
    images = min(max_iter, len(loader))
    if images <= warmup:
        raise InputError(f'the test set has at most {warmup} images; nothing was timed')
    sync = torch.cuda.synchronize if on_cuda else None
    rows = []
    for form, model in _forms(prepared, include_unfused):
        samples = _time_test_steps(model.to(device).eval(), loader, images, warmup, sync,
                                   progress, f'{form} model over the test set')
        timed = sum(samples)
        rows.append(dict(model=Path(str(prepared.cfg.filename)).stem, arch=prepared.arch or '',
                         exported=prepared.task, backend=f'torch {device} (dataset)', form=form,
                         input='dataset', batch_size=1, images=len(samples),
                         images_per_s=len(samples) / timed,
                         **TimingStats.from_seconds(samples).as_dict(),  # per image
                         threads=torch.get_num_threads(),
                         device=torch.cuda.get_device_name() if on_cuda else describe_cpu(),
                         weights=prepared.weights, torch_version=str(torch.__version__)))
        log(f'{form}: {len(samples) / timed:.2f} images/s ({len(samples)} timed, {warmup} '
            'warm-up)')
    return rows
