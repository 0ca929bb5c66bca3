"""Runners for the timer: eager torch, ONNX Runtime and OpenVINO, and the threads and CPU they use.

A runner is a zero-argument call that runs one forward on fixed inputs and returns its outputs,
so every backend is timed (and checked) the same way. ONNX Runtime and OpenVINO run the same
``.onnx`` file (:func:`export_for_timing`).
"""
from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from repnext_mm.deploy.onnx_export import export_onnx
from repnext_mm.deploy.onnx_runtime import onnxruntime_call
# Re-exported: the runners' callers import every backend from here.
from repnext_mm.deploy.openvino_runtime import openvino_call, openvino_model  # noqa: F401
from repnext_mm.utils.errors import InputError


def set_threads(threads: int | None) -> int:
    """Sets torch's intra-op thread count (if given) and returns the count in effect."""
    if threads is not None:
        if threads < 1:
            raise InputError(f'--threads must be >= 1, got {threads}')
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Runs the block with ``threads`` torch intra-op threads, then restores the previous count.

    Timed code is pinned to the thread count the other runtimes are given, so a ratio between
    runtimes (or to the GEMM floor) never compares different thread counts.
    """
    previous = torch.get_num_threads()
    set_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)


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


def onnxruntime_runner(onnx_path: str | os.PathLike, inputs: Tensor,
                       threads: int | None = None) -> Callable[[], list]:
    """A zero-argument call running an ONNX model on ``inputs`` (numpy arrays out), on the
    session of :func:`repnext_mm.deploy.onnx_runtime.onnxruntime_session`."""
    run, feed = onnxruntime_call(onnx_path, threads), inputs.cpu().numpy()
    return lambda: run(feed)


def openvino_runner(onnx_path: str | os.PathLike, inputs: Tensor,
                    threads: int | None = None) -> Callable[[], list]:
    """A zero-argument call running an ONNX model with OpenVINO on ``inputs`` (numpy arrays out,
    copies: :func:`openvino_call`)."""
    run, feed = openvino_call(onnx_path, threads), inputs.cpu().numpy()
    return lambda: run(feed)


#: The runners of an exported ``.onnx`` file, by backend name.
ONNX_RUNNERS: dict[str, Callable[..., Callable[[], list]]] = {
    'onnxruntime': onnxruntime_runner, 'openvino': openvino_runner}


def export_for_timing(module: nn.Module, inputs: Tensor, path: str | os.PathLike,
                      output_names: Sequence[str]) -> Path:
    """Exports ``module`` at the shape of ``inputs`` to ``path`` (overwritten) and returns it.

    The export is :func:`repnext_mm.deploy.onnx_export.export_onnx` (the graph the deploy tools
    write) without its parity check: timing callers compare outputs themselves, on every backend
    that runs the file.
    """
    export_onnx(module, tuple(inputs.shape[-2:]), Path(path), list(output_names),
                batch_size=inputs.shape[0], force=True, check_parity=False, log=lambda _: None)
    return Path(path)


def export_onnxruntime_runner(module: nn.Module, inputs: Tensor, path: str | os.PathLike,
                              output_names: Sequence[str],
                              threads: int | None = None) -> Callable[[], list]:
    """Exports ``module`` at the shape of ``inputs`` to ``path`` and returns its runner."""
    return onnxruntime_runner(export_for_timing(module, inputs, path, output_names), inputs,
                              threads)
