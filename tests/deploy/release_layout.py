"""The authors' other releases, built in their published layouts for the converter tests.

Written from the reference facts and the libraries' own sources, not from the converter:

- Mask R-CNN as mmdet 2.28.2 names it (``necks/fpn.py``, ``dense_heads/rpn_head.py``,
  ``roi_heads/bbox_heads/convfc_bbox_head.py``, ``roi_heads/mask_heads/fcn_mask_head.py``)
  and Semantic FPN as mmseg 0.30.0 does (``necks/fpn.py``, ``decode_heads/fpn_head.py``), in
  mmcv 1.x checkpoints ``{'meta', 'state_dict', 'optimizer'}``;
- timm's checkpoint format (``CheckpointSaver``: ``epoch``, ``arch``, ``state_dict``,
  ``optimizer``, ``version``, ``args``, ``amp_scaler``, ``metric``, ``state_dict_ema``);
- the authors' fused classifier (their ``fuse()`` + ``replace_batchnorm``), as a module to
  save with TorchScript: the fusion algebra below is this file's own.
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .author_layout import ARCHS, BN_EPS, author_shapes, author_state_dict, random_weights

FPN_CHANNELS = 256


def _conv(shapes: dict, prefix: str, cout: int, cin: int, k: int, bias: bool = True) -> None:
    shapes[f'{prefix}.weight'] = (cout, cin, k, k)
    if bias:
        shapes[f'{prefix}.bias'] = (cout,)


def _fpn(shapes: dict, widths) -> None:
    """mmdet / mmseg ``FPN``: ConvModule lists without norm (so with bias)."""
    for i, width in enumerate(widths):
        _conv(shapes, f'neck.lateral_convs.{i}.conv', FPN_CHANNELS, width, 1)
    for i in range(len(widths)):
        _conv(shapes, f'neck.fpn_convs.{i}.conv', FPN_CHANNELS, FPN_CHANNELS, 3)


def _backbone(arch: str) -> dict[str, tuple[int, ...]]:
    return {f'backbone.{k}': v for k, v in author_shapes(arch).items() if not k.startswith('head.')}


def mmdet228_mask_rcnn_shapes(arch: str, num_classes: int = 80) -> dict[str, tuple[int, ...]]:
    """Every key of the authors' Mask R-CNN ``state_dict`` with its shape."""
    shapes = _backbone(arch)
    _fpn(shapes, ARCHS[arch][0])
    c = FPN_CHANNELS
    _conv(shapes, 'rpn_head.rpn_conv', c, c, 3)  # num_convs=1: a plain nn.Conv2d
    _conv(shapes, 'rpn_head.rpn_cls', 3, c, 1)  # 3 anchors x 1 (sigmoid)
    _conv(shapes, 'rpn_head.rpn_reg', 3 * 4, c, 1)
    bbox = 'roi_head.bbox_head'
    shapes.update({f'{bbox}.fc_cls.weight': (num_classes + 1, 1024),
                   f'{bbox}.fc_cls.bias': (num_classes + 1,),
                   f'{bbox}.fc_reg.weight': (4 * num_classes, 1024),
                   f'{bbox}.fc_reg.bias': (4 * num_classes,),
                   f'{bbox}.shared_fcs.0.weight': (1024, c * 7 * 7),
                   f'{bbox}.shared_fcs.0.bias': (1024,),
                   f'{bbox}.shared_fcs.1.weight': (1024, 1024),
                   f'{bbox}.shared_fcs.1.bias': (1024,)})
    for i in range(4):
        _conv(shapes, f'roi_head.mask_head.convs.{i}.conv', c, c, 3)
    shapes['roi_head.mask_head.upsample.weight'] = (c, c, 2, 2)  # ConvTranspose2d: (in, out, ..)
    shapes['roi_head.mask_head.upsample.bias'] = (c,)
    _conv(shapes, 'roi_head.mask_head.conv_logits', num_classes, c, 1)
    return shapes


def mmseg030_semantic_fpn_shapes(arch: str, num_classes: int = 150, channels: int = 128
                                 ) -> dict[str, tuple[int, ...]]:
    """Every key of the authors' Semantic FPN ``state_dict`` with its shape."""
    shapes = _backbone(arch)
    _fpn(shapes, ARCHS[arch][0])
    _conv(shapes, 'decode_head.conv_seg', num_classes, channels, 1)
    for i, stride in enumerate((4, 8, 16, 32)):
        # FPNHead: max(1, log2(stride / 4)) ConvModules (conv without bias + bn), an Upsample
        # after each one for the strides below 4, so the ConvModules sit at even indices.
        for k in range(max(1, int(math.log2(stride) - 2))):
            prefix = f'decode_head.scale_heads.{i}.{2 * k}'
            _conv(shapes, f'{prefix}.conv', channels, FPN_CHANNELS if k == 0 else channels, 3,
                  bias=False)
            for name in ('weight', 'bias', 'running_mean', 'running_var'):
                shapes[f'{prefix}.bn.{name}'] = (channels,)
            shapes[f'{prefix}.bn.num_batches_tracked'] = ()
    return shapes


def mmcv1_checkpoint(state_dict: dict[str, Tensor], **meta) -> dict:
    """An mmcv 1.x ``save_checkpoint`` file: meta, state_dict, optimizer."""
    return dict(meta=dict(mmcv_version='1.7.1', config='model = dict(...)  # config text',
                          epoch=12, iter=87960, hook_msgs=dict(last_ckpt='epoch_12.pth'),
                          env_info='sys.platform: linux', **meta),
                state_dict=state_dict,
                optimizer=dict(state={}, param_groups=[dict(lr=2e-6, weight_decay=0.05)]))


def detector_checkpoint(arch: str, num_classes: int = 80, seed: int = 0) -> dict:
    classes = tuple(f'class_{i}' for i in range(num_classes))
    return mmcv1_checkpoint(random_weights(mmdet228_mask_rcnn_shapes(arch, num_classes), seed),
                            CLASSES=classes)


def segmentor_checkpoint(arch: str, num_classes: int = 150, seed: int = 0) -> dict:
    classes = tuple(f'class_{i}' for i in range(num_classes))
    palette = [[i, 2 * i % 256, 3 * i % 256] for i in range(num_classes)]
    return mmcv1_checkpoint(
        random_weights(mmseg030_semantic_fpn_shapes(arch, num_classes), seed),
        CLASSES=classes, PALETTE=palette)


def timm_checkpoint(arch: str, num_classes: int = 1000, seed: int = 0, ema: bool = False) -> dict:
    """A timm ``CheckpointSaver`` file of the authors' StarNet-recipe run."""
    weights = author_state_dict(arch, num_classes, seed)
    checkpoint = dict(
        epoch=299, arch=f'repnext_{arch}', state_dict=weights,
        optimizer=dict(state={}, param_groups=[dict(lr=1e-5)]), version=2,
        args=argparse.Namespace(model=f'repnext_{arch}', model_ema=ema, amp=True,
                                distillation_type='hard', input_size=(3, 224, 224)),
        amp_scaler=dict(scale=65536.0, growth_factor=2.0, backoff_factor=0.5,
                        growth_interval=2000, _growth_tracker=0),
        metric=75.4)
    if ema:
        checkpoint['state_dict_ema'] = {k: v + 0.01 if v.is_floating_point() else v
                                        for k, v in weights.items()}
    return checkpoint


# ---------------------------------------------------------------------------------------------
# The authors' fused classifier, to be saved with TorchScript.
# ---------------------------------------------------------------------------------------------

def _bn_scale_shift(sd: dict, prefix: str) -> tuple[Tensor, Tensor]:
    scale = sd[f'{prefix}.weight'] / torch.sqrt(sd[f'{prefix}.running_var'] + BN_EPS)
    return scale, sd[f'{prefix}.bias'] - sd[f'{prefix}.running_mean'] * scale


def _conv_norm(sd: dict, prefix: str) -> tuple[Tensor, Tensor]:
    scale, shift = _bn_scale_shift(sd, f'{prefix}.norm')
    return sd[f'{prefix}.conv.weight'] * scale[:, None, None, None], shift


def _centre(kernel: Tensor, size: int) -> Tensor:
    dh, dw = size - kernel.shape[-2], size - kernel.shape[-1]
    return F.pad(kernel, [dw // 2, dw // 2, dh // 2, dh // 2])


def _small(sd: dict, prefix: str, stride: int) -> tuple[Tensor, Tensor]:
    corners = sd[f'{prefix}.conv_2_2.weight'].new_zeros(*sd[f'{prefix}.conv_2_2.weight'].shape[:2],
                                                        3, 3)
    corners[..., ::2, ::2] = sd[f'{prefix}.conv_2_2.weight']
    weight = sd[f'{prefix}.conv_3_3.weight'] + corners
    bias = sd[f'{prefix}.conv_3_3.bias'] + sd[f'{prefix}.conv_2_2.bias']
    row, column = sd[f'{prefix}.conv_3_w.weight'], sd[f'{prefix}.conv_3_h.weight']
    if stride == 1:
        weight = weight + _centre(row, 3) + _centre(column, 3)
        bias = bias + sd[f'{prefix}.conv_3_w.bias'] + sd[f'{prefix}.conv_3_h.bias']
    else:
        weight = weight + column * row  # serial 1x3 -> 3x1: the outer product
    return weight, bias


def _medium(sd: dict, prefix: str) -> tuple[Tensor, Tensor]:
    weight = (sd[f'{prefix}.conv_7_7.weight'] + _centre(sd[f'{prefix}.conv_5_3.weight'], 7)
              + _centre(sd[f'{prefix}.conv_3_5.weight'], 7)
              + sd[f'{prefix}.conv_7_h.weight'] * sd[f'{prefix}.conv_7_w.weight']
              + _centre(sd[f'{prefix}.conv_5_h.weight'] * sd[f'{prefix}.conv_5_w.weight'], 7))
    bias = sum(sd[f'{prefix}.conv_{k}.bias'] for k in ('7_7', '5_3', '3_5'))
    return weight, bias


def author_fused_state_dict(sd: dict[str, Tensor], arch: str) -> dict[str, Tensor]:
    """The authors' fused weights (their names) of training-form weights ``sd``: every conv+BN
    and SRP branch set merged, the norm after each chunk / copy conv kept, the heads averaged."""
    widths, depths = ARCHS[arch]
    fused: dict[str, Tensor] = {}

    def put(prefix: str, weight_bias: tuple[Tensor, Tensor]) -> None:
        fused[f'{prefix}.weight'], fused[f'{prefix}.bias'] = weight_bias

    for index in (0, 2):
        put(f'stem.stem.{index}', _conv_norm(sd, f'stem.stem.{index}'))
    for i, depth in enumerate(depths):
        layers = ([f'stages.{i}.downsample'] if i else []) + \
            [f'stages.{i}.blocks.{j}' for j in range(depth)]
        for layer in layers:
            stride = 2 if layer.endswith('downsample') else 1
            put(f'{layer}.token_mixer.conv_s', _small(sd, f'{layer}.token_mixer.conv_s', stride))
            put(f'{layer}.token_mixer.conv_m', _medium(sd, f'{layer}.token_mixer.conv_m'))
            for k in ('0', '1') if stride == 1 else ():
                put(f'{layer}.token_mixer.conv_l.{k}',
                    (sd[f'{layer}.token_mixer.conv_l.{k}.weight'],
                     sd[f'{layer}.token_mixer.conv_l.{k}.bias']))
            for name in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'):
                fused[f'{layer}.norm.{name}'] = sd[f'{layer}.norm.{name}']
            for k in ('0', '2'):
                put(f'{layer}.channel_mixer.{k}', _conv_norm(sd, f'{layer}.channel_mixer.{k}'))
    heads = []
    for head in ('head', 'head_dist'):
        scale, shift = _bn_scale_shift(sd, f'head.{head}.norm')
        weight, bias = sd[f'head.{head}.linear.weight'], sd[f'head.{head}.linear.bias']
        heads.append((weight * scale, weight @ shift + bias))
    put('head', ((heads[0][0] + heads[1][0]) / 2, (heads[0][1] + heads[1][1]) / 2))
    return fused


def _dw(channels: int, k: tuple[int, int], stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, k, stride=stride, padding=(k[0] // 2, k[1] // 2),
                     groups=channels)


class _ChunkConv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels // 4
        self.conv_s, self.conv_m = _dw(c, (3, 3)), _dw(c, (7, 7))
        self.conv_l = nn.Sequential(_dw(c, (1, 11)), _dw(c, (11, 1)))

    def forward(self, x: Tensor) -> Tensor:
        i, s, m, l = torch.chunk(x, 4, dim=1)
        return torch.cat((i, self.conv_s(s), self.conv_m(m), self.conv_l(l)), dim=1)


class _CopyConv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_s, self.conv_m = _dw(channels, (3, 3), 2), _dw(channels, (7, 7), 2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.conv_s(x), self.conv_m(x)), dim=1)


class _Layer(nn.Module):
    """A MetaNeXt block, or with ``downsample`` a Downsample layer, in the authors' fused form."""

    def __init__(self, channels: int, downsample: bool) -> None:
        super().__init__()
        out = 2 * channels if downsample else channels
        self.downsample = downsample
        self.token_mixer = _CopyConv(channels) if downsample else _ChunkConv(channels)
        self.norm = nn.BatchNorm2d(out)
        self.channel_mixer = nn.Sequential(nn.Conv2d(out, 2 * out, 1), nn.GELU(),
                                           nn.Conv2d(2 * out, out, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample:
            x = self.norm(self.token_mixer(x))
            return x + self.channel_mixer(x)
        return x + self.channel_mixer(self.norm(self.token_mixer(x)))


class _Stage(nn.Module):
    def __init__(self, in_width: int, width: int, depth: int) -> None:
        super().__init__()
        self.downsample = _Layer(in_width, True) if width != in_width else nn.Identity()
        self.blocks = nn.Sequential(*(_Layer(width, False) for _ in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class _Stem(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width // 2, 3, 2, 1), nn.GELU(),
                                  nn.Conv2d(width // 2, width, 3, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.stem(x)


class AuthorFusedRepNext(nn.Module):
    """The module tree (and state-dict names) of the authors' model after ``fuse()``."""

    def __init__(self, arch: str, num_classes: int) -> None:
        super().__init__()
        widths, depths = ARCHS[arch]
        self.stem = _Stem(widths[0])
        self.stages = nn.Sequential(*(_Stage(widths[max(i - 1, 0)], w, d)
                                      for i, (w, d) in enumerate(zip(widths, depths))))
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))

    @classmethod
    def from_training(cls, sd: dict[str, Tensor], arch: str) -> 'AuthorFusedRepNext':
        model = cls(arch, sd['head.head.linear.weight'].shape[0])
        model.load_state_dict(author_fused_state_dict(sd, arch))
        return model.eval()
