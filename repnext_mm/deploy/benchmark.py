"""Latency, throughput and complexity measurement for fused and unfused models.

Timing protocol: ``warmup`` untimed calls, then ``runs`` timed calls (one batch each); the
median and the inter-quartile range are reported because a shared machine's timings have long
upper tails that distort the mean. GPU timing synchronizes before reading the clock.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import DeployError

#: Aten ops whose FLOPs count as multiply-adds of convolution and linear layers.
MAC_OPS = frozenset({'convolution', '_convolution', 'conv2d', 'mm', 'addmm', 'bmm', 'baddbmm'})


@dataclass
class TimingStats:
    """Summary of per-call wall times, in milliseconds."""
    runs: int
    median_ms: float
    p25_ms: float
    p75_ms: float
    iqr_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, samples: list[float]) -> 'TimingStats':
        if not samples:
            raise ValueError('no timing samples')
        ms = sorted(s * 1e3 for s in samples)
        if len(ms) >= 2:
            p25, _, p75 = statistics.quantiles(ms, n=4, method='inclusive')
        else:
            p25 = p75 = ms[0]
        return cls(len(ms), statistics.median(ms), p25, p75, p75 - p25, statistics.fmean(ms),
                   ms[0], ms[-1])

    def as_dict(self) -> dict:
        return asdict(self)


def time_callable(fn: Callable[[], object], warmup: int = 10, runs: int = 50,
                  synchronize: Callable[[], None] | None = None, progress: bool = True,
                  label: str = '') -> TimingStats:
    """Times ``fn()`` after ``warmup`` untimed calls.

    Args:
        fn: The call to time (one forward pass).
        warmup: Untimed calls first (allocator, caches, lazy initialization).
        runs: Timed calls.
        synchronize: Called before each clock read (``torch.cuda.synchronize`` on GPU).
        progress: Show an MMEngine progress bar over the timed runs.
        label: Printed before the progress bar.
    """
    if warmup < 0 or runs < 1:
        raise DeployError(f'need warmup >= 0 and runs >= 1, got warmup={warmup} runs={runs}')
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        if label:
            print(label, flush=True)
        bar = ProgressBar(runs)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
        if bar is not None:
            bar.update()
    if bar is not None:
        print(flush=True)
    return TimingStats.from_seconds(samples)


def time_interleaved(functions: dict[str, Callable[[], object]], warmup: int = 10,
                     runs: int = 50, synchronize: Callable[[], None] | None = None,
                     progress: bool = True, label: str = '') -> dict[str, TimingStats]:
    """Times several calls in alternation, so all of them see the same background load.

    On a shared machine the load drifts over seconds; timing A's runs and then B's would fold
    that drift into the A/B comparison. Here every round calls each function once (the order
    reversed every other round, so none is always first after a pause).

    Args:
        functions: ``{name: call}``, e.g. ``{'fused': ..., 'unfused': ...}``.
        warmup: Untimed rounds first.
        runs: Timed rounds (each function is timed ``runs`` times).
        synchronize: Called before each clock read (``torch.cuda.synchronize`` on GPU).
        progress: Show an MMEngine progress bar over the rounds.
        label: Printed before the progress bar.
    """
    if warmup < 0 or runs < 1:
        raise DeployError(f'need warmup >= 0 and runs >= 1, got warmup={warmup} runs={runs}')
    if not functions:
        raise DeployError('nothing to time')
    sync = synchronize or (lambda: None)
    names = list(functions)
    for _ in range(warmup):
        for name in names:
            functions[name]()
    sync()
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        if label:
            print(label, flush=True)
        bar = ProgressBar(runs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(runs):
        for name in (names if round_index % 2 == 0 else reversed(names)):
            start = time.perf_counter()
            functions[name]()
            sync()
            samples[name].append(time.perf_counter() - start)
        if bar is not None:
            bar.update()
    if bar is not None:
        print(flush=True)
    return {name: TimingStats.from_seconds(values) for name, values in samples.items()}


def count_params(module: nn.Module) -> int:
    """Number of parameters (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


def _op_name(op) -> str:
    name = getattr(op, '__name__', None) or str(op)
    return name.split('.')[-1] if '.' in name else name


@torch.no_grad()
def count_macs(module: nn.Module, *inputs: Tensor) -> int:
    """Multiply-accumulates of convolution and linear layers for one forward on ``inputs``.

    Counted with ``torch.utils.flop_counter`` (which counts 2 FLOPs per multiply-add) and
    restricted to conv / matmul ops, as the paper counts MACs.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        module(*inputs)
    totals = counter.get_flop_counts().get('Global', {})
    flops = sum(count for op, count in totals.items() if _op_name(op) in MAC_OPS)
    return int(flops // 2)


def set_threads(threads: int | None) -> int:
    """Sets torch's intra-op thread count (if given) and returns the count in effect."""
    if threads is not None:
        if threads < 1:
            raise DeployError(f'--threads must be >= 1, got {threads}')
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def torch_runner(module: nn.Module, inputs: Tensor, device: str = 'cpu') -> Callable[[], None]:
    """A zero-argument call running ``module(inputs)`` under ``torch.inference_mode``."""
    module = module.to(device).eval()
    inputs = inputs.to(device)

    def forward() -> None:
        with torch.inference_mode():
            module(inputs)
    return forward


def time_torch(module: nn.Module, inputs: Tensor, warmup: int, runs: int, device: str = 'cpu',
               progress: bool = True, label: str = '') -> TimingStats:
    """Latency of ``module(inputs)`` under ``torch.inference_mode``."""
    sync = torch.cuda.synchronize if device.startswith('cuda') else None
    return time_callable(torch_runner(module, inputs, device), warmup, runs, sync, progress, label)


def onnxruntime_runner(onnx_path: str, inputs: Tensor, threads: int) -> Callable[[], object]:
    """A zero-argument call running an ONNX model on onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_path, options, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: inputs.numpy()}
    return lambda: session.run(None, feed)


def time_onnxruntime(onnx_path: str, inputs: Tensor, warmup: int, runs: int, threads: int,
                     progress: bool = True, label: str = '') -> TimingStats:
    """Latency of an ONNX model on onnxruntime's CPU provider with ``threads`` intra-op threads."""
    return time_callable(onnxruntime_runner(onnx_path, inputs, threads), warmup, runs, None,
                         progress, label)


def require_cuda() -> None:
    """Raises a clear error when no CUDA device is usable."""
    if not torch.cuda.is_available():
        built = torch.version.cuda or 'none (CPU-only build)'
        raise DeployError(
            '--backend cuda needs an NVIDIA GPU, but torch.cuda.is_available() is False here '
            f'(torch {torch.__version__}, built for CUDA {built}). Run this on a GPU machine, or '
            'use --backend torch / onnxruntime for CPU latency.')


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or 'out of memory' in str(error).lower()


@torch.inference_mode()
def largest_fitting_batch(module: nn.Module, image_size: tuple[int, int], max_batch: int,
                          device: str = 'cuda',
                          synchronize: Callable[[], None] | None = None) -> int:
    """The largest power-of-two batch (<= ``max_batch``) whose forward fits in GPU memory.

    Starts at the largest power of two not above ``max_batch`` and halves on out-of-memory.

    Args:
        module: Model on ``device``.
        image_size: ``(height, width)``.
        max_batch: Upper bound for the batch size.
        device: Where the trial inputs are allocated.
        synchronize: Waits for the device (default ``torch.cuda.synchronize``), so an
            asynchronous OOM surfaces inside the trial.
    """
    if max_batch < 1:
        raise DeployError(f'--max-batch must be >= 1, got {max_batch}')
    sync = synchronize or torch.cuda.synchronize
    batch = 1 << (max_batch.bit_length() - 1)
    while batch >= 1:
        try:
            module(torch.randn(batch, 3, *image_size, device=device))
            sync()
            return batch
        except RuntimeError as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(error):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch //= 2
    raise DeployError('even batch size 1 does not fit in GPU memory')


def cuda_throughput(module: nn.Module, image_size: tuple[int, int] = (224, 224),
                    max_batch: int = 4096, warmup: int = 10, runs: int = 30,
                    progress: bool = True, label: str = '') -> dict:
    """The paper's GPU throughput protocol: fused fp32, largest power-of-two batch that fits.

    Returns:
        ``dict(batch_size, images_per_s, timing)`` where ``timing`` is per batch.
    """
    require_cuda()
    module = copy.deepcopy(module).float().cuda().eval()
    batch = largest_fitting_batch(module, image_size, max_batch)
    inputs = torch.randn(batch, 3, *image_size, device='cuda')
    stats = time_torch(module, inputs, warmup, runs, device='cuda', progress=progress, label=label)
    return dict(batch_size=batch, images_per_s=batch / (stats.median_ms / 1e3), timing=stats)


def describe_cpu() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or platform, and the logical core count."""
    import os
    import platform

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
