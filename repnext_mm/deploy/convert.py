"""Converting the authors' released RepNeXt classification checkpoints to this package's layout.

The authors' ``repnext_m{0..5}_distill_300e.pth`` hold the training-form weights under ``model``
(plus optimizer, scheduler, EMA, scaler and an ``argparse.Namespace`` under ``args``). Their
module names differ from ours only by renaming; every tensor keeps its value and shape:

==========================================  ==============================================
authors                                      repnext_mm (``backbone.`` / ``head.`` prefixed)
==========================================  ==============================================
``stem.stem.{0,2}.conv`` / ``.norm``         ``stem.{0,2}.conv`` / ``.bn``
``token_mixer.conv_s.conv_3_3``              ``token_mixer.small.conv3x3``
``token_mixer.conv_s.conv_3_w`` (1x3)        ``token_mixer.small.conv1x3``
``token_mixer.conv_s.conv_3_h`` (3x1)        ``token_mixer.small.conv3x1``
``token_mixer.conv_s.conv_2_2``              ``token_mixer.small.conv2x2_dilated``
``token_mixer.conv_m.conv_7_7``              ``token_mixer.medium.conv7x7``
``token_mixer.conv_m.conv_5_3`` (5x3)        ``token_mixer.medium.conv5x3``
``token_mixer.conv_m.conv_3_5`` (3x5)        ``token_mixer.medium.conv3x5``
``token_mixer.conv_m.conv_{7,5}_w`` (1xk)    ``token_mixer.medium.conv1x{7,5}``
``token_mixer.conv_m.conv_{7,5}_h`` (kx1)    ``token_mixer.medium.conv{7,5}x1``
``token_mixer.conv_l.{0,1}``                 ``token_mixer.large.conv1xk`` / ``.convkx1``
``channel_mixer.{0,2}.conv`` / ``.norm``     ``channel_mixer.fc{1,2}.conv`` / ``.bn``
``norm``                                     ``norm``
``head.{head,head_dist}.{norm,linear}``      ``head.{head,head_dist}.{norm,linear}``
==========================================  ==============================================

Every source key is either mapped, or dropped with a stated reason (the classifier head for
``task='backbone'``); an unknown key, a missing key or a wrong shape is an error.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from torch import Tensor

from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_torch_save, check_output_path
from repnext_mm.apis.checkpoint import UNSAFE_FLAG, read_checkpoint

ConvertTask = Literal['cls', 'backbone']
ARCH_NAMES = tuple(RepNeXt.arch_settings)

#: Weights of an author checkpoint that identify it (its first layer).
AUTHOR_STEM_KEY = 'stem.stem.0.conv.weight'

_BRANCHES = {
    ('conv_s', 'conv_3_3'): 'small.conv3x3',
    ('conv_s', 'conv_3_w'): 'small.conv1x3',
    ('conv_s', 'conv_3_h'): 'small.conv3x1',
    ('conv_s', 'conv_2_2'): 'small.conv2x2_dilated',
    ('conv_m', 'conv_7_7'): 'medium.conv7x7',
    ('conv_m', 'conv_5_3'): 'medium.conv5x3',
    ('conv_m', 'conv_3_5'): 'medium.conv3x5',
    ('conv_m', 'conv_7_w'): 'medium.conv1x7',
    ('conv_m', 'conv_7_h'): 'medium.conv7x1',
    ('conv_m', 'conv_5_w'): 'medium.conv1x5',
    ('conv_m', 'conv_5_h'): 'medium.conv5x1',
    ('conv_l', '0'): 'large.conv1xk',
    ('conv_l', '1'): 'large.convkx1',
}
_NORM_PARAMS = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
_LAYER = r'stages\.(?P<stage>\d+)\.(?P<layer>downsample|blocks\.\d+)'
_STEM = re.compile(r'stem\.stem\.(?P<index>[02])\.(?P<module>conv|norm)\.(?P<param>\w+)')
_TOKEN_MIXER = re.compile(_LAYER + r'\.token_mixer\.(?P<group>conv_[sml])\.(?P<branch>\w+)\.'
                          r'(?P<param>weight|bias)')
_LAYER_NORM = re.compile(_LAYER + r'\.norm\.(?P<param>' + _NORM_PARAMS + ')')
_CHANNEL_MIXER = re.compile(_LAYER + r'\.channel_mixer\.(?P<index>[02])\.(?P<module>conv|norm)\.'
                            r'(?P<param>\w+)')
_HEAD = re.compile(r'head\.(?P<head>head|head_dist)\.(?P<module>norm|linear)\.(?P<param>\w+)')
_BLOCK_INDEX = re.compile(r'stages\.(\d+)\.blocks\.(\d+)\.')


def map_author_key(key: str) -> str | None:
    """Our name (with ``backbone.`` / ``head.`` prefix) of an author key, or ``None`` if unknown."""
    if match := _STEM.fullmatch(key):
        module = 'conv' if match['module'] == 'conv' else 'bn'
        return f'backbone.stem.{match["index"]}.{module}.{match["param"]}'
    if match := _TOKEN_MIXER.fullmatch(key):
        branch = _BRANCHES.get((match['group'], match['branch']))
        if branch is None:
            return None
        return (f'backbone.stages.{match["stage"]}.{match["layer"]}.token_mixer.{branch}.'
                f'{match["param"]}')
    if match := _LAYER_NORM.fullmatch(key):
        return f'backbone.stages.{match["stage"]}.{match["layer"]}.norm.{match["param"]}'
    if match := _CHANNEL_MIXER.fullmatch(key):
        fc = 'fc1' if match['index'] == '0' else 'fc2'
        module = 'conv' if match['module'] == 'conv' else 'bn'
        return (f'backbone.stages.{match["stage"]}.{match["layer"]}.channel_mixer.{fc}.{module}.'
                f'{match["param"]}')
    if match := _HEAD.fullmatch(key):
        return f'head.{match["head"]}.{match["module"]}.{match["param"]}'
    return None


def detect_arch(state_dict: Mapping[str, Tensor]) -> str:
    """Finds the arch (``'m0'`` .. ``'m5'``) from stage widths and block counts.

    Raises:
        InputError: The widths/depths match no released arch.
    """
    depths = [0] * RepNeXt.num_stages
    for key in state_dict:
        if match := _BLOCK_INDEX.match(key):
            stage, block = int(match[1]), int(match[2])
            if stage < len(depths):
                depths[stage] = max(depths[stage], block + 1)
    widths = []
    for stage in range(RepNeXt.num_stages):
        norm = state_dict.get(f'stages.{stage}.blocks.0.norm.weight')
        widths.append(int(norm.shape[0]) if norm is not None else 0)
    name = RepNeXt.arch_name(widths, depths)
    if name is not None:
        return name
    raise InputError(f'the checkpoint has stage widths {tuple(widths)} and depths {tuple(depths)}, '
                      f'which match none of the released archs {ARCH_NAMES}; pass --arch only if '
                      'you are sure, or check that the file is a RepNeXt checkpoint')


@dataclass
class ConversionResult:
    """Outcome of :func:`convert_author_state_dict`.

    Attributes:
        state_dict: Converted weights (``backbone.`` and, for ``task='cls'``, ``head.`` keys).
        arch: Arch of the checkpoint.
        num_classes: Classes of the source classifier head (``None`` if it has none).
        mapped: ``{author key: our key}`` for every converted entry.
        dropped: ``{author key: reason}`` for every entry deliberately left out.
    """
    state_dict: dict[str, Tensor]
    arch: str
    num_classes: int | None
    mapped: dict[str, str]
    dropped: dict[str, str] = field(default_factory=dict)


def _expected_shapes(arch: str, num_classes: int | None, task: ConvertTask) -> dict[str, tuple]:
    # Built on the meta device: only names and shapes are needed, no memory or initialization.
    with torch.device('meta'):
        shapes = {f'backbone.{k}': tuple(v.shape) for k, v in RepNeXt(arch).state_dict().items()}
        if task == 'cls':
            from repnext_mm.models.heads.repnext_head import RepNeXtClsHead

            head = RepNeXtClsHead(num_classes=num_classes,
                                  in_channels=RepNeXt.arch_settings[arch]['widths'][-1])
            shapes.update({f'head.{k}': tuple(v.shape) for k, v in head.state_dict().items()})
    return shapes


def _examples(keys, limit: int = 4) -> str:
    keys = list(keys)
    return ', '.join(keys[:limit]) + (f' (+{len(keys) - limit} more)' if len(keys) > limit else '')


def convert_author_state_dict(state_dict: Mapping[str, Any], task: ConvertTask = 'cls',
                              arch: str = 'auto') -> ConversionResult:
    """Renames an author-layout state dict to ours and checks it completely.

    Args:
        state_dict: The authors' ``model`` (or ``model_ema``) weights.
        task: ``'cls'`` keeps the classifier head (``head.`` keys, for our mmpretrain config);
            ``'backbone'`` keeps only ``backbone.`` keys (for ``init_cfg`` Pretrained).
        arch: ``'auto'`` detects it; a name is checked against the weights.

    Raises:
        InputError: Not an author RepNeXt checkpoint, unknown/missing keys, wrong shapes, or an
            arch mismatch. The message names the offending keys.
    """
    if task not in ('cls', 'backbone'):
        raise InputError(f"task must be 'cls' or 'backbone', got {task!r}")
    if arch != 'auto' and arch not in ARCH_NAMES:
        raise InputError(f"arch must be 'auto' or one of {ARCH_NAMES}, got {arch!r}")
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, Tensor)}
    if AUTHOR_STEM_KEY not in tensors:
        if any(k.startswith('backbone.stem.0.') for k in tensors):
            raise InputError('these weights are already in the repnext_mm layout (backbone.stem.0.*); '
                              'use them directly, no conversion is needed')
        raise InputError(f'this is not a RepNeXt checkpoint in the authors\' layout: it has no '
                          f'"{AUTHOR_STEM_KEY}" ({len(tensors)} tensors, e.g. '
                          f'{_examples(tensors) or "none"}). '
                          'Pass the authors\' classification checkpoint repnext_mX_distill_300e.pth.')
    non_tensors = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if non_tensors:
        raise InputError(f'{len(non_tensors)} entries of the weights are not tensors: '
                          f'{_examples(non_tensors)}')

    detected = detect_arch(tensors)
    if arch != 'auto' and arch != detected:
        raise InputError(f'--arch {arch} was given but the weights are RepNeXt-{detected.upper()} '
                          f'(stage widths/depths of {detected}); pass --arch {detected} or auto')

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
                          f'{detected.upper()}: {_examples(unknown)}. Is it a fused (deploy) or '
                          'modified model? Convert the released training checkpoint instead.')

    weight = tensors.get('head.head.linear.weight')
    num_classes = int(weight.shape[0]) if weight is not None else None
    if task == 'cls' and num_classes is None:
        raise InputError('the checkpoint has no classifier head (head.head.linear.weight); '
                          'convert it with --task backbone')
    expected = _expected_shapes(detected, num_classes, task)
    converted = {ours: tensors[key] for key, ours in mapped.items()}
    missing = [k for k in expected if k not in converted]
    extra = [k for k in converted if k not in expected]
    wrong = [f'{src} -> {mapped[src]}: {tuple(tensors[src].shape)} vs expected '
             f'{expected[mapped[src]]}' for src in mapped
             if mapped[src] in expected and tuple(tensors[src].shape) != expected[mapped[src]]]
    if missing or extra or wrong:
        problems = []
        if missing:
            problems.append(f'{len(missing)} weights missing ({_examples(missing)})')
        if extra:
            problems.append(f'{len(extra)} weights without a place ({_examples(extra)})')
        if wrong:
            problems.append(f'{len(wrong)} with the wrong shape ({"; ".join(wrong[:3])})')
        raise InputError(f'the checkpoint does not form a complete RepNeXt-{detected.upper()}: '
                          + ', '.join(problems) + '. Is the file complete and unmodified?')
    ordered = {k: converted[k] for k in expected}  # our module order, for readable checkpoints
    return ConversionResult(ordered, detected, num_classes, mapped, dropped)


#: Weight entries of the authors' checkpoint (``--weights``).
WEIGHT_ENTRIES = ('model', 'model_ema')


def _no_weights_message(checkpoint: dict, weights: str, source: str) -> str:
    """Why ``checkpoint`` has no usable ``weights`` entry, short even for a huge foreign file.

    A foreign file (e.g. another model's bare state dict) can have hundreds of top-level keys;
    listing them all made a multi-kilobyte line, so only the count and the first few are named.
    The ``--weights`` suggestion names only an entry this file actually has.
    """
    names = [key if len(key) <= 32 else key[:29] + '...' for key in map(str, checkpoint)]
    entries = f'{len(names)} top-level entries: {_examples(names, limit=5)}' if names else \
        'it is an empty dict'
    other = [w for w in WEIGHT_ENTRIES if w != weights and isinstance(checkpoint.get(w), dict)]
    if other:
        fix = f'pass --weights {other[0]} to convert the "{other[0]}" weights it holds'
    elif 'state_dict' in checkpoint:
        fix = ('it looks like an MMEngine checkpoint ("state_dict"), not an authors\' release; '
               'a repnext_mm checkpoint needs no conversion')
    else:
        fix = "pass the authors' release repnext_mX_distill_300e.pth"
    return f'{source} has no "{weights}" weights ({entries}); {fix}'


def _select_weights(checkpoint: Any, weights: str, source: str) -> tuple[dict, list[str]]:
    """The author weights inside a loaded file and the top-level entries that were not used."""
    if not isinstance(checkpoint, dict):
        raise InputError(f'{source} holds a {type(checkpoint).__name__}, not a checkpoint dict. '
                          'TorchScript (fused) releases cannot be converted; use '
                          'repnext_mX_distill_300e.pth')
    if AUTHOR_STEM_KEY in checkpoint or any(k.startswith('module.' + AUTHOR_STEM_KEY)
                                            for k in checkpoint):
        selected, unused = checkpoint, []
    else:
        selected = checkpoint.get(weights)
        if not isinstance(selected, dict):
            raise InputError(_no_weights_message(checkpoint, weights, source))
        unused = [str(k) for k in checkpoint if k != weights]
    if selected and all(str(k).startswith('module.') for k in selected):  # saved from a DDP wrapper
        selected = {k[len('module.'):]: v for k, v in selected.items()}
    return selected, unused


def convert_official_checkpoint(src: str | os.PathLike, dst: str | os.PathLike,
                                task: ConvertTask = 'cls', arch: str = 'auto',
                                weights: str = 'model', force: bool = False,
                                unsafe_full_unpickle: bool = False
                                ) -> tuple[ConversionResult, list[str]]:
    """Reads an authors' checkpoint, converts it and writes ``{'state_dict', 'meta'}`` to ``dst``.

    Returns:
        The conversion result and the names of the top-level entries that were not converted
        (optimizer, scheduler, ...).
    """
    dst = check_output_path(dst, force)
    checkpoint = read_checkpoint(src, unsafe_full_unpickle=unsafe_full_unpickle,
                          unsafe_hint=UNSAFE_FLAG)
    selected, unused = _select_weights(checkpoint, weights, str(src))
    result = convert_author_state_dict(selected, task=task, arch=arch)
    epoch = checkpoint.get('epoch') if isinstance(checkpoint, dict) else None
    meta = dict(repnext_mm=dict(
        converted_from=os.path.abspath(str(src)),
        source_format='authors (github.com/suous/RepNeXt)',
        source_weights=weights,
        source_epoch=epoch if isinstance(epoch, int) else None,
        task=task,
        arch=result.arch,
        num_classes=result.num_classes,
        fused=False,
    ))
    atomic_torch_save(dict(state_dict=result.state_dict, meta=meta), Path(dst))
    return result, unused
