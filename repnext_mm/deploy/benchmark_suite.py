"""Fused vs unfused latency of one or more models on several backends, as table rows.

Used by ``tools/analysis/benchmark.py``. Each measurement becomes one row (a flat dict) so the
results can be written as CSV or JSON and rendered as a Markdown table.

"Unfused" is the training structure holding the same weights, run in eval mode with every SRP
branch computed separately (``srp_forward='branches'``, as in the authors' training graph) and
every BatchNorm separate: the cost that structural reparameterization removes.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .benchmark import (TimingStats, count_macs, count_params, cuda_throughput, describe_cpu,
                        onnxruntime_runner, require_cuda, time_interleaved, torch_runner)
from .builder import example_inputs
from .errors import DeployError
from .exportable import ExportWrapper, PreparedModel
from .io import atomic_write_json, atomic_write_text, check_output_path, temporary_directory

BACKENDS = ('torch', 'onnxruntime', 'cuda')
FORMS = ('fused', 'unfused')
COLUMNS = ('model', 'arch', 'exported', 'backend', 'form', 'input', 'batch_size', 'params_m',
           'gmacs', 'median_ms', 'iqr_ms', 'p25_ms', 'p75_ms', 'mean_ms', 'min_ms', 'runs',
           'warmup', 'images_per_s', 'threads', 'device')


def _forms(prepared: PreparedModel, include_unfused: bool) -> list[tuple[str, nn.Module]]:
    forms = [('fused', prepared.fused())]
    if include_unfused:
        unfused = prepared.unfused('branches')
        if unfused is not None:
            forms.append(('unfused', unfused))
    return forms


def benchmark_model(prepared: PreparedModel, label: str, backends: Sequence[str],
                    shape: tuple[int, int], batch_size: int = 1, warmup: int = 10, runs: int = 50,
                    threads: int | None = None, backbone_only: bool = False,
                    include_unfused: bool = True, max_batch: int = 4096, progress: bool = True,
                    log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Times the fused (and unfused) model on each backend; one row per backend and form.

    On the CPU backends the forms are timed in alternation (see
    :func:`~repnext_mm.deploy.benchmark.time_interleaved`), so a change of background load
    affects both alike; the GPU protocol times each form at its own largest batch.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise DeployError(f'unknown backend(s) {unknown}; choose from {BACKENDS}')
    if 'cuda' in backends:
        require_cuda()  # fail before spending minutes on the CPU backends
    threads = threads or torch.get_num_threads()
    inputs = example_inputs(shape, batch_size)
    wrappers: dict[str, ExportWrapper] = {}
    bases: dict[str, dict] = {}
    for form, model in _forms(prepared, include_unfused):
        wrapper = ExportWrapper(model, prepared.task, backbone_only).eval()
        wrappers[form] = wrapper
        bases[form] = dict(model=label, arch=prepared.arch or '', exported=wrapper.kind, form=form,
                           input=f'{shape[0]}x{shape[1]}',
                           params_m=round(count_params(wrapper) / 1e6, 3),
                           gmacs=round(count_macs(wrapper, example_inputs(shape, 1)) / 1e9, 3),
                           warmup=warmup, weights=prepared.weights)

    rows = []
    for backend in backends:
        title = f'{label} ({" vs ".join(wrappers)}) on {backend}'
        if backend == 'cuda':
            for form, wrapper in wrappers.items():
                result = cuda_throughput(wrapper, shape, max_batch, warmup, runs, progress,
                                         f'{label} {form} on cuda')
                rows.append(dict(bases[form], backend='cuda fp32', batch_size=result['batch_size'],
                                 threads='', device=torch.cuda.get_device_name(),
                                 **result['timing'].as_dict(), images_per_s=result['images_per_s']))
            continue
        with temporary_directory() as scratch:
            if backend == 'torch':
                runners = {form: torch_runner(w, inputs) for form, w in wrappers.items()}
                backend_name = 'torch'
            else:
                import onnxruntime

                from .onnx_export import export_onnx
                runners = {}
                for form, wrapper in wrappers.items():
                    path = Path(scratch) / f'{form}.onnx'
                    export_onnx(wrapper, shape, path, wrapper.output_names, batch_size=batch_size,
                                log=lambda _: None)
                    runners[form] = onnxruntime_runner(str(path), inputs, threads)
                backend_name = f'onnxruntime {onnxruntime.__version__}'
            stats = time_interleaved(runners, warmup, runs, progress=progress,
                                     label=f'{title} ({threads} threads)')
        for form, timing in stats.items():
            rows.append(dict(bases[form], backend=backend_name, batch_size=batch_size,
                             threads=threads, device=describe_cpu(), **timing.as_dict(),
                             images_per_s=batch_size / (timing.median_ms / 1e3)))
    for row in rows:
        row['torch_version'] = str(torch.__version__)
        log(f'{row["model"]} {row["form"]} on {row["backend"]}: median {row["median_ms"]:.2f} ms '
            f'(IQR {row["iqr_ms"]:.2f} ms), {row["images_per_s"]:.1f} images/s')
    return rows


def dataset_throughput(prepared: PreparedModel, max_iter: int = 200, warmup: int = 5,
                       include_unfused: bool = True, progress: bool = True, device: str = 'cpu',
                       log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Whole-model images/s over the config's test dataloader (batch 1), as mmdet's benchmark.

    Each iteration runs ``model.test_step(data)``: preprocessing, backbone, heads and
    post-processing; data loading is excluded from the timed interval.

    Args:
        device: ``'cpu'`` or ``'cuda'`` (the data preprocessor moves each batch there).
    """
    if device.startswith('cuda'):
        require_cuda()
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    if prepared.cfg is None or 'test_dataloader' not in prepared.cfg:
        raise DeployError('--dataset needs a config with a test_dataloader (a detector or '
                          'segmentor config)')
    if max_iter <= warmup:
        raise DeployError(f'--max-iter ({max_iter}) must exceed the warm-up ({warmup})')
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    cfg = prepared.cfg
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    loader_cfg['batch_size'] = 1
    try:
        loader = Runner.build_dataloader(loader_cfg)
    except (FileNotFoundError, OSError) as error:
        root = loader_cfg.get('dataset', {}).get('data_root', '?')
        raise DeployError(f'cannot open the test dataset (data_root={root}): {error}. Prepare '
                          'the dataset as in the README or point --cfg-options '
                          'test_dataloader.dataset.data_root=... at it') from error
    rows = []
    for form, model in _forms(prepared, include_unfused):
        model = model.to(device).eval()
        samples: list[float] = []
        images = 0
        bar = None
        if progress:
            from mmengine.utils import ProgressBar
            print(f'{form} model over the test set ({max_iter} images, {warmup} warm-up)')
            bar = ProgressBar(max_iter)
        for index, data in enumerate(loader):
            if index >= max_iter:
                break
            sync()
            start = time.perf_counter()
            with torch.no_grad():
                model.test_step(data)
            sync()
            elapsed = time.perf_counter() - start
            if index >= warmup:
                samples.append(elapsed)
                images += len(data['inputs'])
            if bar is not None:
                bar.update()
        if bar is not None:
            print()
        if not samples:
            raise DeployError(f'the test set has at most {warmup} images; nothing was timed')
        timed = sum(samples)
        stats = TimingStats.from_seconds(samples)  # per image (batch size 1)
        rows.append(dict(model=Path(str(cfg.filename)).stem, arch=prepared.arch or '',
                         exported=prepared.task, backend=f'torch {device} (dataset)', form=form,
                         input='dataset', batch_size=1, images=images,
                         images_per_s=images / timed, **stats.as_dict(),
                         threads=torch.get_num_threads(),
                         device=torch.cuda.get_device_name() if device.startswith('cuda')
                         else describe_cpu(),
                         weights=prepared.weights, torch_version=str(torch.__version__)))
        log(f'{form}: {images / timed:.2f} images/s ({images} timed, {warmup} warm-up)')
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.2f}' if abs(value) >= 0.01 or value == 0 else f'{value:.2e}'
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Rows as a Markdown table (only columns present in some row)."""
    columns = [c for c in (columns or COLUMNS) if any(c in row for row in rows)]
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for row in rows:
        lines.append('| ' + ' | '.join(_cell(row.get(c, '')) for c in columns) + ' |')
    return '\n'.join(lines)


def speedup_summary(rows: Sequence[dict]) -> list[str]:
    """``'<model> on <backend>: fused 1.23x faster than unfused'`` for each measured pair."""
    lines = []
    fused = {(r['model'], r['backend'], r['input']): r for r in rows if r.get('form') == 'fused'}
    for row in rows:
        key = (row['model'], row['backend'], row['input'])
        if row.get('form') == 'unfused' and key in fused and fused[key]['median_ms']:
            ratio = row['median_ms'] / fused[key]['median_ms']
            lines.append(f'{row["model"]} on {row["backend"]} at {row["input"]}: fused '
                         f'{fused[key]["median_ms"]:.2f} ms vs unfused {row["median_ms"]:.2f} ms '
                         f'({ratio:.2f}x)')
    return lines


def write_rows(rows: Sequence[dict], path: str | os.PathLike, force: bool = True) -> Path:
    """Writes the rows as ``.csv`` or ``.json`` (by suffix), atomically."""
    path = Path(path)
    if path.suffix not in ('.csv', '.json'):
        raise DeployError(f'--out must end in .csv or .json, got {path}')
    check_output_path(path, force)
    if path.suffix == '.json':
        meta = dict(machine=describe_cpu(), platform=platform.platform(),
                    torch_version=str(torch.__version__))
        return atomic_write_json(dict(meta=meta, rows=list(rows)), path)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(buffer.getvalue(), path)


def load_rows(path: str | os.PathLike) -> list[dict]:
    """Reads rows written by :func:`write_rows` (JSON)."""
    return json.loads(Path(path).read_text(encoding='utf-8'))['rows']
