"""The latency report of ``tools/analysis/benchmark.py``: models in, table and rows out."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from repnext_mm.deploy.verify import DEFAULT_SHAPES, check_input_shape
from repnext_mm.models.input_sizes import CLASSIFIER_INPUT_SIZE
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import check_output_path
from .runtimes import describe_cpu, set_threads
from .suite import benchmark_model, dataset_throughput
from .tables import markdown_table, speedup_summary, write_rows


@dataclass
class LatencySettings:
    """What ``tools/analysis/benchmark.py`` measures (its command line options)."""
    config: str | None = None
    checkpoint: str | None = None
    arch: list[str] | None = None
    shape: tuple[int, int] | None = None
    backend: list[str] = field(default_factory=lambda: ['torch'])
    backbone_only: bool = False
    batch_size: int = 1
    warmup: int = 10
    runs: int = 50
    threads: list[int] | None = None  # each count is one full measurement
    max_batch: int = 4096
    include_unfused: bool = True
    dataset: bool = False
    max_iter: int = 200
    out: str | None = None
    force: bool = False
    progress: bool = True
    unsafe_full_unpickle: bool = False
    cfg_options: dict[str, Any] | None = None

    def check(self) -> None:
        """Raises InputError for contradictory or out-of-range settings, before any work."""
        if bool(self.config) == bool(self.arch):
            raise InputError('pass either CONFIG [CHECKPOINT] or --arch m0 ... m5 (bare backbones)')
        if self.batch_size < 1:
            raise InputError(f'--batch-size must be >= 1, got {self.batch_size}')
        check_input_shape(self.shape)
        if self.threads and min(self.threads) < 1:
            raise InputError(f'--threads must be >= 1, got {min(self.threads)}')
        if self.dataset and (len(self.backend) != 1 or self.backend[0] not in ('torch', 'cuda')):
            raise InputError('--dataset runs the whole torch model: pass --backend torch (CPU) '
                             'or --backend cuda')
        if self.out:
            check_output_path(self.out, self.force)


def _prepared_models(settings: LatencySettings) -> list[tuple[str, Any]]:
    """``[(label, PreparedModel)]``: the bare backbones, or the config's model."""
    from repnext_mm.apis.model import prepare_bare_backbone, prepare_model

    if settings.arch:
        return [(f'RepNeXt-{arch.upper()} backbone', prepare_bare_backbone(arch))
                for arch in settings.arch]
    prepared = prepare_model(settings.config, settings.checkpoint, settings.cfg_options,
                             settings.unsafe_full_unpickle)
    label = Path(settings.config).stem + (' backbone' if settings.backbone_only else '')
    return [(label, prepared)]


def _input_shape(settings: LatencySettings, task: str) -> tuple[int, int]:
    kind = 'backbone' if settings.backbone_only else task
    default = CLASSIFIER_INPUT_SIZE if settings.backend == ['cuda'] else DEFAULT_SHAPES[kind]
    return tuple(settings.shape or default)


def _measure(settings: LatencySettings, label: str, prepared: Any, threads: int) -> list[dict]:
    if settings.dataset:
        device = 'cuda' if settings.backend == ['cuda'] else 'cpu'
        return dataset_throughput(prepared, settings.max_iter, min(5, settings.max_iter - 1),
                                  settings.include_unfused, settings.progress, device)
    return benchmark_model(prepared, label, settings.backend,
                           _input_shape(settings, prepared.task), settings.batch_size,
                           settings.warmup, settings.runs, threads, settings.backbone_only,
                           settings.include_unfused, settings.max_batch, settings.progress)


def _load_average() -> str:
    return ', '.join(f'{value:.2f}' for value in os.getloadavg())


def run_latency(settings: LatencySettings) -> list[dict]:
    """Times every model as asked, prints the Markdown table and speed-ups, writes ``out``.

    Each thread count in ``settings.threads`` is a full measurement of every model and backend.

    Returns:
        The rows (one per thread count, model, backend and form).
    """
    settings.check()
    models = _prepared_models(settings)
    for _, prepared in models:
        for note in prepared.notes:
            print(f'note: {note}')
    rows = []
    for requested in settings.threads or [None]:
        threads = set_threads(requested)
        print(f'machine: {describe_cpu()}; torch {torch.__version__} with {threads} intra-op '
              f'threads; load average {_load_average()} (other work on this machine)')
        rows += [row for label, prepared in models
                 for row in _measure(settings, label, prepared, threads)]
    print(f'load average at the end: {_load_average()}')
    print()
    print(markdown_table(rows))
    for line in speedup_summary(rows):
        print(line)
    if settings.out:
        print(f'wrote {write_rows(rows, settings.out, force=True)}')
    return rows
