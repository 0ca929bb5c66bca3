"""The authors' Mask R-CNN (``repnext_m{3,4,5}_coco.pth``, mmdet 2.28) and Semantic FPN
(``repnext_m{3,4,5}_ade20k.pth``, mmseg 0.30) checkpoints.

Both are mmcv 1.x checkpoints ``{'meta', 'state_dict', 'optimizer'}``. ``state_dict`` holds
``backbone.`` + the authors' classifier names without the head (renamed as in :mod:`.keys`;
SyncBN buffers carry BN names), then the neck and heads as mmdet 2.28 / mmseg 0.30 name them.

Neck and head names, module by module: mmdet 2.28.2 and mmsegmentation 0.30.0 (their released
wheels) against the models mmdet 3.3 / mmseg 1.2 build from
``configs/mmdet/mask_rcnn_repnext_mX_fpn_1x_coco.py`` and
``configs/mmseg/fpn_repnext_mX_8xb4-40k_ade20k-512x512.py`` (SyncBN reverted to BN). Every
module names its weights the same way in both versions:

- FPN neck (``necks/fpn.py`` of both libraries; ConvModule lists without norm):
  ``neck.lateral_convs.{i}.conv.{weight,bias}``, ``neck.fpn_convs.{i}.conv.{weight,bias}``
- RPNHead (``dense_heads/rpn_head.py``, ``num_convs=1``: plain ``nn.Conv2d``):
  ``rpn_head.rpn_conv.*``, ``rpn_head.rpn_cls.*`` (3 anchors x 1 sigmoid), ``rpn_head.rpn_reg.*``
- Shared2FCBBoxHead (``bbox_heads/convfc_bbox_head.py``: ``nn.Linear`` list + fc_cls / fc_reg):
  ``roi_head.bbox_head.shared_fcs.{0,1}.*``, ``.fc_cls.*`` (81 rows), ``.fc_reg.*`` (320 rows)
- FCNMaskHead (``mask_heads/fcn_mask_head.py``: 4 ConvModules, deconv, 1x1 logits):
  ``roi_head.mask_head.convs.{0-3}.conv.*``, ``.upsample.*``, ``.conv_logits.*`` (80 rows)
- FPNHead (``decode_heads/fpn_head.py``: ConvModules (conv + ``bn``) at even indices of each
  scale head, parameter-free Upsample between; ``conv_seg`` from ``decode_head.py``):
  ``decode_head.scale_heads.{i}.{0,2,4}.conv.weight`` / ``.bn.*``, ``decode_head.conv_seg.*``

The rename table is therefore empty (:data:`RENAMES`); RoI extractors and losses hold no
weights in either version. The converted file is checked against the model built from the
config by the caller (:mod:`.official`), which names any entry without a place.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

from repnext_mm.utils.errors import InputError
from .common import ConversionResult, examples
from .keys import AUTHOR_STEM_KEY, check_arch, detect_arch, map_author_key
from .classifier import author_tensors

DownstreamTask = Literal['detector', 'segmentor']
BACKBONE = 'backbone.'

#: ``(mmdet 2.28 / mmseg 0.30 key prefix, mmdet 3.3 / mmseg 1.2 key prefix)``: none differ.
RENAMES: tuple[tuple[str, str], ...] = ()
#: The modules besides the backbone, and the entry that gives the class count.
PARTS = {
    'detector': (('neck.', 'rpn_head.', 'roi_head.'), 'roi_head.mask_head.conv_logits.weight'),
    'segmentor': (('neck.', 'decode_head.'), 'decode_head.conv_seg.weight'),
}
RELEASES = {'detector': 'repnext_m3_coco.pth', 'segmentor': 'repnext_m3_ade20k.pth'}


def rename_downstream_key(key: str) -> str:
    """The mmdet 3.3 / mmseg 1.2 name of a neck or head key (:data:`RENAMES`)."""
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def convert_downstream_state_dict(state_dict: Mapping[str, Any], task: DownstreamTask,
                                  arch: str = 'auto', backbone_only: bool = False
                                  ) -> ConversionResult:
    """Renames the authors' detector or segmentor weights to this package's names.

    Args:
        state_dict: The checkpoint's ``state_dict``.
        task: ``'detector'`` (Mask R-CNN) or ``'segmentor'`` (Semantic FPN).
        arch: ``'auto'`` detects it; a name is checked against the weights.
        backbone_only: Keep only the ``backbone.`` entries (the rest is listed as dropped).

    Raises:
        InputError: Not the authors' layout, an arch mismatch, or a key outside the backbone,
            neck and heads of ``task`` (named).
    """
    parts, classes_key = PARTS[task]
    backbone = {key[len(BACKBONE):]: value for key, value in state_dict.items()
                if key.startswith(BACKBONE)}
    if BACKBONE + AUTHOR_STEM_KEY not in state_dict:
        backbone = dict(state_dict)  # let author_tensors say what the file is instead
    tensors = author_tensors(backbone, release=RELEASES[task])
    detected = check_arch(detect_arch(tensors), arch)

    mapped: dict[str, str] = {}
    dropped: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if key.startswith(BACKBONE):
            ours = map_author_key(key[len(BACKBONE):])
            if ours is None or not ours.startswith(BACKBONE):
                unknown.append(key)
            else:
                mapped[key] = ours
        elif not key.startswith(parts):
            unknown.append(key)
        elif backbone_only:
            dropped[key] = f'the {task}\'s neck and heads (not part of the backbone)'
        else:
            mapped[key] = rename_downstream_key(key)
    if unknown:
        raise InputError(f'{len(unknown)} keys of the checkpoint have no place in a RepNeXt-'
                         f'{detected.upper()} {task} (backbone, {", ".join(parts)}): '
                         f'{examples(unknown)}. Is it a modified model?')
    classes = state_dict.get(classes_key)
    num_classes = None if classes is None else int(classes.shape[0])
    converted = {ours: state_dict[key] for key, ours in mapped.items()}
    return ConversionResult(converted, detected, num_classes, mapped, dropped)
