"""The one ONNX Runtime setup: a CPU session of an ``.onnx`` file, and a call that runs it.

The export's parity check (:mod:`.onnx_export`), the int8 checks (:mod:`.quantize`) and the
benchmarks' runners (:mod:`repnext_mm.benchmark.runtimes`) all run a graph through these.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from repnext_mm.utils.imports import require


def onnxruntime_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session with all graph optimizations.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (default: ONNX Runtime's choice, one per core). Inter-op
            parallelism is off: a sequential graph gains nothing from it and it would compete
            with the intra-op threads for the cores.
    """
    ort = require('onnxruntime', 'running ONNX graphs')
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def onnxruntime_call(path: str | os.PathLike,
                     threads: int | None = 1) -> Callable[[np.ndarray], list]:
    """``f(input) -> outputs`` (numpy arrays) of an ONNX Runtime CPU session on ``path``."""
    session = onnxruntime_session(path, threads)
    input_name = session.get_inputs()[0].name
    return lambda feed: session.run(None, {input_name: feed})
