"""Fixtures shared by the benchmark tests: a tiny fused backbone, its ONNX file, a small GEMM."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from repnext_mm.benchmark import fused
from repnext_mm.models.backbones.repnext import RepNeXt
from tests.helpers import randomize_norms

TINY = dict(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1))
TINY_OUTPUTS = ['stage0', 'stage1', 'stage2', 'stage3']
#: Side of the floor's matmul in tests: the same code path as 2048 in a fraction of the time.
SMALL_GEMM = 128


@pytest.fixture
def small_gemm(monkeypatch) -> int:
    """The floor's GEMM at :data:`SMALL_GEMM` x :data:`SMALL_GEMM`; returns its FLOP count."""
    monkeypatch.setitem(fused.GEMM_SIZE, 'cpu', SMALL_GEMM)
    return 2 * SMALL_GEMM ** 3


@pytest.fixture(scope='module')
def tiny_onnx(tmp_path_factory) -> tuple[RepNeXt, Tensor, Path]:
    """A fused tiny RepNeXt (non-trivial BNs folded), a batch of 2 at 32x32 and its ONNX file.

    Exported once per module with the benchmarks' own export, so every runtime test runs the
    file the benchmarks run.
    """
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed (tools/setup_env.sh)')
    from repnext_mm.benchmark.runtimes import export_for_timing

    model = randomize_norms(RepNeXt(TINY)).eval()
    model.switch_to_deploy()
    inputs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    path = export_for_timing(model, inputs, tmp_path_factory.mktemp('onnx') / 'tiny.onnx',
                             TINY_OUTPUTS)
    return model, inputs, path
