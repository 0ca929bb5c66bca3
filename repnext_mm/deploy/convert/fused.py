"""The authors' fused classifiers ``repnext_m{0..5}_distill_300e_fused.pt`` (TorchScript).

Their ``fuse()`` (``model/repnext.py`` with ``utils.replace_batchnorm``) replaces each
ConvNorm by one biased conv under the ConvNorm's name, each SRP branch set by its merged
``conv_3_3`` / ``conv_7_7`` (named ``conv_s`` / ``conv_m``) and both heads by one Linear
``head``; the BatchNorm after each chunk / copy convolution (``norm``) stays. This package's
fused model holds no BatchNorm, so those are folded, exactly:

- ``stem.stem.{0,2}.{weight,bias}`` -> ``backbone.stem.{0,2}.conv.*``
- ``{layer}.token_mixer.conv_s.*`` / ``.conv_m.*`` -> ``{layer}.token_mixer.small.reparam.*`` /
  ``.medium.reparam.*``
- ``{layer}.token_mixer.conv_l.{0,1}.*`` -> ``{layer}.token_mixer.large.conv1xk.*`` / ``.convkx1.*``
- ``{layer}.channel_mixer.{0,2}.*`` -> ``{layer}.channel_mixer.fc{1,2}.conv.*``
- ``stages.i.blocks.j.norm.*``: folded into that block's ``channel_mixer.fc1`` (a 1x1 conv
  without padding: exact)
- ``stages.i.downsample.norm.*``: folded per channel into the two copy-conv kernels (its output
  also feeds the residual)
- ``head.{weight,bias}`` -> ``head.fc.*``

(``{layer}``: ``stages.i.downsample`` or ``stages.i.blocks.j``; ours carry ``backbone.``, and are
those of ``RepNeXt(deploy=True)`` and ``RepNeXtClsHead(deploy=True)``.)

The file is read by ``torch.jit.load``: TorchScript's own loader, which unpickles no Python
objects; the program in the file is never run here. A scripted file keeps each BatchNorm's
``eps``; a traced one does not, and then the authors' ``nn.BatchNorm2d`` default 1e-5 applies.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from repnext_mm.apis.checkpoint import is_torchscript  # noqa: F401  (read here by the converter)
from repnext_mm.models.backbones.repnext import Downsample, RepNeXt
from repnext_mm.models.layers.reparam import bn_affine
from repnext_mm.utils.errors import InputError
from .classifier import author_tensors
from .common import ConversionResult, check_complete, examples
from .keys import LAYER, NORM_PARAMS, check_arch, detect_arch, our_layer

FUSED_STEM_KEY = 'stem.stem.0.weight'
FUSED_RELEASE = 'repnext_mX_distill_300e_fused.pt'
#: BatchNorm eps of the authors' model (``nn.BatchNorm2d`` default), if the file does not say.
DEFAULT_BN_EPS = 1e-5
BN_PARAMS = ('weight', 'bias', 'running_mean', 'running_var')

_STEM = re.compile(r'stem\.stem\.(?P<index>[02])\.(?P<param>weight|bias)')
_MIXER = re.compile(LAYER + r'\.token_mixer\.(?P<group>conv_s|conv_m)\.(?P<param>weight|bias)')
_LARGE = re.compile(LAYER + r'\.token_mixer\.conv_l\.(?P<index>[01])\.(?P<param>weight|bias)')
_CHANNEL = re.compile(LAYER + r'\.channel_mixer\.(?P<index>[02])\.(?P<param>weight|bias)')
_NORM = re.compile(LAYER + r'\.norm\.(?P<param>' + NORM_PARAMS + ')')
_HEAD = re.compile(r'head\.(?P<param>weight|bias)')


def map_fused_key(key: str) -> str | None:
    """Our fused name of an authors' fused key (not of its ``norm`` entries), or ``None``."""
    if match := _STEM.fullmatch(key):
        return f'backbone.stem.{match["index"]}.conv.{match["param"]}'
    if match := _MIXER.fullmatch(key):
        branch = 'small' if match['group'] == 'conv_s' else 'medium'
        return f'{our_layer(match)}.token_mixer.{branch}.reparam.{match["param"]}'
    if match := _LARGE.fullmatch(key):
        conv = ('conv1xk', 'convkx1')[int(match['index'])]
        return f'{our_layer(match)}.token_mixer.large.{conv}.{match["param"]}'
    if match := _CHANNEL.fullmatch(key):
        fc = 'fc1' if match['index'] == '0' else 'fc2'
        return f'{our_layer(match)}.channel_mixer.{fc}.conv.{match["param"]}'
    if match := _HEAD.fullmatch(key):
        return f'head.fc.{match["param"]}'
    return None


def read_torchscript(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, float]]:
    """The weights of a TorchScript file and the ``eps`` of each norm module that records one.

    Raises:
        InputError: The archive does not load (damaged, or made by an incompatible torch).
    """
    try:
        module = torch.jit.load(str(path), map_location='cpu')
    except Exception as error:  # torch raises RuntimeError or ValueError subclasses here
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f'{path} is a TorchScript archive that does not load ({detail}); '
                         'copy or download it again') from error
    weights = {key: value.detach() for key, value in module.state_dict().items()}
    eps = {name: float(sub.eps) for name, sub in module.named_modules()
           if isinstance(getattr(sub, 'eps', None), float)}
    return weights, eps


def _norm_affine(tensors: Mapping[str, Tensor], prefix: str, channels: int,
                 eps: float) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` of the authors' eval BatchNorm ``prefix`` (its entries checked)."""
    missing = [f'{prefix}.{p}' for p in BN_PARAMS if f'{prefix}.{p}' not in tensors]
    wrong = [f'{prefix}.{p}: {tuple(tensors[f"{prefix}.{p}"].shape)} vs ({channels},)'
             for p in BN_PARAMS if f'{prefix}.{p}' in tensors
             and tuple(tensors[f'{prefix}.{p}'].shape) != (channels,)]
    if missing or wrong:
        raise InputError('the fused checkpoint lacks a complete BatchNorm after a chunk / copy '
                         f'convolution: {examples(missing + wrong)}')
    norm = nn.BatchNorm2d(channels, eps=eps)
    norm.load_state_dict({p: tensors[f'{prefix}.{p}'] for p in BN_PARAMS}
                         | {'num_batches_tracked': norm.num_batches_tracked})
    return bn_affine(norm.eval())


@torch.no_grad()
def convert_fused_state_dict(state_dict: Mapping[str, Any], eps: Mapping[str, float] | None = None,
                             arch: str = 'auto') -> ConversionResult:
    """The authors' fused classifier as this package's fused one, every BatchNorm folded.

    Args:
        state_dict: The TorchScript module's state dict.
        eps: ``eps`` per norm module name (``stages.1.downsample.norm``); default 1e-5.
        arch: ``'auto'`` detects it; a name is checked against the weights.

    Returns:
        ``backbone.`` and ``head.fc.`` weights for ``RepNeXt(deploy=True)`` and
        ``RepNeXtClsHead(deploy=True)``.

    Raises:
        InputError: Not the authors' fused RepNeXt, an unknown, missing or mis-shaped entry.
    """
    tensors = author_tensors(state_dict, stem_key=FUSED_STEM_KEY, release=FUSED_RELEASE)
    detected = check_arch(detect_arch(tensors), arch)
    mapped: dict[str, str] = {}
    norms: dict[str, str] = {}  # our layer -> the authors' norm prefix
    unknown: list[str] = []
    for key in tensors:
        if match := _NORM.fullmatch(key):
            norms[our_layer(match)] = key.rsplit('.', 1)[0]
        elif (ours := map_fused_key(key)) is not None:
            mapped[key] = ours
        else:
            unknown.append(key)
    if unknown:
        raise InputError(f'{len(unknown)} keys of the fused checkpoint have no counterpart in a '
                         f'fused RepNeXt-{detected.upper()}: {examples(unknown)}')
    if 'head.weight' not in tensors:
        raise InputError('the fused checkpoint has no classifier head (head.weight)')

    backbone = RepNeXt(detected, deploy=True).eval()
    expected = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    converted = {ours: tensors[key] for key, ours in mapped.items() if ours.startswith('backbone.')}
    check_complete(converted, expected, mapped, f'fused RepNeXt-{detected.upper()}')
    backbone.load_state_dict({k[len('backbone.'):]: v for k, v in converted.items()})

    folded: dict[str, str] = {}
    eps = eps or {}
    for i, stage in enumerate(backbone.stages):
        layers = [('downsample', stage.downsample)] if isinstance(stage.downsample, Downsample) \
            else []
        layers += [(f'blocks.{j}', block) for j, block in enumerate(stage.blocks)]
        for name, layer in layers:
            ours = f'backbone.stages.{i}.{name}'
            prefix = norms.pop(ours, f'stages.{i}.{name}.norm')
            channels = layer.channel_mixer.fc1.conv.in_channels
            scale, shift = _norm_affine(tensors, prefix, channels,
                                        eps.get(prefix, DEFAULT_BN_EPS))
            if isinstance(layer, Downsample):  # its BN output also feeds the residual
                layer.token_mixer.fold_output_affine(scale, shift)
                into = f'{ours}.token_mixer.{{small,medium}}.reparam'
            else:
                layer.channel_mixer.fold_input_affine(scale, shift)
                into = f'{ours}.channel_mixer.fc1.conv'
            folded.update({key: into for key in tensors if key.startswith(prefix + '.')})
    if norms:
        raise InputError(f'the fused checkpoint has norms of layers RepNeXt-{detected.upper()} '
                         f'does not have: {examples(sorted(norms.values()))}')
    head = {ours: tensors[key] for key, ours in mapped.items() if ours.startswith('head.')}
    result = {f'backbone.{k}': v for k, v in backbone.state_dict().items()} | head
    return ConversionResult(result, detected, int(tensors['head.weight'].shape[0]), mapped,
                            folded=folded)
