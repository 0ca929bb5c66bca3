"""The authors' ImageNet classifiers: ``repnext_mX_distill_300e.pth`` (DeiT-style script) and
``repnext_mX_sz224_*.pth.tar`` (timm's script). Both hold the classifier under the authors'
module names (:mod:`.keys`); converting them is renaming.

Every source key is either mapped, or dropped with a stated reason (the classifier head for
``task='backbone'``); an unknown key, a missing key or a wrong shape is an error.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from torch import Tensor

from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.utils.errors import InputError
from .common import ConversionResult, check_complete, examples
from .keys import AUTHOR_STEM_KEY, OUR_STEM_KEY, check_arch, detect_arch, map_author_key

ConvertTask = Literal['cls', 'backbone']


def classifier_shapes(arch: str, num_classes: int | None, task: ConvertTask) -> dict[str, Tensor]:
    """The state dict (meta tensors) of our RepNeXt classifier, ``backbone.`` + ``head.`` keys."""
    # On the meta device: only names and shapes are needed, no memory or initialization.
    with torch.device('meta'):
        state = {f'backbone.{k}': v for k, v in RepNeXt(arch).state_dict().items()}
        if task == 'cls':
            from repnext_mm.models.heads.repnext_head import RepNeXtClsHead

            head = RepNeXtClsHead(num_classes=num_classes,
                                  in_channels=RepNeXt.arch_settings[arch]['widths'][-1])
            state.update({f'head.{k}': v for k, v in head.state_dict().items()})
    return state


def author_tensors(state_dict: Mapping[str, Any], stem_key: str = AUTHOR_STEM_KEY,
                   release: str = 'repnext_mX_distill_300e.pth') -> dict[str, Tensor]:
    """The tensors of an author-layout state dict, after checking that it is one.

    Raises:
        InputError: No ``stem_key`` (another model, or one already converted), or entries
            that are not tensors.
    """
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, Tensor)}
    if stem_key not in tensors:
        if OUR_STEM_KEY in tensors:
            raise InputError('these weights are already in the repnext_mm layout '
                             '(backbone.stem.0.*); use them directly, no conversion is needed')
        raise InputError(f'this is not a RepNeXt checkpoint in the authors\' layout: it has no '
                         f'"{stem_key}" ({len(tensors)} tensors, e.g. '
                         f'{examples(tensors) or "none"}). Pass one of the authors\' releases, '
                         f'e.g. {release}.')
    non_tensors = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if non_tensors:
        raise InputError(f'{len(non_tensors)} entries of the weights are not tensors: '
                         f'{examples(non_tensors)}')
    return tensors


def convert_author_state_dict(state_dict: Mapping[str, Any], task: ConvertTask = 'cls',
                              arch: str = 'auto') -> ConversionResult:
    """Renames an author-layout classifier state dict to ours and checks it completely.

    Args:
        state_dict: The authors' ``model`` / ``model_ema`` (or timm's ``state_dict`` /
            ``state_dict_ema``) weights.
        task: ``'cls'`` keeps the classifier head (``head.`` keys, for our mmpretrain config);
            ``'backbone'`` keeps only ``backbone.`` keys (for ``init_cfg`` Pretrained).
        arch: ``'auto'`` detects it; a name is checked against the weights.

    Raises:
        InputError: Not an author RepNeXt checkpoint, unknown/missing keys, wrong shapes, or an
            arch mismatch. The message names the offending keys.
    """
    if task not in ('cls', 'backbone'):
        raise InputError(f"task must be 'cls' or 'backbone', got {task!r}")
    tensors = author_tensors(state_dict)
    detected = check_arch(detect_arch(tensors), arch)

    mapped: dict[str, str] = {}
    dropped: dict[str, str] = {}
    unknown: list[str] = []
    for key in tensors:
        ours = map_author_key(key)
        if ours is None:
            unknown.append(key)
        elif task == 'backbone' and ours.startswith('head.'):
            dropped[key] = 'classifier head (not part of the backbone)'
        else:
            mapped[key] = ours
    if unknown:
        raise InputError(f'{len(unknown)} keys of the checkpoint have no counterpart in RepNeXt-'
                         f'{detected.upper()}: {examples(unknown)}. Is it a modified model? '
                         'Convert one of the authors\' released files.')

    weight = tensors.get('head.head.linear.weight')
    num_classes = int(weight.shape[0]) if weight is not None else None
    if task == 'cls' and num_classes is None:
        raise InputError('the checkpoint has no classifier head (head.head.linear.weight); '
                         'convert it with --task backbone')
    converted = {ours: tensors[key] for key, ours in mapped.items()}
    ordered = check_complete(converted, classifier_shapes(detected, num_classes, task), mapped,
                             f'RepNeXt-{detected.upper()}')
    return ConversionResult(ordered, detected, num_classes, mapped, dropped)
