"""Shared test utilities."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

REPO = Path(__file__).resolve().parents[1]


def load_tool(relative_path: str) -> ModuleType:
    """Imports ``tools/...py`` by path, once per process (``tools`` is not a package)."""
    name = 'tool_' + relative_path.replace('/', '_').removesuffix('.py')
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_tool(relative_path: str, argv: list, capsys) -> tuple[int, str, str]:
    """Runs ``tools/...py``'s ``main(argv)`` in-process as its ``__main__`` does (``run_cli``).

    Much faster than a subprocess, which would re-import torch and the OpenMMLab stack.

    Returns:
        ``(exit status, stdout, stderr)``; an InputError is status 2 and one stderr line.
    """
    from repnext_mm.cli import run_cli

    capsys.readouterr()  # drop anything printed before
    status = run_cli(load_tool(relative_path).main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@torch.no_grad()
def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every BatchNorm non-trivial statistics and affine parameters.

    At the default init (mean 0, var 1, weight 1, bias 0) a BN is almost the identity and a wrong
    fusion can still pass an equality test; these values make every fold matter.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model


def max_rel_error(actual: Tensor, expected: Tensor) -> float:
    """Max absolute difference relative to the largest magnitude of ``expected``."""
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()
