"""Model complexity: parameters and multiply-accumulates (MACs) as the paper counts them.

Used by the benchmarks, the Core ML export report and the model-zoo generator.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

#: Aten ops whose FLOPs count as multiply-adds of convolution and linear layers.
MAC_OPS = frozenset({'convolution', '_convolution', 'conv2d', 'mm', 'addmm', 'bmm', 'baddbmm'})


def count_params(module: nn.Module) -> int:
    """Number of parameters (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


def _op_name(op: object) -> str:
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
