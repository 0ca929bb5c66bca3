"""Branch-to-kernel algebra for structural reparameterization.

Every function here is pure and differentiable: the fast training form calls them on
every forward pass to merge the branch weights into one kernel, and ``switch_to_deploy``
calls them under ``torch.no_grad()`` to build the fused convolutions. Kernels use
PyTorch's layout ``(out_channels, in_channels // groups, kh, kw)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pad_kernel(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero-pads a kernel symmetrically to ``size`` (centres stay aligned).

    A centred ``kh x kw`` convolution with padding ``(kh // 2, kw // 2)`` equals the
    padded ``size`` convolution with padding ``(size[0] // 2, size[1] // 2)``.

    Args:
        kernel: Tensor of shape ``(..., kh, kw)``.
        size: Target ``(height, width)``; each must exceed the kernel's by an even amount.

    Returns:
        Tensor of shape ``(..., size[0], size[1])``.
    """
    kh, kw = kernel.shape[-2:]
    dh, dw = size[0] - kh, size[1] - kw
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(
            f'cannot centre-pad a {kh}x{kw} kernel to {size[0]}x{size[1]}: the target must be '
            'at least as large and differ by an even number in each dimension')
    return F.pad(kernel, [dw // 2, dw // 2, dh // 2, dh // 2])


def dilate_kernel(kernel: Tensor, dilation: int) -> Tensor:
    """Returns the dense kernel equivalent to ``kernel`` applied with ``dilation``.

    A dilated 2x2 kernel (dilation 2) becomes a 3x3 kernel with its taps on the corners.
    """
    if dilation < 1:
        raise ValueError(f'dilation must be >= 1, got {dilation}')
    if dilation == 1:
        return kernel
    kh, kw = kernel.shape[-2:]
    dense = kernel.new_zeros(*kernel.shape[:-2], dilation * (kh - 1) + 1, dilation * (kw - 1) + 1)
    dense[..., ::dilation, ::dilation] = kernel
    return dense


def serial_strip_kernel(row_kernel: Tensor, column_kernel: Tensor) -> Tensor:
    """Merges a bias-free depthwise ``1xk`` conv followed by a depthwise ``kx1`` conv.

    With zero padding ``(0, k // 2)`` then ``(k // 2, 0)`` and no bias in between, the pair is
    exactly one depthwise ``kxk`` convolution whose kernel is the outer product of the two strips
    (at any stride split as ``(1, s)`` then ``(s, 1)``).

    Args:
        row_kernel: ``(C, 1, 1, k)`` weight of the first (horizontal) conv.
        column_kernel: ``(C, 1, k, 1)`` weight of the second (vertical) conv.

    Returns:
        ``(C, 1, k, k)`` kernel.
    """
    if (row_kernel.dim() != 4 or column_kernel.dim() != 4 or row_kernel.shape[1] != 1
            or row_kernel.shape[2] != 1 or column_kernel.shape[3] != 1
            or row_kernel.shape[0] != column_kernel.shape[0]
            or column_kernel.shape[1] != 1):
        raise ValueError(
            'serial_strip_kernel expects depthwise kernels of shapes (C, 1, 1, k) and (C, 1, k, 1), '
            f'got {tuple(row_kernel.shape)} and {tuple(column_kernel.shape)}')
    return column_kernel * row_kernel


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """Returns the per-channel ``(scale, shift)`` an eval-mode BatchNorm applies."""
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError('cannot fuse a BatchNorm built with track_running_stats=False')
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def fuse_affine_after_conv(weight: Tensor, bias: Tensor | None, scale: Tensor,
                           shift: Tensor) -> tuple[Tensor, Tensor]:
    """Folds a per-output-channel affine ``y * scale + shift`` into the conv before it."""
    fused_weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    fused_bias = shift if bias is None else bias * scale + shift
    return fused_weight, fused_bias


def fuse_affine_before_linear(weight: Tensor, bias: Tensor | None, scale: Tensor,
                              shift: Tensor) -> tuple[Tensor, Tensor]:
    """Folds a per-input-channel affine ``x * scale + shift`` into the linear / 1x1 conv after it.

    Exact for ``nn.Linear`` weights ``(O, I)`` and ``1x1`` conv weights ``(O, I, 1, 1)`` (no padding
    is involved, so the shift reaches every output position in full).
    """
    if weight.dim() == 4 and weight.shape[-2:] != (1, 1):
        raise ValueError(f'an affine can only be folded into a following 1x1 conv, got kernel '
                         f'{tuple(weight.shape[-2:])}')
    matrix = weight.reshape(weight.shape[0], weight.shape[1])
    fused_weight = weight * scale.reshape(1, -1, *([1] * (weight.dim() - 2)))
    fused_bias = matrix @ shift
    if bias is not None:
        fused_bias = fused_bias + bias
    return fused_weight, fused_bias


def conv_with_weights(template: nn.Conv2d, weight: Tensor, bias: Tensor | None) -> nn.Conv2d:
    """Builds a Conv2d with ``template``'s channels, stride and groups and the given weights.

    Padding is centred (``k // 2``), as for every convolution in RepNeXt; the kernel size comes
    from ``weight``, so a fused kernel may be larger than the template's.
    """
    conv = nn.Conv2d(
        template.in_channels,
        template.out_channels,
        kernel_size=tuple(weight.shape[-2:]),
        stride=template.stride,
        padding=tuple(k // 2 for k in weight.shape[-2:]),
        dilation=1,
        groups=template.groups,
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype)
    conv.weight.data.copy_(weight)
    if bias is not None:
        conv.bias.data.copy_(bias)
    return conv
