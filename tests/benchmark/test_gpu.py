"""The GPU throughput protocol's batch search and its error without a GPU."""
import pytest
import torch
from torch import nn

from repnext_mm.benchmark import gpu
from repnext_mm.benchmark.gpu import largest_fitting_batch, require_cuda
from repnext_mm.utils.errors import InputError


class OutOfMemoryAbove(nn.Module):
    """Raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.tried = []

    def forward(self, x):
        self.tried.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return x


def test_gpu_batch_search_halves_powers_of_two_on_oom():
    module = OutOfMemoryAbove(limit=100)
    batch = largest_fitting_batch(module, (8, 8), max_batch=1000, device='cpu',
                                  synchronize=lambda: None)
    assert batch == 64
    assert module.tried == [512, 256, 128, 64]


def test_gpu_batch_search_reraises_other_errors():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError('shape mismatch')
    with pytest.raises(RuntimeError, match='shape mismatch'):
        largest_fitting_batch(Broken(), (8, 8), 16, device='cpu', synchronize=lambda: None)


def test_cuda_backend_fails_clearly_without_a_gpu(monkeypatch):
    monkeypatch.setattr(gpu.torch.cuda, 'is_available', lambda: False)
    with pytest.raises(InputError, match='needs an NVIDIA GPU.*--backend torch / onnxruntime'):
        require_cuda()
