"""GPU throughput with the paper's protocol: fused fp32, the largest power-of-two batch that fits."""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from repnext_mm.models.input_sizes import CLASSIFIER_INPUT_SIZE
from repnext_mm.utils.errors import InputError
from .runtimes import torch_runner
from .timing import time_callable


def require_cuda() -> None:
    """Raises a clear error when no CUDA device is usable."""
    if not torch.cuda.is_available():
        built = torch.version.cuda or 'none (CPU-only build)'
        raise InputError(
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
        raise InputError(f'--max-batch must be >= 1, got {max_batch}')
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
    raise InputError('even batch size 1 does not fit in GPU memory')


def cuda_throughput(module: nn.Module, image_size: tuple[int, int] = CLASSIFIER_INPUT_SIZE,
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
    stats = time_callable(torch_runner(module, inputs), warmup, runs, torch.cuda.synchronize,
                          progress, label)
    return dict(batch_size=batch, images_per_s=batch / (stats.median_ms / 1e3), timing=stats)
