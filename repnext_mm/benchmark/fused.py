"""The fused backbone's forward on several runtimes, the authors' partial fusion and the GEMM floor.

Variants (all hold the same weights and are checked to compute the same function):

- the unfused training form in eval mode, every SRP branch run literally;
- the authors' partial fusion: SRP branch sets merged and conv+BN pairs folded, but the BN after
  every chunk / copy conv left standalone (built here from this package's modules);
- the full fusion (``RepNeXt.switch_to_deploy``: no BN left) in eager NCHW and channels_last,
  TorchScript frozen and ONNX Runtime (CPU), and optionally ``torch.compile``.

The compute floor is ``2 x MACs / (GEMM FLOP/s)``, the GEMM rate measured by a large
``torch.matmul`` timed alongside the variants.
"""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from repnext_mm.models.utils.reparameterize import count_batchnorms
from repnext_mm.models.backbones.repnext import ConvNorm, RepDWConvM, RepDWConvS, RepNeXt
from .counting import count_macs
from .runtimes import export_onnxruntime_runner, torch_runner

FUSED_BATCH, FUSED_SIZE = 1, 512
GEMM_SIZE = {'cpu': 2048, 'cuda': 8192}
UNFUSED = 'unfused (training form, eval)'
PARTIAL_EAGER = "authors' partial fusion, eager"
PARTIAL_ORT = "authors' partial fusion, ONNX Runtime"
FULL_PREFIX = 'full fusion'
FULL_EAGER = 'full fusion, eager NCHW'
FULL_ORT = 'full fusion, ONNX Runtime'
#: Largest relative difference from the unfused outputs a variant may show.
OUTPUT_TOLERANCE = 1e-4

Variants = dict[str, Callable[[], object]]


def authors_partial_fusion(model: RepNeXt) -> RepNeXt:
    """The authors' fuse: SRP branch sets merged and conv+BN pairs folded, but the BN after each
    chunk conv (blocks) and copy conv (downsamples) left standalone."""
    model = copy.deepcopy(model).eval()
    for module in [m for m in model.modules() if isinstance(m, (RepDWConvS, RepDWConvM, ConvNorm))]:
        module.switch_to_deploy()
    return model


@torch.no_grad()
def _randomize_bn_statistics(model: nn.Module) -> None:
    # Non-trivial statistics, so every fold does real work (and a wrong one shows).
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)


def fusion_forms(arch: str | dict) -> dict[str, RepNeXt]:
    """``{'unfused', 'partial', 'fused'}`` forms of one randomly initialized backbone (eval)."""
    torch.manual_seed(0)
    unfused = RepNeXt(arch, srp_forward='branches').eval()
    _randomize_bn_statistics(unfused)
    fused = copy.deepcopy(unfused)
    fused.switch_to_deploy()
    return dict(unfused=unfused, partial=authors_partial_fusion(unfused), fused=fused)


def _cpu_runtime_variants(forms: dict[str, RepNeXt], x: Tensor, threads: int,
                          workdir: Path) -> Variants:
    """TorchScript and (if installed) ONNX Runtime forms, which run on the CPU only."""
    fused = forms['fused']
    with torch.no_grad():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(
            torch.jit.trace(fused, x, check_trace=False).eval()))
    variants = {'full fusion, TorchScript frozen': torch_runner(frozen, x)}
    if importlib.util.find_spec('onnxruntime') is None:
        print('  (onnxruntime not installed: ONNX Runtime rows skipped)')
        return variants
    names = [f'stage{index}' for index in fused.out_indices]
    variants[PARTIAL_ORT] = export_onnxruntime_runner(forms['partial'], x,
                                                      workdir / 'partial.onnx', names, threads)
    variants[FULL_ORT] = export_onnxruntime_runner(fused, x, workdir / 'fused.onnx', names, threads)
    return variants


def _compiled_variant(fused_channels_last: nn.Module, x_channels_last: Tensor) -> Variants:
    import torch._inductor.config as inductor_config
    inductor_config.freezing = True  # constant-fold the weights into the compiled graph
    compiled = torch.compile(copy.deepcopy(fused_channels_last))
    return {'full fusion, torch.compile (channels_last)': torch_runner(compiled, x_channels_last)}


def check_same_outputs(variants: Variants, reference: str = UNFUSED,
                       tolerance: float = OUTPUT_TOLERANCE) -> None:
    """Raises ``RuntimeError`` if a variant's outputs differ from ``reference``'s."""
    expected = variants[reference]()
    for label, fn in variants.items():
        for out, ref in zip(fn(), expected):
            out = torch.as_tensor(out).to(ref.device)
            error = ((out - ref).abs().max() / ref.abs().max()).item()
            if error > tolerance:
                raise RuntimeError(f'{label} differs from {reference} (max rel. error '
                                   f'{error:.1e})')


def build_fused_variants(arch: str | dict, device: str, threads: int, use_compile: bool,
                         workdir: Path, size: int = FUSED_SIZE) -> tuple[Variants, dict]:
    """Returns ``{label: zero-arg forward}`` and facts about the models (MACs, BN counts).

    Every variant is checked against the unfused model before it is returned.
    """
    forms = fusion_forms(arch)
    unfused, partial, fused = (forms[name].to(device) for name in ('unfused', 'partial', 'fused'))
    x = torch.randn(FUSED_BATCH, 3, size, size, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fused_cl = copy.deepcopy(fused).to(memory_format=torch.channels_last)
    facts = dict(gmacs_fused=count_macs(fused, x) / 1e9, bn_unfused=count_batchnorms(unfused),
                 bn_partial=count_batchnorms(partial), bn_fused=count_batchnorms(fused))
    variants = {UNFUSED: torch_runner(unfused, x), PARTIAL_EAGER: torch_runner(partial, x),
                FULL_EAGER: torch_runner(fused, x),
                'full fusion, eager channels_last': torch_runner(fused_cl, x_cl)}
    if device == 'cpu':
        variants.update(_cpu_runtime_variants(forms, x, threads, workdir))
    if use_compile:
        variants.update(_compiled_variant(fused_cl, x_cl))
    try:
        check_same_outputs(variants)
    except RuntimeError as error:
        raise RuntimeError(f'{arch}: {error}') from error
    return variants, facts


def gemm_callable(device: str) -> tuple[Callable[[], object], float]:
    """A large square fp32 matmul and its FLOP count (the machine's dense compute rate)."""
    n = GEMM_SIZE[device]
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return (lambda: torch.matmul(a, b)), 2.0 * n ** 3
