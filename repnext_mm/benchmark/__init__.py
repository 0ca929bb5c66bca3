"""Timing, and the latency and training-speed suites.

The primitives are importable from here: the one timer (:mod:`.timing`), the runners (torch,
ONNX Runtime, OpenVINO) and thread settings (:mod:`.runtimes`) and the GPU throughput protocol
(:mod:`.gpu`). Parameter and MAC counts live beside the model
(:mod:`repnext_mm.models.utils.complexity`), the ONNX Runtime session beside the ONNX export
(:mod:`repnext_mm.deploy.onnx_runtime`). The suites that ``tools/analysis/benchmark.py`` and
``tools/analysis/speed.py`` drive are imported from their modules, because they pull in the
OpenMMLab stack: :mod:`.suite` and :mod:`.tables` (fused vs unfused latency rows),
:mod:`.training`, :mod:`.fused` and :mod:`.speed` (training step, fused forms, the speed report).
"""
from .gpu import cuda_throughput, largest_fitting_batch, require_cuda
from .runtimes import (describe_cpu, onnxruntime_runner, openvino_runner, set_threads, torch_runner,
                       torch_threads)
from .timing import TimingStats, paired_ratio, round_robin, time_callable, time_interleaved

__all__ = [
    'TimingStats', 'cuda_throughput', 'describe_cpu', 'largest_fitting_batch',
    'onnxruntime_runner', 'openvino_runner', 'paired_ratio', 'require_cuda', 'round_robin',
    'set_threads', 'time_callable', 'time_interleaved', 'torch_runner', 'torch_threads'
]
