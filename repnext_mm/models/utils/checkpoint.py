"""Loading pretrained backbone weights with errors a user can act on."""
from __future__ import annotations

import logging

from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from repnext_mm.utils.state_dict import StateDictMismatch, compare_state_dicts, extract_state_dict


def load_pretrained(module: nn.Module, filename: str, prefix: str | None = None,
                    map_location: str = 'cpu', logger: logging.Logger | None = None) -> dict:
    """Loads the entries of ``filename`` that start with ``prefix`` into ``module``.

    Unlike MMEngine's ``Pretrained`` init (``strict=False``, mismatches only logged), a checkpoint
    that matches none of the module's keys, or matches them with the wrong shapes, raises
    ``ValueError`` naming the expected prefix and keys; partly matching ones load and warn.

    Returns:
        The state dict that was loaded.
    """
    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{filename} does not hold a state dict (got {type(checkpoint).__name__})')
    state_dict = extract_state_dict(checkpoint)
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}

    own = module.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own}
    example_own = ', '.join(list(own)[:3])
    if not matched:
        found = ', '.join(list(extract_state_dict(checkpoint))[:3]) or 'no keys'
        raise ValueError(
            f'none of the weights in {filename} match {type(module).__name__}'
            + (f" after keeping the keys under prefix '{prefix}'" if prefix else '')
            + f'. Expected keys like {example_own}; the checkpoint has {found}. '
            "Set init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.') for an "
            'mmpretrain/mmdet/mmseg checkpoint, or convert the authors\' release with '
            'tools/deploy/convert_official.py first.')
    wrong_shape = compare_state_dicts(own, matched).wrong_shape
    if wrong_shape:
        raise ValueError(f'{len(wrong_shape)} weights in {filename} have the wrong shape for this '
                         f'arch (was it trained with another arch or a deploy=True model?): '
                         + StateDictMismatch(wrong_shape=wrong_shape).summary())
    module.load_state_dict(matched, strict=False)
    missing = [k for k in own if k not in matched and not k.endswith('num_batches_tracked')]
    if missing and logger is not None:
        logger.warning(f'{len(missing)} of {len(own)} backbone entries were not in {filename} '
                       f'and keep their initialization, e.g. {missing[:5]}')
    elif logger is not None:
        logger.info(f'loaded {len(matched)} backbone entries from {filename}')
    return matched
