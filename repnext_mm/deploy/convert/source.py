"""Which of the authors' releases a file is, told by its content (never by its name).

==========  ==========================================  =========================================
kind        file (authors' release v1.0)                what identifies it
==========  ==========================================  =========================================
imagenet    ``repnext_mX_distill_300e.pth``             ``model`` / ``model_ema`` in the authors'
                                                        names (or those weights alone)
timm        ``repnext_mX_sz224_4xbs*_ep300*.pth.tar``   ``state_dict`` / ``state_dict_ema`` in the
                                                        authors' names (timm's checkpoint format)
detector    ``repnext_mX_coco.pth`` (mmdet 2.28)        ``state_dict`` with ``backbone.stem.stem``
                                                        and ``rpn_head.`` / ``roi_head.`` entries
segmentor   ``repnext_mX_ade20k.pth`` (mmseg 0.30)      ``state_dict`` with ``backbone.stem.stem``
                                                        and ``decode_head.`` entries
fused       ``repnext_mX_distill_300e_fused.pt``        a TorchScript archive
==========  ==========================================  =========================================

Pickled files are read by :func:`~repnext_mm.apis.checkpoint.read_checkpoint`
(``weights_only=True`` with an explicit allow-list; ``args`` is an ``argparse.Namespace``), the
TorchScript archive by ``torch.jit.load`` (:mod:`.fused`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import Tensor

from repnext_mm.apis.checkpoint import UNSAFE_FLAG, read_checkpoint
from repnext_mm.utils.errors import InputError
from .common import examples
from .fused import is_torchscript, read_torchscript
from .keys import AUTHOR_STEM_KEY, OUR_STEM_KEY

CLASSIFIER_CONFIG = 'configs/mmpretrain/repnext_{arch}_8xb256_in1k.py'
#: ``--weights`` choices.
WEIGHT_CHOICES = ('model', 'ema')


@dataclass(frozen=True)
class Kind:
    """One kind of released file.

    Attributes:
        name: ``'imagenet'``, ``'timm'``, ``'detector'``, ``'segmentor'`` or ``'fused'``.
        found: What the tool says it found.
        task: The model it holds, as :func:`repnext_mm.apis.model.model_task` names it.
        config: Our config for it (``{arch}`` to fill in).
        entries: ``--weights`` choice -> the top-level entry holding those weights.
        cfg_options: Config overrides that build the model holding these weights.
        class_options: Config keys of the class count.
        class_layers: Modules whose shapes depend on the class count (``load_from_allow_mismatch``
            for fine-tuning with another count).
    """
    name: str
    found: str
    task: str
    config: str
    entries: Mapping[str, str] = field(default_factory=dict)
    cfg_options: Mapping[str, Any] = field(default_factory=dict)
    class_options: tuple[str, ...] = ('model.head.num_classes', )
    class_layers: tuple[str, ...] = ('head.head.linear', 'head.head_dist.linear')


KINDS = {kind.name: kind for kind in (
    Kind('imagenet', "the authors' ImageNet classifier (DeiT-style script, "
         'repnext_mX_distill_300e.pth)', 'classifier', CLASSIFIER_CONFIG,
         dict(model='model', ema='model_ema')),
    Kind('timm', "an ImageNet classifier from timm's training script (the authors' StarNet "
         'recipe, repnext_mX_sz224_*.pth.tar)', 'classifier', CLASSIFIER_CONFIG,
         dict(model='state_dict', ema='state_dict_ema')),
    Kind('detector', "the authors' Mask R-CNN (mmdet 2.28 / mmcv 1.x, repnext_mX_coco.pth)",
         'detector', 'configs/mmdet/mask_rcnn_repnext_{arch}_fpn_1x_coco.py',
         dict(model='state_dict'),
         class_options=('model.roi_head.bbox_head.num_classes',
                        'model.roi_head.mask_head.num_classes'),
         class_layers=('roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg',
                       'roi_head.mask_head.conv_logits')),
    Kind('segmentor', "the authors' Semantic FPN (mmseg 0.30 / mmcv 1.x, repnext_mX_ade20k.pth)",
         'segmentor', 'configs/mmseg/fpn_repnext_{arch}_8xb4-40k_ade20k-512x512.py',
         dict(model='state_dict'), class_options=('model.decode_head.num_classes', ),
         class_layers=('decode_head.conv_seg', )),
    Kind('fused', "the authors' fused TorchScript classifier (repnext_mX_distill_300e_fused.pt)",
         'classifier', CLASSIFIER_CONFIG,
         cfg_options={'model.backbone.deploy': True, 'model.head.deploy': True},
         class_layers=('head.fc', )),
)}

#: Why a top-level entry of a release is not converted.
LEFT_OUT = {
    'optimizer': 'optimizer state, for training only',
    'lr_scheduler': 'learning-rate scheduler state, for training only',
    'scaler': 'mixed-precision loss scaler, for training only',
    'amp_scaler': 'mixed-precision loss scaler, for training only',
    'args': 'training arguments',
    'epoch': 'epoch counter, recorded in meta',
    'metric': "timm's validation metric",
    'version': "timm's checkpoint format version",
    'arch': "timm's model name; the arch is read off the weights",
    'meta': 'mmcv 1.x metadata; its class names, palette, epoch and iter are kept in '
            'meta, its config text and environment are not',
}


@dataclass
class Source:
    """A released file, read and recognized.

    Attributes:
        path: The file.
        kind: What it is.
        weights: The chosen weights, in the file's own names.
        entry: The top-level entry they came from (``None``: the file holds only weights).
        left_out: ``{top-level entry: why it is not converted}``.
        info: ``epoch``, ``iter``, ``classes``, ``palette`` where the file records them.
        bn_eps: ``eps`` per BatchNorm name (TorchScript files that record it).
    """
    path: str
    kind: Kind
    weights: dict[str, Tensor]
    entry: str | None = None
    left_out: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    bn_eps: dict[str, float] = field(default_factory=dict)


def _strip_ddp(weights: Mapping[str, Any]) -> dict[str, Any]:
    if weights and all(str(k).startswith('module.') for k in weights):  # saved from DDP
        return {k[len('module.'):]: v for k, v in weights.items()}
    return dict(weights)


def _kind_of(checkpoint: Mapping[str, Any], source: str) -> Kind | None:
    """The kind of a pickled checkpoint, ``None`` if it is bare author weights."""
    if AUTHOR_STEM_KEY in _strip_ddp(checkpoint):
        return None
    state = checkpoint.get('state_dict')
    if isinstance(state, Mapping):
        keys = _strip_ddp(state)
        if 'backbone.' + AUTHOR_STEM_KEY in keys:
            if any(k.startswith(('rpn_head.', 'roi_head.')) for k in keys):
                return KINDS['detector']
            if any(k.startswith('decode_head.') for k in keys):
                return KINDS['segmentor']
            rest = [k for k in keys if not k.startswith('backbone.')]
            raise InputError(f'{source} holds a RepNeXt backbone in the authors\' layout but '
                             'neither Mask R-CNN heads (rpn_head., roi_head.) nor a Semantic FPN '
                             f'head (decode_head.); its other entries: {examples(rest) or "none"}')
        if AUTHOR_STEM_KEY in keys:
            return KINDS['timm']
        if OUR_STEM_KEY in keys:
            raise InputError(f'{source} is already in the repnext_mm layout (backbone.stem.0.*): '
                             'use it directly, no conversion is needed')
    if any(isinstance(checkpoint.get(e), Mapping) for e in KINDS['imagenet'].entries.values()):
        return KINDS['imagenet']
    if isinstance(state, Mapping):
        raise InputError(f'{source} holds a "state_dict" without a RepNeXt in the authors\' layout '
                         f'(no "{AUTHOR_STEM_KEY}"; keys e.g. {examples(state)}); pass one of '
                         "the authors' releases")
    names = [key if len(key) <= 32 else key[:29] + '...' for key in map(str, checkpoint)]
    entries = f'{len(names)} top-level entries: {examples(names, 5)}' if names else 'it is empty'
    raise InputError(f'{source} is none of the authors\' RepNeXt releases ({entries}); pass '
                     'one of the files --help lists')


def _chosen_weights(checkpoint: Mapping[str, Any], kind: Kind, weights: str,
                    source: str) -> str:
    entry = kind.entries.get(weights)
    if entry is None:
        raise InputError(f'{source} is {kind.found}, which holds one set of weights and no EMA; '
                         'drop --weights ema')
    if not isinstance(checkpoint.get(entry), Mapping):
        present = [c for c, e in kind.entries.items() if isinstance(checkpoint.get(e), Mapping)]
        fix = f'pass --weights {present[0]} to convert the "{kind.entries[present[0]]}" weights ' \
              'it holds' if present else "pass one of the authors' releases"
        raise InputError(f'{source} has no "{entry}" weights ({len(checkpoint)} top-level '
                         f'entries: {examples(map(str, checkpoint), 5)}); {fix}')
    return entry


def read_source(path: str | os.PathLike, weights: str = 'model',
                unsafe_full_unpickle: bool = False) -> Source:
    """Reads a released file and recognizes its kind from its content.

    Args:
        path: The file.
        weights: ``'model'`` or ``'ema'`` (where the file has EMA weights).
        unsafe_full_unpickle: Unpickle arbitrary objects (trusted files only).

    Raises:
        InputError: Unreadable, none of the releases, or without the chosen weights.
    """
    if weights not in WEIGHT_CHOICES:
        raise InputError(f'weights must be one of {WEIGHT_CHOICES}, got {weights!r}')
    source = str(path)
    if is_torchscript(path):
        kind = KINDS['fused']
        if weights != 'model':
            _chosen_weights({}, kind, weights, source)  # says that the file has no EMA
        state, eps = read_torchscript(path)
        return Source(source, kind, state, bn_eps=eps)
    checkpoint = read_checkpoint(path, unsafe_full_unpickle=unsafe_full_unpickle,
                                 unsafe_hint=UNSAFE_FLAG)
    if not isinstance(checkpoint, Mapping):
        raise InputError(f'{source} holds a {type(checkpoint).__name__}, not a checkpoint dict; '
                         "pass one of the authors' releases")
    kind = _kind_of(checkpoint, source)
    if kind is None:  # bare classifier weights
        if weights != 'model':
            raise InputError(f'{source} holds the weights alone, no EMA; drop --weights ema')
        return Source(source, KINDS['imagenet'], _strip_ddp(checkpoint))
    entry = _chosen_weights(checkpoint, kind, weights, source)
    others = {e: c for c, e in kind.entries.items() if e != entry}
    left_out = {str(key): (f'{"EMA" if others[key] == "ema" else "raw"} weights, not chosen '
                           f'(--weights {others[key]} converts them)' if key in others
                           else LEFT_OUT.get(key, 'not model weights'))
                for key in checkpoint if key != entry}
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), Mapping) else {}
    info = {name: value for name, value, kind_of_value in (
        ('epoch', checkpoint.get('epoch', meta.get('epoch')), int),
        ('iter', meta.get('iter'), int),
        ('classes', meta.get('CLASSES'), (list, tuple)),
        ('palette', meta.get('PALETTE'), (list, tuple))) if isinstance(value, kind_of_value)}
    return Source(source, kind, _strip_ddp(checkpoint[entry]), entry, left_out, info)
