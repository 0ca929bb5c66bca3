"""Runners for the timer: eager torch and ONNX Runtime, and the threads and CPU they run on.

A runner is a zero-argument call that runs one forward on fixed inputs and returns its outputs,
so every backend is timed (and checked) the same way.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from repnext_mm.utils.errors import InputError


def set_threads(threads: int | None) -> int:
    """Sets torch's intra-op thread count (if given) and returns the count in effect."""
    if threads is not None:
        if threads < 1:
            raise InputError(f'--threads must be >= 1, got {threads}')
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def choose_threads(requested: str) -> tuple[int, str]:
    """Resolves a ``--threads`` value: a number, or ``'auto'`` = the cores not busy elsewhere.

    On a shared machine more threads than idle cores make every OpenMP region wait for a
    descheduled thread: steps were 5x slower with 2 threads than with 1 on 2 busy cores.

    Returns:
        The thread count and a note on how it was chosen.
    """
    if requested != 'auto':
        try:
            threads = int(requested)
        except ValueError:
            threads = 0
        if threads < 1:
            raise InputError(f'--threads must be >= 1 or auto, got {requested}')
        return threads, 'as requested'
    cores = available_cores()
    load = os.getloadavg()[0]
    threads = max(1, min(cores, round(cores - load)))
    return threads, f'auto: {cores} cores, load average {load:.2f} from other work'


def describe_cpu() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or platform, and the logical core count."""
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as info:
            for line in info:
                if line.startswith('model name'):
                    name = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return f'{name}, {os.cpu_count()} logical cores'


def torch_runner(module: nn.Module | Callable[[Tensor], Any],
                 inputs: Tensor) -> Callable[[], Any]:
    """A zero-argument call returning ``module(inputs)`` under ``torch.inference_mode``.

    ``module`` is used as it is (device, mode, memory format), so scripted and compiled modules
    run through the same runner.
    """
    def forward() -> Any:
        with torch.inference_mode():
            return module(inputs)
    return forward


def onnxruntime_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session with all graph optimizations.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (default: ONNX Runtime's choice, one per core). Inter-op
            parallelism is off: a sequential graph gains nothing from it and it would compete
            with the intra-op threads for the cores.
    """
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise InputError('ONNX Runtime is not installed: pip install onnxruntime '
                         '(with -c requirements/constraints.txt)') from error
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def onnxruntime_runner(onnx_path: str | os.PathLike, inputs: Tensor,
                       threads: int | None = None) -> Callable[[], list]:
    """A zero-argument call running an ONNX model on ``inputs`` (numpy arrays out)."""
    session = onnxruntime_session(onnx_path, threads)
    feed = {session.get_inputs()[0].name: inputs.cpu().numpy()}
    return lambda: session.run(None, feed)


def export_onnxruntime_runner(module: nn.Module, inputs: Tensor, path: str | os.PathLike,
                              output_names: Sequence[str],
                              threads: int | None = None) -> Callable[[], list]:
    """Exports ``module`` at the shape of ``inputs`` to ``path`` and returns its runner.

    The export is :func:`repnext_mm.deploy.onnx_export.export_onnx` (the graph the deploy tools
    write) without its parity check: timing callers compare outputs themselves.
    """
    from repnext_mm.deploy.onnx_export import export_onnx  # deploy imports this module

    export_onnx(module, tuple(inputs.shape[-2:]), Path(path), list(output_names),
                batch_size=inputs.shape[0], force=True, check_parity=False, log=lambda _: None)
    return onnxruntime_runner(path, inputs, threads)
