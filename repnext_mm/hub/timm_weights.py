"""The authors' ImageNet releases as weights of a timm RepNeXt model, through the release converter.

Two ways in, as timm offers them:

- :func:`checkpoint_filter_fn`, timm's ``pretrained_filter_fn``: timm has loaded the file (the
  tag's URL or ``pretrained_cfg['file']``) with ``torch.load(weights_only=True)`` and then adapts
  the input convolution and the classifier itself;
- :func:`load_release`, behind ``RepNeXtTimm.load_pretrained`` (timm calls it for
  ``pretrained_cfg_overlay=dict(file=..., custom_load=True)``): the converter reads the file,
  which also reads the fused TorchScript release (``torch.load`` refuses TorchScript under
  ``weights_only``).

Either way the file is recognized and renamed by :mod:`repnext_mm.deploy.convert` and fitted to
the model: fused for a fused model, without the head's entries where the class count differs.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from torch import Tensor, nn

from repnext_mm.apis.checkpoint import read_checkpoint
from repnext_mm.deploy.convert.common import examples
from repnext_mm.deploy.convert.fused import is_torchscript
from repnext_mm.deploy.convert.keys import AUTHOR_STEM_KEY, OUR_STEM_KEY
from repnext_mm.deploy.convert.official import convert_source
from repnext_mm.deploy.convert.source import KINDS, Source, read_source
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.utils.reparameterize import switch_to_deploy_all
from repnext_mm.utils.errors import InputError
from .weights import fetch_checked

HEAD = 'head.'


def loaded_source(checkpoint: Mapping[str, Any], where: str) -> Source:
    """A checkpoint timm has loaded (from a URL, or passed in memory) as a release the converter
    knows: the authors' file as saved (raw weights under ``model``, or timm's ``state_dict``),
    or those weights alone.

    Raises:
        InputError: None of the authors' ImageNet releases.
    """
    if AUTHOR_STEM_KEY in checkpoint:
        return Source(where, KINDS['imagenet'], dict(checkpoint))
    for kind in (KINDS['imagenet'], KINDS['timm']):
        entry = kind.entries['model']
        weights = checkpoint.get(entry)
        if isinstance(weights, Mapping) and AUTHOR_STEM_KEY in weights:
            return Source(where, kind, dict(weights), entry)
    if OUR_STEM_KEY in checkpoint:
        raise InputError(f'{where} is already in the repnext_mm layout; load it with '
                         "model.load_state_dict(...) instead of as timm's pretrained weights")
    raise InputError(f"{where} is none of the authors' RepNeXt ImageNet releases (entries: "
                     f'{examples(map(str, checkpoint), 5) or "none"})')


def release_weights(source: Source, model: nn.Module) -> dict[str, Tensor]:
    """A release's weights under ``model``'s names: renamed by the converter, fused for a fused
    model, head entries left out where ``model`` has no head or another class count.

    Args:
        source: The release, read (:func:`~repnext_mm.deploy.convert.source.read_source` or
            :func:`loaded_source`).
        model: A ``RepNeXtTimm``.

    Raises:
        InputError: Another arch, or the fused release for a training-form model (which cannot
            be unfused).
    """
    backbone = model.backbone
    arch = RepNeXt.arch_name(backbone.arch['widths'], backbone.arch['depths']) or 'auto'
    if source.kind.name == 'fused' and not backbone.deploy:
        raise InputError(f'{source.path} is {source.kind.found}, which loads only into a fused '
                         'model: create it with deploy=True')
    result = convert_source(source, 'model', arch)
    weights = result.state_dict
    if backbone.deploy and source.kind.name != 'fused':
        # A training-form twin of the model fuses them exactly as model.reparameterize() would.
        twin = type(model)(result.arch, num_classes=result.num_classes or 0)
        twin.load_state_dict(weights)
        switch_to_deploy_all(twin)
        weights = twin.state_dict()
    expected = model.state_dict()
    return {key: value for key, value in weights.items()
            if not key.startswith(HEAD) or (key in expected
                                            and expected[key].shape == value.shape)}


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, Tensor]:
    """timm's ``pretrained_filter_fn``: any of the authors' ImageNet releases as ``model``'s
    state dict (see :func:`release_weights`).

    Args:
        state_dict: What timm loaded. From a URL: the whole file as saved. From a local file
            (``pretrained_cfg['file']``) it is not used: timm picks a file's EMA weights where
            it has them, the authors evaluated the raw ones, so the converter reads the file
            again and takes those.
        model: The ``RepNeXtTimm`` being built.

    Raises:
        InputError: Not one of the releases, another arch, or the fused release for a
            training-form model.
    """
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    if cfg.get('file') and cfg.get('state_dict') is None:
        source = read_source(cfg['file'])
    else:
        source = loaded_source(state_dict, str(cfg.get('url') or 'the pretrained state dict'))
    return release_weights(source, model)


def load_release(model: nn.Module, path: str | os.PathLike) -> None:
    """Loads a release file into ``model`` (timm's ``custom_load``): every kind, the fused
    TorchScript classifier too; only a classifier of another class count stays as it is.

    Raises:
        InputError: As :func:`release_weights`, or a file that is none of the releases.
    """
    weights = release_weights(read_source(path), model)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    wrong = [key for key in missing if not key.startswith(HEAD)] + list(unexpected)
    if wrong:
        raise InputError(f'{path} does not fit the model: {examples(wrong)}')


def prepare_pretrained(name: str, kwargs: dict[str, Any]) -> None:
    """Checks the pretrained file of ``timm.create_model(name, pretrained=True, **kwargs)``
    before timm reads it, so that a bad one is one :class:`InputError` naming it and the fix.

    timm reads a file or an address with ``torch.load(weights_only=True)``: a TorchScript file
    (the fused release), a file that is no checkpoint, or a web page or a cut-short download
    would each be torch's raw error (and timm would cache the bad download). Here:

    - an address is downloaded with the release's checks (:func:`~.weights.fetch_checked`:
      nothing but a recognized release is cached) and then read as a file;
    - a TorchScript file is read by :func:`load_release` (timm's ``custom_load``), which loads it
      into a fused model and says how to build one otherwise;
    - any other file must read safely and be one of the releases.

    Args:
        name: The timm model name (``repnext_m0``).
        kwargs: ``create_model``'s keywords; ``pretrained_cfg_overlay`` is completed in place.
    """
    from timm.models._builder import resolve_pretrained_cfg

    cfg = resolve_pretrained_cfg(name, pretrained_cfg=kwargs.get('pretrained_cfg'),
                                 pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
    if cfg.state_dict is not None:
        return
    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    path = cfg.file
    if not path and cfg.url:
        path = str(fetch_checked(cfg.url))
        overlay['file'] = path
    if not path:
        return
    if not os.path.isfile(path):
        what = 'is a folder' if os.path.isdir(path) else 'does not exist'
        raise InputError(f'pretrained file {path} {what}; pass one of the authors\' release files '
                         "(pretrained_cfg_overlay=dict(file=PATH))")
    if is_torchscript(path):
        overlay['custom_load'] = True
    elif not overlay.get('custom_load'):
        loaded_source(read_checkpoint(path, mmap=True), path)  # readable, and a release
    kwargs['pretrained_cfg_overlay'] = overlay
