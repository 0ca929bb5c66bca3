"""The one OpenVINO setup: a CPU compiled model of an exported file, and a call that runs it.

The deployed-file evaluator (:mod:`.evaluate`) and the benchmarks' runners
(:mod:`repnext_mm.benchmark.runtimes`) run a graph through these, as they run ONNX Runtime
through :mod:`.onnx_runtime`.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from repnext_mm.utils.imports import require


def openvino_model(path: str | os.PathLike, threads: int | None = None):
    """An OpenVINO CPU compiled model of an ONNX file, pinned to fp32 and single-stream latency.

    OpenVINO's CPU plugin may otherwise run in bf16 or fp16 where the CPU supports it (its
    default precision hint), which would time a different computation than the other backends.

    Args:
        path: The ``.onnx`` file.
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's choice, one per core).
    """
    ov = require('openvino', 'the openvino backend')
    import openvino.properties as props
    import openvino.properties.hint as hints

    config = {hints.inference_precision: ov.Type.f32,
              hints.performance_mode: hints.PerformanceMode.LATENCY, props.num_streams: 1}
    if threads:
        config[props.inference_num_threads] = threads
    core = ov.Core()
    return core.compile_model(core.read_model(str(path)), 'CPU', config)


def openvino_call(onnx_path: str | os.PathLike,
                  threads: int | None = None) -> Callable[[np.ndarray], list]:
    """``f(input) -> outputs`` (numpy arrays) of an ONNX file on :func:`openvino_model`."""
    return compiled_call(openvino_model(onnx_path, threads))


def output_names(compiled) -> list[str]:
    """The graph's output names of a compiled model, in order.

    OpenVINO gives an output every name of the tensors it merged into it (``Reshape`` outputs
    folded into a graph output, e.g. ``{'/net/Reshape_56_output_0', 'masks'}``) and
    ``get_any_name`` may pick an inner one; the graph's own names are never the exporter's
    ``/``-prefixed node paths.
    """
    return [min(output.get_names(), key=lambda name: (name.startswith('/'), name))
            for output in compiled.outputs]


def compiled_call(compiled) -> Callable[[np.ndarray], list]:
    """``f(input) -> outputs`` (numpy arrays, in ``compiled.outputs`` order) of a compiled model.

    The outputs are copies, as ONNX Runtime's are (OpenVINO would otherwise hand out views of
    buffers that the next call overwrites). The input is read in place during the call.
    """
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(feed: np.ndarray) -> list:
        result = request.infer({0: feed}, share_inputs=True, share_outputs=False)
        return [result[output] for output in outputs]
    return run
