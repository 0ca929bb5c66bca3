"""RepNeXt backbone (Zhao et al., "RepNeXt: A Fast Multi-Scale CNN using Structural
Reparameterization").

Training form: multi-branch depthwise convolutions (structural reparameterization, SRP) inside
"chunk" and "copy" convolutions. Deploy form (``deploy=True`` or ``switch_to_deploy()``): every
SRP branch set merged into one depthwise kernel and every BatchNorm folded into a convolution,
so the fused backbone holds no BatchNorm at all.

``design=`` builds one of the presets of :mod:`.repnext_designs` instead of the released model:
the paper's ablations (Table 5: without SRP, other branch sets, a branch removed, a 3x3 conv
downsample) or the authors' single-branch M0E-M2E. Each fuses as the default does.

``with_cp=True`` trades compute for training memory: each block and downsample layer keeps only
its input and runs again in backward (activation checkpointing, BatchNorm statistics updated once).

TorchScript: every layer scripts in both forms (``deploy`` is a TorchScript constant, so only the
form built is compiled). A scripted training form runs the literal SRP branches (the same
outputs as the merged kernel) and no checkpointing; ``RepNeXt.forward`` returns a tuple of any
length, which TorchScript cannot type, so scripted models run ``stem`` and ``stages`` themselves
(as the timm model does, :mod:`repnext_mm.hub.timm_models`).
"""
from __future__ import annotations

import copy
import difflib
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from repnext_mm.registry import MODELS
from ..layers.activation_checkpoint import checkpointed, records_graph
from ..layers.reparam import (bn_affine, conv_with_weights, dilate_kernel, fuse_affine_after_conv,
                              fuse_affine_before_linear, pad_kernel, serial_strip_kernel)
from .repnext_designs import (DESIGNS, MEDIUM_KERNELS, SINGLE_BRANCH_KERNELS, SMALL_KERNELS,
                              RepNeXtDesign, get_design)

# How the SRP branches run in the training form. 'merged': build the equivalent single kernel from
# the branch weights on every forward and run one convolution (same parameters and gradients, much
# faster). 'branches': run every branch literally and sum (the reference path).
SRPForward = Literal['merged', 'branches']
SRP_FORWARD_MODES = ('merged', 'branches')


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_norm_layer(layer: object) -> bool:
    norms = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
    # mmcv.ops' SyncBatchNorm ('MMSyncBN') is a plain Module
    return isinstance(layer, type) and (issubclass(layer, norms) or 'Norm' in layer.__name__)


def _norm_layer_names() -> list[str]:
    """The registered names of norm layers (mmcv registers them in MMEngine's root registry)."""
    from mmengine.registry import MODELS as ROOT_MODELS

    return sorted(name for name, cls in ROOT_MODELS.module_dict.items() if _is_norm_layer(cls))


def _check_norm_cfg(norm_cfg: object) -> None:
    """``None`` (BatchNorm) or a dict whose ``type`` is a norm layer ``build_norm_layer`` finds."""
    if norm_cfg is None:
        return
    example = "e.g. dict(type='BN') or dict(type='SyncBN')"
    if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
        raise ValueError(f'norm_cfg={norm_cfg!r}: expected a dict with a norm layer type, '
                         f'{example}')
    layer = norm_cfg['type']
    if isinstance(layer, str):
        from mmengine.registry import MODELS as ROOT_MODELS

        # The lookup mmcv's build_norm_layer makes: the current scope's registry, then its parents.
        with ROOT_MODELS.switch_scope_and_registry(None) as registry:
            found = registry.get(layer)
    else:
        found = layer
    if _is_norm_layer(found):
        return
    names = _norm_layer_names()
    close = difflib.get_close_matches(str(layer), names, n=1)
    fix = f'did you mean {close[0]!r}?' if close else f'choose one of {", ".join(names)}'
    raise ValueError(f'norm_cfg={norm_cfg!r}: {layer!r} is not a norm layer; {fix}')


def _drop_path(rate: float, deploy: bool) -> nn.Module:
    """Stochastic depth on a residual branch (mmcv's ``DropPath``: in training, each sample's
    branch is zeroed with probability ``rate`` and kept ones scaled by ``1 / (1 - rate)``;
    identity in eval). Rate 0 and the fused form (inference only) hold a plain identity."""
    return DropPath(rate) if rate > 0 and not deploy else nn.Identity()


def _depthwise(channels: int, kernel_size: tuple[int, int], stride: tuple[int, int] | int = 1,
               bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    """A depthwise conv with centred ("same" at stride 1) zero padding."""
    padding = tuple(dilation * (k - 1) // 2 for k in kernel_size)
    return nn.Conv2d(channels, channels, kernel_size, stride=stride, padding=padding,
                     dilation=dilation, groups=channels, bias=bias)


def _depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
    kh, kw = weight.shape[-2:]
    return F.conv2d(x, weight, bias, stride=stride, padding=(kh // 2, kw // 2), groups=x.shape[1])


class ConvNorm(nn.Module):
    """Conv2d without bias followed by a norm layer; fuses into one biased Conv2d.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size; padding is ``kernel_size // 2``.
        stride: Convolution stride.
        norm_cfg: Norm layer config (``BN``, ``SyncBN``, ...).
        deploy: Build the fused form (a biased conv, no norm) directly.
    """
    __constants__ = ['deploy']

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 norm_cfg: dict | None = None, deploy: bool = False) -> None:
        super().__init__()
        self.deploy = deploy
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=kernel_size // 2, bias=deploy)
        if not deploy:
            self.bn = build_norm_layer(norm_cfg or dict(type='BN'), out_channels)[1]

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return x if self.deploy else self.bn(x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """Returns the conv with the norm folded in (this module is left unchanged)."""
        if self.deploy:
            return self.conv
        weight, bias = fuse_affine_after_conv(self.conv.weight, self.conv.bias, *bn_affine(self.bn))
        return conv_with_weights(self.conv, weight, bias)

    def switch_to_deploy(self) -> None:
        if self.deploy:
            return
        self.conv = self.fuse()
        del self.bn
        self.deploy = True


def _conv_name(kernel: str) -> str:
    """The attribute of a single-conv kernel branch: ``'3x5'`` -> ``conv3x5``, ``'2x2d'`` ->
    ``conv2x2_dilated``."""
    return 'conv2x2_dilated' if kernel == '2x2d' else f'conv{kernel}'


def _branch_convs(kernel: str, channels: int, stride: int) -> list[tuple[str, nn.Conv2d]]:
    """The depthwise convs of one kernel branch (names as in :mod:`.repnext_designs`), by
    attribute name: ``'HxW'`` one conv with bias, ``'2x2d'`` a 2x2 conv of dilation 2 with bias,
    ``'1xk-kx1'`` a serial pair without bias (stride split as ``(1, s)`` then ``(s, 1)``)."""
    if '-' in kernel:
        row, column = kernel.split('-')
        k = int(row.split('x')[1])
        return [(f'conv{row}', _depthwise(channels, (1, k), stride=(1, stride), bias=False)),
                (f'conv{column}', _depthwise(channels, (k, 1), stride=(stride, 1), bias=False))]
    if kernel == '2x2d':
        return [(_conv_name(kernel), _depthwise(channels, (2, 2), stride=stride, dilation=2))]
    h, w = (int(side) for side in kernel.split('x'))
    return [(_conv_name(kernel), _depthwise(channels, (h, w), stride=stride))]


class _RepDWConv(nn.Module):
    """Base of the reparameterizable depthwise convs: a set of kernel branches equal to one
    kernel.

    The branch set is a tuple of kernel names of :mod:`.repnext_designs` (``kernels``; the first
    is the main kernel, the size all fuse into); each branch's convs are attributes named after
    it (``conv3x3``, ``conv1x7`` + ``conv7x1``, ``conv2x2_dilated``), the absent ones ``None``.
    ``merged_kernel()`` (a differentiable function of the branch weights) handles any set;
    subclasses spell out ``forward_branches()`` (TorchScript compiles it, attribute by attribute);
    this base runs either form and performs the switch to deploy.
    """
    __constants__ = ['deploy']
    fused_kernel_size: int
    #: Kernel names a subclass accepts (its main kernel first).
    vocabulary: tuple[str, ...]
    #: Every branch conv attribute a subclass's ``forward_branches()`` reads.
    conv_names: tuple[str, ...]

    def __init__(self, channels: int, stride: int, srp_forward: SRPForward, deploy: bool,
                 kernels: Sequence[str]) -> None:
        super().__init__()
        if srp_forward not in SRP_FORWARD_MODES:
            raise ValueError(f'srp_forward must be one of {SRP_FORWARD_MODES}, got {srp_forward!r}')
        kernels = tuple(kernels)
        if not kernels or kernels[0] != self.vocabulary[0] or len(set(kernels)) != len(kernels) \
                or not set(kernels) <= set(self.vocabulary):
            raise ValueError(f'kernels={kernels!r}: expected distinct names of {self.vocabulary}, '
                             f'the main kernel {self.vocabulary[0]!r} first')
        self.channels = channels
        self.stride = stride
        self.srp_forward = srp_forward
        self.deploy = deploy
        self.kernels = kernels
        if deploy:
            k = self.fused_kernel_size
            self.reparam = _depthwise(channels, (k, k), stride=stride, bias=True)
            return
        for name in self.conv_names:  # absent branches read as None (TorchScript prunes them)
            setattr(self, name, None)
        for kernel in kernels:
            for name, conv in _branch_convs(kernel, channels, stride):
                setattr(self, name, conv)

    def forward_branches(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _branch_kernel(self, kernel: str) -> tuple[Tensor, Tensor | None]:
        """One branch's kernel, padded to the fused size, and its bias (``None``: none)."""
        size = (self.fused_kernel_size, ) * 2
        if '-' in kernel:
            row, column = (getattr(self, f'conv{strip}') for strip in kernel.split('-'))
            return pad_kernel(serial_strip_kernel(row.weight, column.weight), size), None
        conv = getattr(self, _conv_name(kernel))
        return pad_kernel(dilate_kernel(conv.weight, conv.dilation[0]), size), conv.bias

    def merged_kernel(self) -> tuple[Tensor, Tensor]:
        """The one kernel and bias that equal the sum of all branches (differentiable), summed
        in :attr:`vocabulary` order."""
        kernels = [kernel for kernel in self.vocabulary if kernel in self.kernels]
        weight, bias = self._branch_kernel(kernels[0])
        for kernel in kernels[1:]:
            branch_weight, branch_bias = self._branch_kernel(kernel)
            weight = weight + branch_weight
            if branch_bias is not None:
                bias = bias + branch_bias
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.reparam(x)
        # TorchScript compiles the branches (same outputs): the kernel algebra is plain Python.
        if torch.jit.is_scripting() or self.srp_forward == 'branches':
            return self.forward_branches(x)
        return _depthwise_conv(x, *self.merged_kernel(), stride=self.stride)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """Returns one depthwise conv equal to all branches (this module is left unchanged)."""
        if self.deploy:
            return self.reparam
        weight, bias = self.merged_kernel()
        k = self.fused_kernel_size
        return conv_with_weights(_depthwise(self.channels, (k, k), self.stride), weight, bias)

    def switch_to_deploy(self) -> None:
        if self.deploy:
            return
        reparam = self.fuse()
        for name in list(self._modules):
            delattr(self, name)
        for name in self.conv_names:
            self.__dict__.pop(name, None)
        self.reparam = reparam
        self.deploy = True

    def extra_repr(self) -> str:
        return f'kernels={self.kernels}, stride={self.stride}'


class RepDWConvS(_RepDWConv):
    """Small-kernel reparameterized depthwise conv, fused into one 3x3 kernel.

    Default branches (the released design, :data:`.repnext_designs.DESIGNS` ``'repnext'``):
    stride 1: parallel 3x3 + 1x3 + 3x1 + dilated 2x2, all with bias; stride 2: 3x3 (bias) +
    serial [1x3 -> 3x1] (no bias) + dilated 2x2 (bias). ``kernels`` picks another set of
    :data:`.repnext_designs.SMALL_KERNELS`.
    """
    fused_kernel_size = 3
    vocabulary = SMALL_KERNELS
    conv_names = ('conv3x3', 'conv1x3', 'conv3x1', 'conv2x2_dilated')

    def __init__(self, channels: int, stride: int = 1, srp_forward: SRPForward = 'merged',
                 deploy: bool = False, kernels: Sequence[str] | None = None) -> None:
        if kernels is None:
            default = DESIGNS['repnext']
            kernels = default.small_kernels if stride == 1 else default.small_kernels_stride2
        super().__init__(channels, stride, srp_forward, deploy, kernels)
        # Plain attribute, not a TorchScript constant: both forms of the strips compile.
        self.serial_strips = '1x3-3x1' in self.kernels

    def forward_branches(self, x: Tensor) -> Tensor:
        out = self.conv3x3(x)
        if self.conv2x2_dilated is not None:
            out = out + self.conv2x2_dilated(x)
        if self.serial_strips:
            if self.conv1x3 is not None and self.conv3x1 is not None:
                out = out + self.conv3x1(self.conv1x3(x))
        else:
            if self.conv1x3 is not None:
                out = out + self.conv1x3(x)
            if self.conv3x1 is not None:
                out = out + self.conv3x1(x)
        return out


class RepDWConvM(_RepDWConv):
    """Medium-kernel reparameterized depthwise conv, fused into one 7x7 kernel.

    Default branches (the released design): parallel 7x7 + 3x5 + 5x3 (with bias) + serial
    [1x7 -> 7x1] + serial [1x5 -> 5x1] (no bias), at stride 1 or 2. ``kernels`` picks another
    set of :data:`.repnext_designs.MEDIUM_KERNELS`.
    """
    fused_kernel_size = 7
    vocabulary = MEDIUM_KERNELS
    conv_names = ('conv7x7', 'conv5x5', 'conv3x3', 'conv3x5', 'conv5x3', 'conv1x7', 'conv7x1',
                  'conv1x5', 'conv5x1')

    def __init__(self, channels: int, stride: int = 1, srp_forward: SRPForward = 'merged',
                 deploy: bool = False, kernels: Sequence[str] | None = None) -> None:
        kernels = DESIGNS['repnext'].medium_kernels if kernels is None else kernels
        super().__init__(channels, stride, srp_forward, deploy, kernels)

    def forward_branches(self, x: Tensor) -> Tensor:
        out = self.conv7x7(x)
        if self.conv5x5 is not None:
            out = out + self.conv5x5(x)
        if self.conv3x3 is not None:
            out = out + self.conv3x3(x)
        if self.conv3x5 is not None:
            out = out + self.conv3x5(x)
        if self.conv5x3 is not None:
            out = out + self.conv5x3(x)
        if self.conv1x7 is not None and self.conv7x1 is not None:
            out = out + self.conv7x1(self.conv1x7(x))
        if self.conv1x5 is not None and self.conv5x1 is not None:
            out = out + self.conv5x1(self.conv1x5(x))
        return out


class LargeStripConv(nn.Module):
    """Depthwise 1xk then kx1, both with bias (k = 11).

    Kept as two convolutions in every form: the first conv's bias passes through the second
    conv's zero padding, so the pair is not one kxk kernel at the borders.
    """

    def __init__(self, channels: int, kernel_size: int = 11) -> None:
        super().__init__()
        self.conv1xk = _depthwise(channels, (1, kernel_size))
        self.convkx1 = _depthwise(channels, (kernel_size, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.convkx1(self.conv1xk(x))


class ChunkConv(nn.Module):
    """Token mixer of a block: four equal channel chunks (identity | small | medium | large).

    ``design`` (default: the released one) picks the small and medium branch sets and which of
    the three conv branches exist; a missing one (``None``) passes its chunk through unchanged.
    """

    def __init__(self, channels: int, srp_forward: SRPForward = 'merged', deploy: bool = False,
                 design: RepNeXtDesign | None = None) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f'ChunkConv needs channels divisible by 4, got {channels}')
        design = design or DESIGNS['repnext']
        chunk = channels // 4
        branches = design.chunk_branches
        self.small = (RepDWConvS(chunk, srp_forward=srp_forward, deploy=deploy,
                                 kernels=design.small_kernels) if 'small' in branches else None)
        self.medium = (RepDWConvM(chunk, srp_forward=srp_forward, deploy=deploy,
                                  kernels=design.medium_kernels) if 'medium' in branches else None)
        self.large = LargeStripConv(chunk) if 'large' in branches else None

    def forward(self, x: Tensor) -> Tensor:
        identity, small, medium, large = torch.chunk(x, 4, dim=1)
        if self.small is not None:
            small = self.small(small)
        if self.medium is not None:
            medium = self.medium(medium)
        if self.large is not None:
            large = self.large(large)
        return torch.cat((identity, small, medium, large), dim=1)

    def switch_to_deploy(self) -> None:
        for branch in (self.small, self.medium):
            if branch is not None:
                branch.switch_to_deploy()


class CopyConv(nn.Module):
    """Token mixer of a downsample layer: small and medium branches at stride 2 on the same input,
    concatenated (small first), doubling the channels. ``design`` (default: the released one)
    picks their branch sets."""

    def __init__(self, in_channels: int, srp_forward: SRPForward = 'merged', deploy: bool = False,
                 design: RepNeXtDesign | None = None) -> None:
        super().__init__()
        design = design or DESIGNS['repnext']
        self.small = RepDWConvS(in_channels, stride=2, srp_forward=srp_forward, deploy=deploy,
                                kernels=design.small_kernels_stride2)
        self.medium = RepDWConvM(in_channels, stride=2, srp_forward=srp_forward, deploy=deploy,
                                 kernels=design.medium_kernels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.small(x), self.medium(x)), dim=1)

    def switch_to_deploy(self) -> None:
        self.small.switch_to_deploy()
        self.medium.switch_to_deploy()

    @torch.no_grad()
    def fold_output_affine(self, scale: Tensor, shift: Tensor) -> None:
        """Folds ``y * scale + shift`` on this module's output (a following eval BatchNorm) into
        both fused kernels."""
        if not (self.small.deploy and self.medium.deploy):
            raise RuntimeError('call switch_to_deploy() before folding an affine into CopyConv')
        c = self.small.channels
        for conv, part in ((self.small.reparam, slice(0, c)), (self.medium.reparam, slice(c, 2 * c))):
            weight, bias = fuse_affine_after_conv(conv.weight, conv.bias, scale[part], shift[part])
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)


class SingleKernelConv(nn.Module):
    """Token mixer of the single-branch design: one depthwise ``kxk`` conv with bias and
    ``multiplier`` outputs per input channel (output ``multiplier * i + j`` reads channel ``i``).

    The block's chunk convolution becomes an 11x11 kernel over all channels, the downsample's
    copy convolution a 7x7 of stride 2 with two outputs per channel. Already a plain conv, it is
    the same in both forms; a following BatchNorm folds into it per output channel.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int = 1,
                 multiplier: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, multiplier * channels, kernel_size, stride=stride,
                              padding=kernel_size // 2, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def switch_to_deploy(self) -> None:
        """Nothing to merge."""

    @torch.no_grad()
    def fold_output_affine(self, scale: Tensor, shift: Tensor) -> None:
        """Folds ``y * scale + shift`` on this module's output into the kernel."""
        weight, bias = fuse_affine_after_conv(self.conv.weight, self.conv.bias, scale, shift)
        self.conv.weight.copy_(weight)
        self.conv.bias.copy_(bias)


class ChannelMixer(nn.Module):
    """1x1 conv + norm (expand), GELU, 1x1 conv + norm (project back)."""

    def __init__(self, channels: int, mlp_ratio: int, norm_cfg: dict | None, deploy: bool) -> None:
        super().__init__()
        hidden = channels * mlp_ratio
        self.fc1 = ConvNorm(channels, hidden, norm_cfg=norm_cfg, deploy=deploy)
        self.act = nn.GELU()
        self.fc2 = ConvNorm(hidden, channels, norm_cfg=norm_cfg, deploy=deploy)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def switch_to_deploy(self) -> None:
        self.fc1.switch_to_deploy()
        self.fc2.switch_to_deploy()

    @torch.no_grad()
    def fold_input_affine(self, scale: Tensor, shift: Tensor) -> None:
        """Folds ``x * scale + shift`` on this module's input (a preceding eval BatchNorm) into
        ``fc1``."""
        if not self.fc1.deploy:
            raise RuntimeError('call switch_to_deploy() before folding an affine into ChannelMixer')
        conv = self.fc1.conv
        weight, bias = fuse_affine_before_linear(conv.weight, conv.bias, scale, shift)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)


class RepNeXtBlock(nn.Module):
    """MetaNeXt block: ``y = x + DropPath(ChannelMixer(BN(ChunkConv(x))))``.

    ``design`` (default: the released one) shapes the chunk convolution; the single-branch
    design replaces it by one 11x11 depthwise conv (:class:`SingleKernelConv`).

    Deploy form: the BN is folded into the first 1x1 conv of the channel mixer (it covers the
    identity chunk too, so it cannot go into the depthwise kernels); the drop path (identity
    outside training) is removed.
    """
    __constants__ = ['deploy']

    def __init__(self, channels: int, mlp_ratio: int = 2, norm_cfg: dict | None = None,
                 srp_forward: SRPForward = 'merged', deploy: bool = False,
                 drop_path: float = 0.0, design: RepNeXtDesign | None = None) -> None:
        super().__init__()
        self.deploy = deploy
        design = design or DESIGNS['repnext']
        self.token_mixer = (SingleKernelConv(channels, SINGLE_BRANCH_KERNELS['chunk'])
                            if design.single_branch else
                            ChunkConv(channels, srp_forward=srp_forward, deploy=deploy,
                                      design=design))
        if not deploy:
            self.norm = build_norm_layer(norm_cfg or dict(type='BN'), channels)[1]
        self.channel_mixer = ChannelMixer(channels, mlp_ratio, norm_cfg, deploy)
        self.drop_path = _drop_path(drop_path, deploy)

    def forward(self, x: Tensor) -> Tensor:
        y = self.token_mixer(x)
        if not self.deploy:
            y = self.norm(y)
        return x + self.drop_path(self.channel_mixer(y))

    def switch_to_deploy(self) -> None:
        if self.deploy:
            return
        self.token_mixer.switch_to_deploy()
        self.channel_mixer.switch_to_deploy()
        self.channel_mixer.fold_input_affine(*bn_affine(self.norm))
        del self.norm
        self.drop_path = nn.Identity()
        self.deploy = True


class Downsample(nn.Module):
    """``z = BN(CopyConv(x)); y = z + DropPath(ChannelMixer(z))``: halves the resolution,
    doubles channels.

    ``design`` (default: the released one) shapes the copy convolution; the single-branch
    design replaces it by one 7x7 depthwise conv with two outputs per channel.

    Deploy form: the BN is folded per channel into the depthwise kernels of the copy conv (its
    output also feeds the residual, so it must be folded before the split); the drop path
    (identity outside training) is removed.
    """
    __constants__ = ['deploy']

    def __init__(self, in_channels: int, mlp_ratio: int = 2, norm_cfg: dict | None = None,
                 srp_forward: SRPForward = 'merged', deploy: bool = False,
                 drop_path: float = 0.0, design: RepNeXtDesign | None = None) -> None:
        super().__init__()
        self.deploy = deploy
        out_channels = 2 * in_channels
        design = design or DESIGNS['repnext']
        self.token_mixer = (SingleKernelConv(in_channels, SINGLE_BRANCH_KERNELS['copy'], stride=2,
                                             multiplier=2)
                            if design.single_branch else
                            CopyConv(in_channels, srp_forward=srp_forward, deploy=deploy,
                                     design=design))
        if not deploy:
            self.norm = build_norm_layer(norm_cfg or dict(type='BN'), out_channels)[1]
        self.channel_mixer = ChannelMixer(out_channels, mlp_ratio, norm_cfg, deploy)
        self.drop_path = _drop_path(drop_path, deploy)

    def forward(self, x: Tensor) -> Tensor:
        z = self.token_mixer(x)
        if not self.deploy:
            z = self.norm(z)
        return z + self.drop_path(self.channel_mixer(z))

    def switch_to_deploy(self) -> None:
        if self.deploy:
            return
        self.token_mixer.switch_to_deploy()
        self.token_mixer.fold_output_affine(*bn_affine(self.norm))
        self.channel_mixer.switch_to_deploy()
        del self.norm
        self.drop_path = nn.Identity()
        self.deploy = True


class RepNeXtStage(nn.Module):
    """An optional downsample followed by ``depth`` blocks.

    With ``with_cp`` every block and the downsample layer run under activation checkpointing
    (see :meth:`_run_layer`). ``drop_path_rates`` are the stochastic depth rates of the
    residual layers in order (the downsample layer's first, where there is one); empty: none.
    ``design`` (default: the released one) shapes the token mixers; its ``'conv3x3'``
    downsample is one 3x3 conv of stride 2 + norm (:class:`ConvNorm`), which has no residual
    branch, so its drop path rate goes unused.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int, mlp_ratio: int,
                 norm_cfg: dict | None, srp_forward: SRPForward, deploy: bool,
                 with_cp: bool = False, drop_path_rates: Sequence[float] = (),
                 design: RepNeXtDesign | None = None) -> None:
        super().__init__()
        self.with_cp = with_cp
        design = design or DESIGNS['repnext']
        kwargs = dict(mlp_ratio=mlp_ratio, norm_cfg=norm_cfg, srp_forward=srp_forward,
                      deploy=deploy, design=design)
        downsamples = out_channels != in_channels
        rates = list(drop_path_rates) or [0.0] * (depth + downsamples)
        if len(rates) != depth + downsamples:
            raise ValueError(f'drop_path_rates: expected one rate per residual layer '
                             f'({depth + downsamples}), got {len(rates)}')
        self.downsample: nn.Module = nn.Identity()
        if downsamples and design.downsample == 'conv3x3':
            rates.pop(0)
            self.downsample = ConvNorm(in_channels, out_channels, 3, stride=2, norm_cfg=norm_cfg,
                                       deploy=deploy)
        elif downsamples:
            self.downsample = Downsample(in_channels, drop_path=rates.pop(0), **kwargs)
        self.blocks = nn.Sequential(*(RepNeXtBlock(out_channels, drop_path=rate, **kwargs)
                                      for rate in rates))

    def _run_layer(self, layer: RepNeXtBlock | Downsample | ConvNorm, x: Tensor) -> Tensor:
        # Checkpointing pays only where autograd would save activations; the fused form is for
        # inference (and its few, small activations leave little to save), so it never does.
        if self.with_cp and not layer.deploy and records_graph(layer, x):
            return checkpointed(layer, x)
        return layer(x)

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # TorchScript passes no modules around: plain, unchecked
            return self.blocks(self.downsample(x))
        if not isinstance(self.downsample, nn.Identity):
            x = self._run_layer(self.downsample, x)
        for block in self.blocks:
            x = self._run_layer(block, x)
        return x


@MODELS.register_module()
class RepNeXt(BaseModule):
    """RepNeXt backbone for mmdet, mmseg and mmpretrain.

    Args:
        arch: One of ``'m0'`` .. ``'m5'`` or a dict with ``widths`` and ``depths`` (four stages each;
            widths divisible by 4 and doubling from stage to stage).
        in_channels: Input image channels.
        out_indices: Stages whose outputs are returned (strides 4, 8, 16, 32): a stage index or
            a sequence of distinct ones in ``0..3``; negative indices count from the last stage.
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``i >= 1`` the stem and the first
            ``i`` stages (as ResNet): parameters stop requiring grad and their norms stay in eval.
        norm_eval: Keep every BatchNorm in eval mode during training (statistics frozen).
        norm_cfg: Norm layer config for the training form, a dict whose ``type`` is a registered
            norm layer, e.g. ``dict(type='SyncBN')`` (default BatchNorm).
        mlp_ratio: Channel-mixer expansion ratio.
        srp_forward: ``'merged'`` (default) runs each SRP branch set as one convolution whose kernel
            is rebuilt from the branch weights on every forward; ``'branches'`` runs every branch
            (identical parameters, outputs and gradients; slower).
        deploy: Build the fused inference structure (no SRP branches, no BatchNorm).
        with_cp: Activation checkpointing: every block and downsample layer keeps only its
            input for backward and runs again in backward (``torch.utils.checkpoint``,
            non-reentrant). Less activation memory for more compute. Active only where autograd
            records the layer (gradients enabled and its input or a parameter requires grad):
            not under ``torch.no_grad()``, not in a frozen stage fed an input that needs no
            grad, never in the fused form. BatchNorm running statistics are updated once per
            step, as without it. In a config: ``--cfg-options model.backbone.with_cp=True``.
        drop_path_rate: Stochastic depth (mmcv's ``DropPath``) on the residual branch of every
            block and downsample layer, rising linearly over them from 0 to this rate
            (:meth:`drop_path_rates`); active in training only, removed by the fusion. 0 (the
            default) builds none.
        design: The token-mixer design, a preset name of
            :data:`~repnext_mm.models.backbones.repnext_designs.DESIGNS`: ``'repnext'`` (the
            released model, default), the paper's Table 5 ablations (``'no_srp'``: M1 without
            SRP, ``'conv3x3_downsample'``, ``'no_small_kernel'``, ``'no_medium_kernel'``,
            ``'no_large_kernel'``, ``'medium_5x5_3x3'``, ``'medium_5x3_3x5'``,
            ``'medium_strips'``, ``'small_serial'``) or ``'single_branch'`` (the authors'
            M0E-M2E: each token mixer one large depthwise kernel). Every design fuses like the
            default (``switch_to_deploy``, ``deploy=True``).
        init_cfg: MMEngine init config, e.g.
            ``dict(type='Pretrained', checkpoint='...', prefix='backbone.')``.

    Raises:
        ValueError: An argument outside what it accepts; the message starts with
            ``name=value:`` and says the accepted range (the config tools prefix the config path,
            :mod:`repnext_mm.apis.build_errors`).
    """
    arch_settings = {
        'm0': dict(widths=(40, 80, 160, 320), depths=(2, 2, 9, 1)),
        'm1': dict(widths=(48, 96, 192, 384), depths=(3, 3, 15, 2)),
        'm2': dict(widths=(56, 112, 224, 448), depths=(3, 3, 15, 2)),
        'm3': dict(widths=(64, 128, 256, 512), depths=(3, 3, 13, 2)),
        'm4': dict(widths=(64, 128, 256, 512), depths=(5, 5, 25, 4)),
        'm5': dict(widths=(80, 160, 320, 640), depths=(7, 7, 35, 2)),
    }
    num_stages = 4
    # Python-side switches (ours, MMEngine's), not part of a scripted model
    __jit_unused_properties__ = ['with_cp', 'is_init']

    def __init__(self,
                 arch: str | dict = 'm1',
                 in_channels: int = 3,
                 out_indices: Sequence[int] | int = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: dict | None = None,
                 mlp_ratio: int = 2,
                 srp_forward: SRPForward = 'merged',
                 deploy: bool = False,
                 with_cp: bool = False,
                 drop_path_rate: float = 0.0,
                 design: str = 'repnext',
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.design = get_design(design)
        self.design_name = design
        self.arch = self.parse_arch(arch)
        widths, depths = self.arch['widths'], self.arch['depths']
        self.widths = widths
        self.out_indices = self.parse_out_indices(out_indices)
        self._check_arguments(in_channels=in_channels, frozen_stages=frozen_stages,
                              norm_eval=norm_eval, norm_cfg=norm_cfg, mlp_ratio=mlp_ratio,
                              deploy=deploy, with_cp=with_cp, drop_path_rate=drop_path_rate)
        if srp_forward not in SRP_FORWARD_MODES:
            raise ValueError(f'srp_forward must be one of {SRP_FORWARD_MODES}, got {srp_forward!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.norm_cfg = copy.deepcopy(norm_cfg) if norm_cfg is not None else dict(type='BN')
        self.srp_forward = srp_forward
        self.deploy = deploy

        self.stem = nn.Sequential(
            ConvNorm(in_channels, widths[0] // 2, 3, stride=2, norm_cfg=self.norm_cfg, deploy=deploy),
            nn.GELU(),
            ConvNorm(widths[0] // 2, widths[0], 3, stride=2, norm_cfg=self.norm_cfg, deploy=deploy),
        )
        self.stages = nn.ModuleList()
        in_width = widths[0]
        for width, depth, rates in zip(widths, depths,
                                       self.drop_path_rates(drop_path_rate, depths)):
            self.stages.append(RepNeXtStage(in_width, width, depth, mlp_ratio, self.norm_cfg,
                                            srp_forward, deploy, with_cp, rates, self.design))
            in_width = width
        self._freeze_stages()

    @property
    def with_cp(self) -> bool:
        """Activation checkpointing of the blocks and downsample layers; settable at any time."""
        return all(stage.with_cp for stage in self.stages)

    @with_cp.setter
    def with_cp(self, enabled: bool) -> None:
        for stage in self.stages:
            stage.with_cp = enabled

    @classmethod
    def drop_path_rates(cls, drop_path_rate: float, depths: Sequence[int]) -> list[list[float]]:
        """Stochastic depth rates of each stage's residual layers (downsample layer first, then
        the blocks): rising linearly from 0 at the first block to ``drop_path_rate`` at the
        last, over all residual layers in order (timm's schedule, the downsample layers
        counted as the residual layers they are)."""
        counts = [depth + (i > 0) for i, depth in enumerate(depths)]  # stage 0 has no downsample
        last = sum(counts) - 1
        rates = [drop_path_rate * i / last for i in range(last + 1)]  # last >= 6: 4 stages
        starts = [sum(counts[:i]) for i in range(len(counts))]
        return [rates[start:start + count] for start, count in zip(starts, counts)]

    @classmethod
    def arch_name(cls, widths: Sequence[int], depths: Sequence[int]) -> str | None:
        """The :attr:`arch_settings` name (``'m0'`` ..) of these stage widths and depths.

        Returns:
            The name, or ``None`` when no standard arch has exactly these widths and depths.
        """
        wanted = (tuple(widths), tuple(depths))
        for name, setting in cls.arch_settings.items():
            if (tuple(setting['widths']), tuple(setting['depths'])) == wanted:
                return name
        return None

    @classmethod
    def parse_arch(cls, arch: str | dict) -> dict:
        """Validates ``arch`` and returns ``dict(widths=tuple, depths=tuple)``."""
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_settings:
                raise ValueError(f'unknown RepNeXt arch {arch!r}; choose one of '
                                 f'{sorted(cls.arch_settings)} or pass dict(widths=..., depths=...)')
            return {k: tuple(v) for k, v in cls.arch_settings[key].items()}
        if not isinstance(arch, dict):
            raise ValueError(f'arch must be a name in {sorted(cls.arch_settings)} or a dict with '
                             f"'widths' and 'depths', got {type(arch).__name__}")
        missing = {'widths', 'depths'} - set(arch)
        extra = set(arch) - {'widths', 'depths'}
        if missing or extra:
            raise ValueError(f"a custom arch dict needs exactly the keys 'widths' and 'depths'; "
                             f'missing {sorted(missing)}, unexpected {sorted(extra)}')
        widths, depths = tuple(arch['widths']), tuple(arch['depths'])
        n = cls.num_stages
        if len(widths) != n or len(depths) != n:
            raise ValueError(f'RepNeXt has {n} stages: widths and depths need {n} entries each, '
                             f'got {len(widths)} widths and {len(depths)} depths')
        if any(not isinstance(w, int) or w <= 0 or w % 4 for w in widths):
            raise ValueError(f'every width must be a positive multiple of 4 (chunk convolution '
                             f'splits channels into 4 chunks), got widths={widths}')
        if any(b != 2 * a for a, b in zip(widths, widths[1:])):
            raise ValueError(f'widths must double from stage to stage (the downsample layer doubles '
                             f'channels), got widths={widths}; e.g. (48, 96, 192, 384)')
        if any(not isinstance(d, int) or d < 1 for d in depths):
            raise ValueError(f'every depth must be a positive int, got depths={depths}')
        return dict(widths=widths, depths=depths)

    @classmethod
    def parse_out_indices(cls, out_indices: Sequence[int] | int) -> tuple[int, ...]:
        """Validates ``out_indices`` and returns them as sorted non-negative stage indices.

        Raises:
            ValueError: Not a stage index or a sequence of distinct ones, e.g.
                "out_indices=(0, 1, 2, 7): stage 7 does not exist; RepNeXt has stages 0..3 ...".
        """
        n = cls.num_stages
        given = f'out_indices={out_indices!r}'
        stages = f'RepNeXt has stages 0..{n - 1} (-{n}..-1 count from the last)'
        indices = (out_indices, ) if _is_int(out_indices) else out_indices
        if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence) or not indices:
            raise ValueError(f'{given}: expected a stage index or a sequence of distinct ones; '
                             f'{stages}')
        parsed = []
        for index in indices:
            if not _is_int(index):
                raise ValueError(f'{given}: {index!r} is not a stage index; {stages}')
            if not -n <= index < n:
                raise ValueError(f'{given}: stage {index} does not exist; {stages}')
            if index % n in parsed:
                raise ValueError(f'{given}: stage {index % n} is named twice')
            parsed.append(index % n)
        return tuple(sorted(parsed))

    @classmethod
    def _check_arguments(cls, **arguments: object) -> None:
        """Validates the scalar arguments; each message names the argument and what it accepts."""
        n = cls.num_stages
        for name in ('in_channels', 'mlp_ratio'):
            value = arguments[name]
            if not _is_int(value) or value < 1:
                raise ValueError(f'{name}={value!r}: expected a positive int')
        frozen_stages = arguments['frozen_stages']
        if not _is_int(frozen_stages) or not -1 <= frozen_stages <= n:
            raise ValueError(f'frozen_stages={frozen_stages!r}: expected an int in -1..{n} (-1: '
                             f'nothing, 0: the stem, i: the stem and the first i stages)')
        for name in ('norm_eval', 'deploy', 'with_cp'):
            if not isinstance(arguments[name], bool):
                raise ValueError(f'{name}={arguments[name]!r}: expected True or False')
        drop_path_rate = arguments['drop_path_rate']
        if (not isinstance(drop_path_rate, (int, float)) or isinstance(drop_path_rate, bool)
                or not 0 <= drop_path_rate < 1):
            raise ValueError(f'drop_path_rate={drop_path_rate!r}: expected a number in [0, 1) '
                             '(0: no stochastic depth; e.g. 0.1)')
        _check_norm_cfg(arguments['norm_cfg'])

    @torch.jit.unused  # a tuple of any length: scripted models run stem and stages themselves
    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        # The last stage has total stride 32: a smaller input leaves it without one real pixel.
        min_size = 32
        height, width = x.shape[-2:]
        # Skipped while tracing (a TracerWarning otherwise): exporters run the model eagerly first.
        if not torch.jit.is_tracing() and (height < min_size or width < min_size):
            raise ValueError(
                f'RepNeXt needs inputs of at least {min_size}x{min_size} pixels (its last stage '
                f'has stride {min_size}), got {height}x{width}; resize the images up or pad them '
                '(e.g. pad_size_divisor=32 in the data preprocessor)')
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.stem, *self.stages[:self.frozen_stages]]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'RepNeXt':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def switch_to_deploy(self) -> None:
        """Fuses the whole backbone in place: idempotent; afterwards it holds no BatchNorm."""
        if self.deploy:
            return
        for module in self.stem:
            if isinstance(module, ConvNorm):
                module.switch_to_deploy()
        for stage in self.stages:
            if not isinstance(stage.downsample, nn.Identity):
                stage.downsample.switch_to_deploy()
            for block in stage.blocks:
                block.switch_to_deploy()
        self.deploy = True

    def init_weights(self) -> None:
        """Loads ``init_cfg`` Pretrained weights strictly enough to catch a wrong prefix.

        MMEngine's own Pretrained init loads with ``strict=False`` and only logs mismatches, so a
        checkpoint whose keys match nothing would leave a silently random backbone; here that is
        an error naming the expected prefix.
        """
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            from repnext_mm.models.utils.checkpoint import load_pretrained
            load_pretrained(self, cfg['checkpoint'], prefix=cfg.get('prefix'),
                            map_location=cfg.get('map_location', 'cpu'), logger=MMLogger.get_current_instance())
            self._is_init = True
            return
        super().init_weights()
