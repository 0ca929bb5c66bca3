"""The authors' module names of the RepNeXt classifier and their counterparts here.

Every released file (ImageNet ``.pth`` and ``.pth.tar``, the detector's and segmentor's
``backbone.*`` entries, the fused TorchScript classifier) names the network as the authors'
``model/repnext.py`` does. Only the names differ; every tensor keeps its value and shape:

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
"""
from __future__ import annotations

import re
from typing import Mapping

from torch import Tensor

from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.utils.errors import InputError

ARCH_NAMES = tuple(RepNeXt.arch_settings)

#: The first layer of the authors' classifier: every released file has it (with a prefix for
#: the detector and segmentor, without ``.conv`` in the fused form).
AUTHOR_STEM_KEY = 'stem.stem.0.conv.weight'
#: The same layer in this package's layout (a file that needs no conversion).
OUR_STEM_KEY = 'backbone.stem.0.conv.weight'

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
NORM_PARAMS = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
#: A block or downsample layer of the authors' model (named groups ``stage`` and ``layer``).
LAYER = r'stages\.(?P<stage>\d+)\.(?P<layer>downsample|blocks\.\d+)'
_STEM = re.compile(r'stem\.stem\.(?P<index>[02])\.(?P<module>conv|norm)\.(?P<param>\w+)')
_TOKEN_MIXER = re.compile(LAYER + r'\.token_mixer\.(?P<group>conv_[sml])\.(?P<branch>\w+)\.'
                          r'(?P<param>weight|bias)')
_LAYER_NORM = re.compile(LAYER + r'\.norm\.(?P<param>' + NORM_PARAMS + ')')
_CHANNEL_MIXER = re.compile(LAYER + r'\.channel_mixer\.(?P<index>[02])\.(?P<module>conv|norm)\.'
                            r'(?P<param>\w+)')
_HEAD = re.compile(r'head\.(?P<head>head|head_dist)\.(?P<module>norm|linear)\.(?P<param>\w+)')
_BLOCK_INDEX = re.compile(r'stages\.(\d+)\.blocks\.(\d+)\.')


def our_layer(match: re.Match) -> str:
    """``backbone.stages.{i}.{layer}`` of a :data:`LAYER` match."""
    return f'backbone.stages.{match["stage"]}.{match["layer"]}'


def map_author_key(key: str) -> str | None:
    """Our name (with ``backbone.`` / ``head.`` prefix) of an author key, or ``None`` if unknown."""
    if match := _STEM.fullmatch(key):
        module = 'conv' if match['module'] == 'conv' else 'bn'
        return f'backbone.stem.{match["index"]}.{module}.{match["param"]}'
    if match := _TOKEN_MIXER.fullmatch(key):
        branch = _BRANCHES.get((match['group'], match['branch']))
        if branch is None:
            return None
        return f'{our_layer(match)}.token_mixer.{branch}.{match["param"]}'
    if match := _LAYER_NORM.fullmatch(key):
        return f'{our_layer(match)}.norm.{match["param"]}'
    if match := _CHANNEL_MIXER.fullmatch(key):
        fc = 'fc1' if match['index'] == '0' else 'fc2'
        module = 'conv' if match['module'] == 'conv' else 'bn'
        return f'{our_layer(match)}.channel_mixer.{fc}.{module}.{match["param"]}'
    if match := _HEAD.fullmatch(key):
        return f'head.{match["head"]}.{match["module"]}.{match["param"]}'
    return None


def detect_arch(state_dict: Mapping[str, Tensor]) -> str:
    """Finds the arch (``'m0'`` .. ``'m5'``) from stage widths and block counts.

    Reads the authors' names (``stages.{i}.blocks.{j}.norm.weight``), which the training and
    the fused form share.

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
                     f'which match none of the released archs {ARCH_NAMES}; check that the file '
                     'is a RepNeXt checkpoint')


def check_arch(detected: str, wanted: str) -> str:
    """``detected``, after checking it against ``--arch`` (``'auto'`` accepts any)."""
    if wanted != 'auto' and wanted not in ARCH_NAMES:
        raise InputError(f"arch must be 'auto' or one of {ARCH_NAMES}, got {wanted!r}")
    if wanted not in ('auto', detected):
        raise InputError(f'--arch {wanted} was given but the weights are RepNeXt-'
                         f'{detected.upper()} (stage widths/depths of {detected}); pass --arch '
                         f'{detected} or auto')
    return detected

