"""The authors' checkpoint layout and forward pass, written from reference-facts.md only.

Independent of ``repnext_mm``'s modules and of the converter's rename table: key names, shapes
and the forward below come straight from the documented author structure, so a converter test
that compares our model (loaded with converted weights) against :func:`author_forward` catches a
swapped branch (e.g. 5x3 vs 3x5), a wrong chunk order or a misplaced norm.
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import Tensor

ARCHS = {
    'm0': ((40, 80, 160, 320), (2, 2, 9, 1)),
    'm1': ((48, 96, 192, 384), (3, 3, 15, 2)),
    'm2': ((56, 112, 224, 448), (3, 3, 15, 2)),
    'm3': ((64, 128, 256, 512), (3, 3, 13, 2)),
    'm4': ((64, 128, 256, 512), (5, 5, 25, 4)),
    'm5': ((80, 160, 320, 640), (7, 7, 35, 2)),
}
BN_EPS = 1e-5

# (name, kernel (kh, kw), has bias) of the SRP branches, as named by the authors.
SMALL_STRIDE1 = (('conv_3_3', (3, 3), True), ('conv_3_w', (1, 3), True),
                 ('conv_3_h', (3, 1), True), ('conv_2_2', (2, 2), True))
SMALL_STRIDE2 = (('conv_3_3', (3, 3), True), ('conv_3_w', (1, 3), False),
                 ('conv_3_h', (3, 1), False), ('conv_2_2', (2, 2), True))
MEDIUM = (('conv_7_7', (7, 7), True), ('conv_5_3', (5, 3), True), ('conv_3_5', (3, 5), True),
          ('conv_7_w', (1, 7), False), ('conv_7_h', (7, 1), False),
          ('conv_5_w', (1, 5), False), ('conv_5_h', (5, 1), False))
LARGE = (('0', (1, 11), True), ('1', (11, 1), True))


def author_shapes(arch: str, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Every key of the authors' ``model`` state dict with its shape, in module order."""
    widths, depths = ARCHS[arch]
    shapes: dict[str, tuple[int, ...]] = {}

    def norm(prefix: str, channels: int) -> None:
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            shapes[f'{prefix}.{name}'] = (channels,)
        shapes[f'{prefix}.num_batches_tracked'] = ()

    def conv_norm(prefix: str, cin: int, cout: int, k: int) -> None:
        shapes[f'{prefix}.conv.weight'] = (cout, cin, k, k)
        norm(f'{prefix}.norm', cout)

    def depthwise(prefix: str, channels: int, branches) -> None:
        for name, (kh, kw), bias in branches:
            shapes[f'{prefix}.{name}.weight'] = (channels, 1, kh, kw)
            if bias:
                shapes[f'{prefix}.{name}.bias'] = (channels,)

    def mlp(prefix: str, channels: int) -> None:
        conv_norm(f'{prefix}.channel_mixer.0', channels, 2 * channels, 1)
        conv_norm(f'{prefix}.channel_mixer.2', 2 * channels, channels, 1)

    conv_norm('stem.stem.0', 3, widths[0] // 2, 3)
    conv_norm('stem.stem.2', widths[0] // 2, widths[0], 3)
    for i, (width, depth) in enumerate(zip(widths, depths)):
        if i > 0:
            prefix, cin = f'stages.{i}.downsample', widths[i - 1]
            depthwise(f'{prefix}.token_mixer.conv_s', cin, SMALL_STRIDE2)
            depthwise(f'{prefix}.token_mixer.conv_m', cin, MEDIUM)
            norm(f'{prefix}.norm', width)
            mlp(prefix, width)
        for j in range(depth):
            prefix, chunk = f'stages.{i}.blocks.{j}', width // 4
            depthwise(f'{prefix}.token_mixer.conv_s', chunk, SMALL_STRIDE1)
            depthwise(f'{prefix}.token_mixer.conv_m', chunk, MEDIUM)
            depthwise(f'{prefix}.token_mixer.conv_l', chunk, LARGE)
            norm(f'{prefix}.norm', width)
            mlp(prefix, width)
    for head in ('head', 'head_dist'):
        norm(f'head.{head}.norm', widths[-1])
        shapes[f'head.{head}.linear.weight'] = (num_classes, widths[-1])
        shapes[f'head.{head}.linear.bias'] = (num_classes,)
    return shapes


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    """Random tensors of ``shapes`` with non-trivial norm statistics.

    Conv/linear weights are scaled by 1/sqrt(fan-in) so activations stay O(1) through the depth.
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith('num_batches_tracked'):
            state[key] = torch.tensor(1000)
        elif key.endswith('running_var'):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith('running_mean') or key.endswith('bias'):
            state[key] = (torch.rand(shape, generator=gen) - 0.5) * 0.2
        elif len(shape) == 1:  # norm weight
            state[key] = torch.rand(shape, generator=gen) * 0.5 + 0.5
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    return state


def author_state_dict(arch: str, num_classes: int = 1000, seed: int = 0) -> dict[str, Tensor]:
    """Random weights in the authors' layout with non-trivial norm statistics."""
    return random_weights(author_shapes(arch, num_classes), seed)


def author_checkpoint(arch: str, num_classes: int = 1000, seed: int = 0) -> dict:
    """A full release-style checkpoint dict (weights under ``model``, Namespace under ``args``)."""
    weights = author_state_dict(arch, num_classes, seed)
    return dict(
        model=weights,
        optimizer=dict(state={}, param_groups=[dict(lr=1e-3, params=[0, 1])]),
        lr_scheduler=dict(decay_t=300, t_initial=300),
        epoch=299,
        model_ema={k: v.clone() for k, v in weights.items()},
        scaler=dict(scale=65536.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                    _growth_tracker=0),
        args=argparse.Namespace(model=f'repnext_{arch}', batch_size=256, lr=1e-3,
                                distillation_type='hard', teacher_model='regnety_160',
                                input_size=224, data_path='/data/imagenet'),
    )


# ---------------------------------------------------------------------------------------------
# Reference forward (eval mode) on an author-layout state dict.
# ---------------------------------------------------------------------------------------------

def _bn(x: Tensor, sd: dict, prefix: str) -> Tensor:
    return F.batch_norm(x, sd[f'{prefix}.running_mean'], sd[f'{prefix}.running_var'],
                        sd[f'{prefix}.weight'], sd[f'{prefix}.bias'], training=False, eps=BN_EPS)


def _dw(x: Tensor, sd: dict, key: str, stride=(1, 1), dilation: int = 1) -> Tensor:
    weight = sd[f'{key}.weight']
    kh, kw = weight.shape[-2:]
    padding = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
    return F.conv2d(x, weight, sd.get(f'{key}.bias'), stride=stride, padding=padding,
                    dilation=dilation, groups=x.shape[1])


def _small(x: Tensor, sd: dict, prefix: str, stride: int) -> Tensor:
    s = (stride, stride)
    out = _dw(x, sd, f'{prefix}.conv_3_3', s) + _dw(x, sd, f'{prefix}.conv_2_2', s, dilation=2)
    if stride == 1:
        return out + _dw(x, sd, f'{prefix}.conv_3_w') + _dw(x, sd, f'{prefix}.conv_3_h')
    row = _dw(x, sd, f'{prefix}.conv_3_w', (1, stride))
    return out + _dw(row, sd, f'{prefix}.conv_3_h', (stride, 1))


def _medium(x: Tensor, sd: dict, prefix: str, stride: int) -> Tensor:
    s = (stride, stride)
    out = (_dw(x, sd, f'{prefix}.conv_7_7', s) + _dw(x, sd, f'{prefix}.conv_5_3', s) +
           _dw(x, sd, f'{prefix}.conv_3_5', s))
    for k in (7, 5):
        row = _dw(x, sd, f'{prefix}.conv_{k}_w', (1, stride))
        out = out + _dw(row, sd, f'{prefix}.conv_{k}_h', (stride, 1))
    return out


def _mlp(x: Tensor, sd: dict, prefix: str) -> Tensor:
    hidden = _bn(F.conv2d(x, sd[f'{prefix}.channel_mixer.0.conv.weight']), sd,
                 f'{prefix}.channel_mixer.0.norm')
    out = F.conv2d(F.gelu(hidden), sd[f'{prefix}.channel_mixer.2.conv.weight'])
    return _bn(out, sd, f'{prefix}.channel_mixer.2.norm')


@torch.no_grad()
def author_forward(state_dict: dict[str, Tensor], x: Tensor, arch: str,
                   with_head: bool = True) -> Tensor | list[Tensor]:
    """Eval-mode output of the authors' classifier (mean of both heads), or the four stage
    outputs if ``with_head`` is False."""
    sd = state_dict
    widths, depths = ARCHS[arch]
    for index in (0, 2):
        x = F.conv2d(x, sd[f'stem.stem.{index}.conv.weight'], stride=2, padding=1)
        x = _bn(x, sd, f'stem.stem.{index}.norm')
        if index == 0:
            x = F.gelu(x)
    stages = []
    for i, depth in enumerate(depths):
        if i > 0:
            prefix = f'stages.{i}.downsample'
            z = torch.cat((_small(x, sd, f'{prefix}.token_mixer.conv_s', 2),
                           _medium(x, sd, f'{prefix}.token_mixer.conv_m', 2)), dim=1)
            z = _bn(z, sd, f'{prefix}.norm')
            x = z + _mlp(z, sd, prefix)
        for j in range(depth):
            prefix = f'stages.{i}.blocks.{j}'
            identity, small, medium, large = torch.chunk(x, 4, dim=1)
            large = _dw(_dw(large, sd, f'{prefix}.token_mixer.conv_l.0'), sd,
                        f'{prefix}.token_mixer.conv_l.1')
            y = torch.cat((identity, _small(small, sd, f'{prefix}.token_mixer.conv_s', 1),
                           _medium(medium, sd, f'{prefix}.token_mixer.conv_m', 1), large), dim=1)
            x = x + _mlp(_bn(y, sd, f'{prefix}.norm'), sd, prefix)
        stages.append(x)
    if not with_head:
        return stages
    pooled = x.mean(dim=(2, 3))
    logits = []
    for head in ('head', 'head_dist'):
        normed = F.batch_norm(pooled, sd[f'head.{head}.norm.running_mean'],
                              sd[f'head.{head}.norm.running_var'], sd[f'head.{head}.norm.weight'],
                              sd[f'head.{head}.norm.bias'], training=False, eps=BN_EPS)
        logits.append(F.linear(normed, sd[f'head.{head}.linear.weight'], sd[f'head.{head}.linear.bias']))
    return (logits[0] + logits[1]) / 2
