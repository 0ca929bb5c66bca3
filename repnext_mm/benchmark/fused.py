"""The fused backbone's forward on several runtimes, the authors' partial fusion and the GEMM floor.

Variants (all hold the same weights and are checked to compute the same function):

- the unfused training form in eval mode, every SRP branch run literally;
- the authors' partial fusion: SRP branch sets merged and conv+BN pairs folded, but the BN after
  every chunk / copy conv left standalone (built here from this package's modules);
- the full fusion (``RepNeXt.switch_to_deploy``: no BN left) in eager NCHW and channels_last,
  TorchScript frozen, ONNX Runtime and OpenVINO (CPU, both on the same exported file), and
  optionally ``torch.compile``.

The compute floor is ``2 x MACs / (GEMM FLOP/s)``, the GEMM rate measured by a large
``torch.matmul`` timed in the same rounds as the variants, at the same thread count
(:func:`floor_samples`).
"""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from repnext_mm.deploy.verify import RELATIVE_TOLERANCE, compare_outputs
from repnext_mm.models.utils.reparameterize import count_batchnorms
from repnext_mm.models.backbones.repnext import ConvNorm, RepDWConvM, RepDWConvS, RepNeXt
from repnext_mm.models.utils.complexity import count_macs
from .runtimes import export_for_timing, onnxruntime_runner, openvino_runner, torch_runner

FUSED_BATCH, FUSED_SIZE = 1, 512
GEMM_SIZE = {'cpu': 2048, 'cuda': 8192}
UNFUSED = 'unfused (training form, eval)'
PARTIAL_EAGER = "authors' partial fusion, eager"
PARTIAL_ORT = "authors' partial fusion, ONNX Runtime"
FULL_PREFIX = 'full fusion'
FULL_EAGER = 'full fusion, eager NCHW'
FULL_ORT = 'full fusion, ONNX Runtime'
FULL_OPENVINO = 'full fusion, OpenVINO'
#: The matmul's name in a round-robin beside the models.
GEMM = 'GEMM'
#: Largest relative difference from the unfused outputs a variant may show.
OUTPUT_TOLERANCE = RELATIVE_TOLERANCE

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


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cpu_runtime_variants(forms: dict[str, RepNeXt], x: Tensor, threads: int,
                          workdir: Path) -> Variants:
    """TorchScript, ONNX Runtime and OpenVINO forms (those installed), which run on the CPU only.

    Each form is exported once; ONNX Runtime and OpenVINO run the same file.
    """
    fused = forms['fused']
    with torch.no_grad():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(
            torch.jit.trace(fused, x, check_trace=False).eval()))
    variants = {'full fusion, TorchScript frozen': torch_runner(frozen, x)}
    if not _installed('onnxruntime'):
        print('  (onnxruntime not installed: ONNX Runtime and OpenVINO rows skipped)')
        return variants
    names = [f'stage{index}' for index in fused.out_indices]
    partial_onnx = export_for_timing(forms['partial'], x, workdir / 'partial.onnx', names)
    fused_onnx = export_for_timing(fused, x, workdir / 'fused.onnx', names)
    variants[PARTIAL_ORT] = onnxruntime_runner(partial_onnx, x, threads)
    variants[FULL_ORT] = onnxruntime_runner(fused_onnx, x, threads)
    if _installed('openvino'):
        variants[FULL_OPENVINO] = openvino_runner(fused_onnx, x, threads)
    else:
        print('  (openvino not installed: OpenVINO row skipped)')
    return variants


def _compiled_variant(fused_channels_last: nn.Module, x_channels_last: Tensor) -> Variants:
    import torch._inductor.config as inductor_config
    inductor_config.freezing = True  # constant-fold the weights into the compiled graph
    compiled = torch.compile(copy.deepcopy(fused_channels_last))
    return {'full fusion, torch.compile (channels_last)': torch_runner(compiled, x_channels_last)}


def check_same_outputs(variants: Variants, reference: str = UNFUSED,
                       tolerance: float = OUTPUT_TOLERANCE) -> dict[str, float]:
    """Runs every variant once and compares its outputs with ``reference``'s.

    Returns:
        ``{label: largest relative difference}`` (see
        :func:`~repnext_mm.deploy.verify.compare_outputs`).

    Raises:
        RuntimeError: a variant differs by more than ``tolerance`` (relative).
    """
    expected = [torch.as_tensor(out).cpu() for out in variants[reference]()]
    differences = {}
    for label, fn in variants.items():
        difference = compare_outputs([torch.as_tensor(out).cpu() for out in fn()], expected)
        if not difference.within(tolerance):
            raise RuntimeError(f'{label} differs from {reference}: {difference} (tolerance '
                               f'{tolerance:.0e})')
        differences[label] = difference.max_rel
    return differences


def build_fused_variants(arch: str | dict, device: str, threads: int, use_compile: bool,
                         workdir: Path, size: int = FUSED_SIZE) -> tuple[Variants, dict]:
    """Returns ``{label: zero-arg forward}`` and facts about the models (MACs, BN counts).

    Every variant is checked against the unfused model before it is returned; its largest
    relative difference is in ``facts['max_rel_error']``.
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
        facts['max_rel_error'] = check_same_outputs(variants)
    except RuntimeError as error:
        raise RuntimeError(f'{arch}: {error}') from error
    return variants, facts


def gemm_callable(device: str) -> tuple[Callable[[], object], float]:
    """A large square fp32 matmul and its FLOP count (the machine's dense compute rate)."""
    n = GEMM_SIZE[device]
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return (lambda: torch.matmul(a, b)), 2.0 * n ** 3


def floor_samples(macs: float, gemm_seconds: Sequence[float], gemm_flop: float) -> list[float]:
    """The compute floor ``2 x macs / (GEMM FLOP/s)`` of each round, in seconds.

    ``gemm_seconds`` are the GEMM's per-round times from the round-robin that timed the models,
    so :func:`~repnext_mm.benchmark.timing.paired_ratio` of a model's samples and these gives
    its "x floor" with the load of each round cancelled.
    """
    return [2.0 * macs * seconds / gemm_flop for seconds in gemm_seconds]
