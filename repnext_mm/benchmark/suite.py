"""Fused vs unfused latency of prepared models on several backends, as table rows.

Driven by ``tools/analysis/benchmark.py``. Each measurement becomes one row (a flat dict) so the
results can be written as CSV or JSON and rendered as a Markdown table (:mod:`.tables`).

"Unfused" is the training structure holding the same weights, run in eval mode with every SRP
branch computed separately (``srp_forward='branches'``, as in the authors' training graph) and
every BatchNorm separate: the cost that structural reparameterization removes.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from repnext_mm.deploy.verify import example_inputs
from repnext_mm.apis.model import PreparedModel
from repnext_mm.deploy.exportable import ExportWrapper
from repnext_mm.utils.errors import InputError
from .counting import count_macs, count_params
from .gpu import cuda_throughput, require_cuda
from .runtimes import describe_cpu, export_onnxruntime_runner, torch_runner
from .timing import TimingStats, round_robin, time_interleaved

BACKENDS = ('torch', 'onnxruntime', 'cuda')
FORMS = ('fused', 'unfused')


def _forms(prepared: PreparedModel, include_unfused: bool) -> list[tuple[str, nn.Module]]:
    forms = [('fused', prepared.fused())]
    if include_unfused:
        unfused = prepared.unfused('branches')
        if unfused is not None:
            forms.append(('unfused', unfused))
    return forms


def _model_facts(prepared: PreparedModel, label: str, form: str, wrapper: ExportWrapper,
                 shape: tuple[int, int], warmup: int) -> dict[str, Any]:
    """The columns a row takes from the model: names, size and MACs (per image)."""
    return dict(model=label, arch=prepared.arch or '', exported=wrapper.kind, form=form,
                input=f'{shape[0]}x{shape[1]}', params_m=round(count_params(wrapper) / 1e6, 3),
                gmacs=round(count_macs(wrapper, example_inputs(shape, 1)) / 1e9, 3),
                warmup=warmup, weights=prepared.weights)


def _cpu_runners(backend: str, wrappers: dict[str, ExportWrapper], inputs: Tensor, threads: int,
                 scratch: Path) -> tuple[dict[str, Callable[[], object]], str]:
    """``{form: runner}`` on a CPU backend, and the backend's name for the rows."""
    if backend == 'torch':
        return {form: torch_runner(w, inputs) for form, w in wrappers.items()}, 'torch'
    import onnxruntime

    runners = {form: export_onnxruntime_runner(w, inputs, scratch / f'{form}.onnx', w.output_names,
                                               threads)
               for form, w in wrappers.items()}
    return runners, f'onnxruntime {onnxruntime.__version__}'


def _time_on_cpu(backend: str, wrappers: dict[str, ExportWrapper], facts: dict[str, dict],
                 inputs: Tensor, threads: int, warmup: int, runs: int, progress: bool,
                 title: str) -> list[dict[str, Any]]:
    """The forms timed in alternation, so a change of background load affects both alike."""
    with tempfile.TemporaryDirectory(prefix='repnext_mm_') as scratch:  # the ONNX files
        runners, backend_name = _cpu_runners(backend, wrappers, inputs, threads, Path(scratch))
        stats = time_interleaved(runners, warmup, runs, progress=progress,
                                 label=f'{title} ({threads} threads)')
    batch_size = inputs.shape[0]
    return [dict(facts[form], backend=backend_name, batch_size=batch_size, threads=threads,
                 device=describe_cpu(), **timing.as_dict(),
                 images_per_s=batch_size / (timing.median_ms / 1e3))
            for form, timing in stats.items()]


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


def benchmark_model(prepared: PreparedModel, label: str, backends: Sequence[str],
                    shape: tuple[int, int], batch_size: int = 1, warmup: int = 10, runs: int = 50,
                    threads: int | None = None, backbone_only: bool = False,
                    include_unfused: bool = True, max_batch: int = 4096, progress: bool = True,
                    log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Times the fused (and unfused) model on each backend; one row per backend and form.

    On the CPU backends the forms are timed in alternation (see
    :func:`~repnext_mm.benchmark.timing.round_robin`); the GPU protocol times each form at its
    own largest batch.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise InputError(f'unknown backend(s) {unknown}; choose from {BACKENDS}')
    if 'cuda' in backends:
        require_cuda()  # fail before spending minutes on the CPU backends
    threads = threads or torch.get_num_threads()
    wrappers = {form: ExportWrapper(model, prepared.task, backbone_only).eval()
                for form, model in _forms(prepared, include_unfused)}
    facts = {form: _model_facts(prepared, label, form, wrapper, shape, warmup)
             for form, wrapper in wrappers.items()}
    rows = []
    for backend in backends:
        if backend == 'cuda':
            rows += _time_on_cuda(label, wrappers, facts, shape, max_batch, warmup, runs,
                                  progress)
        else:
            rows += _time_on_cpu(backend, wrappers, facts, example_inputs(shape, batch_size),
                                 threads, warmup, runs, progress,
                                 f'{label} ({" vs ".join(wrappers)}) on {backend}')
    for row in rows:
        row['torch_version'] = str(torch.__version__)
        log(f'{row["model"]} {row["form"]} on {row["backend"]}: median {row["median_ms"]:.2f} ms '
            f'(IQR {row["iqr_ms"]:.2f} ms), {row["images_per_s"]:.1f} images/s')
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
