"""RepNeXt in timm: ``repnext_m0`` .. ``repnext_m5`` with the authors' ImageNet weights.

Importing this module (``import repnext_mm`` does when timm is installed) registers the six
archs with ``timm.models.register_model``. Each builds :class:`~.timm_classifier.RepNeXtTimm`,
the package's one RepNeXt backbone and classifier head, and every file of the authors' ImageNet
release (:data:`repnext_mm.releases.IMAGENET`) is a pretrained tag, ``arch.tag`` as timm names
them:

- ``dist_300e_in1k`` (every arch's default): the paper's recipe, ``repnext_mX_distill_300e.pth``;
- ``starnet_300e_in1k`` / ``starnet_dist_300e_in1k`` (M0-M2): StarNet's recipe with timm's
  script, ``repnext_mX_sz224_4xbs512_ep300.pth.tar`` / ``..._4xbs256_ep300_distill.pth.tar``.

Each tag records how the authors evaluated that file (input size, crop, interpolation, mean and
std). Weights are read and renamed by the release converter (:mod:`repnext_mm.deploy.convert`,
through :mod:`.timm_weights`): ``pretrained=True`` downloads the tag's file (into torch hub's
``checkpoints`` folder), ``pretrained_cfg_overlay=dict(file=PATH)`` reads a local copy of any
ImageNet release, and ``dict(file=PATH, custom_load=True)`` also the fused TorchScript
classifier (into a model built with ``deploy=True``). Of a file with EMA weights the raw ones
are read, as the authors evaluated.

The archs take timm's standard model arguments, as timm's ``train.py``, ``validate.py`` and
``benchmark.py`` pass them: ``drop_rate``, ``drop_path_rate``, ``global_pool``,
``bn_momentum``, ``bn_eps``, ``drop_block_rate`` (0 only) and ``create_model``'s
``scriptable`` (see :class:`~.timm_classifier.RepNeXtTimm`; ``docs/timm.md``), and the
backbone's ``design`` (``timm.create_model('repnext_m1', design='no_srp')``: the paper's
ablation designs, untrained; pretrained weights are of the default ``'repnext'``).

``repnext_m0e`` .. ``repnext_m2e`` are the authors' single-branch equivalents M0E-M2E
(``design='single_branch'``: each token mixer one large depthwise kernel), without weights: the
authors released none.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_module
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from repnext_mm import releases
from repnext_mm.apis.checkpoint import checkpoint_allowed_types
from repnext_mm.models.backbones.repnext import RepDWConvM, RepDWConvS
from repnext_mm.paper import PAPER_TITLE
from .timm_classifier import RepNeXtTimm
from .timm_weights import checkpoint_filter_fn, prepare_pretrained

__all__ = ['RepNeXtTimm', 'checkpoint_filter_fn', 'default_cfgs']

#: The first convolution and the class-count-dependent layers, as timm's configs name them.
FIRST_CONV = 'backbone.stem.0.conv'
CLASSIFIER = ('head.head.linear', 'head.head_dist.linear')


def _cfg(release: releases.ImageNetRelease) -> dict[str, Any]:
    recipe = ("the paper's recipe (RepViT's, DeiT-style)" if release.recipe == 'repvit'
              else "StarNet's recipe (timm's training script)")
    distillation = ', hard distillation from RegNetY-16GF' if release.distilled else ''
    top5 = f', top-5 {release.top5}%' if release.top5 is not None else ''
    return dict(
        url=release.url, num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7),
        crop_pct=release.crop_pct, interpolation=release.interpolation,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv=FIRST_CONV, classifier=CLASSIFIER, license=releases.LICENSE,
        description=(f'RepNeXt-{release.arch.upper()}, ImageNet-1K, 300 epochs with {recipe}'
                     f'{distillation}; top-1 {release.top1}%{top5} (the authors\' README)'),
        paper_ids=releases.PAPER_ID, paper_name=PAPER_TITLE, origin_url=releases.ORIGIN_URL)


#: The archs of the authors' single-branch models (``repnext_{arch}e``).
SINGLE_BRANCH_ARCHS = ('m0', 'm1', 'm2')


def _single_branch_cfg(arch: str) -> dict[str, Any]:
    """No weights; evaluated as the StarNet-recipe release of the same arch (that recipe
    trained M0E-M2E)."""
    release = next(r for r in releases.IMAGENET if r.arch == arch and r.recipe == 'starnet')
    return dict(
        num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7),
        crop_pct=release.crop_pct, interpolation=release.interpolation,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv=FIRST_CONV, classifier=CLASSIFIER, license=releases.LICENSE,
        description=(f'RepNeXt-{arch.upper()}E, the single-branch equivalent of '
                     f'RepNeXt-{arch.upper()} (design="single_branch"); no released weights'),
        paper_ids=releases.PAPER_ID, paper_name=PAPER_TITLE, origin_url=releases.ORIGIN_URL)


default_cfgs = generate_default_cfgs({
    **{f'repnext_{release.arch}.{release.tag}': _cfg(release) for release in releases.IMAGENET},
    **{f'repnext_{arch}e': _single_branch_cfg(arch) for arch in SINGLE_BRANCH_ARCHS}})

# torch.fx (timm's feature extraction and graph tests) keeps the SRP convolutions whole: their
# merged training form builds its kernel with Python shape arithmetic, which fx cannot trace.
for _module in (RepDWConvS, RepDWConvM):
    register_notrace_module(_module)


# ----------------------------------------------------------------------------------------------
# The registered archs
# ----------------------------------------------------------------------------------------------
def _create(arch: str, pretrained: bool = False, **kwargs: Any) -> RepNeXtTimm:
    design = kwargs.get('design', 'repnext')
    if pretrained and design != 'repnext':
        raise ValueError(f"design={design!r}: the released weights are of design 'repnext'; "
                         f"build repnext_{arch} with pretrained=False or without design")
    if pretrained:  # the releases keep their training arguments, an argparse.Namespace
        torch.serialization.add_safe_globals(checkpoint_allowed_types())
        _fetch_checked(f'repnext_{arch}', kwargs)
    return build_model_with_cfg(
        RepNeXtTimm, f'repnext_{arch}', pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        arch=arch, **kwargs)


def _create_single_branch(arch: str, pretrained: bool = False, **kwargs: Any) -> RepNeXtTimm:
    name = f'repnext_{arch}e'
    if pretrained:
        raise ValueError(f'{name}: no pretrained weights exist (the authors released none for '
                         'M0E-M2E); use pretrained=False')
    if kwargs.setdefault('design', 'single_branch') != 'single_branch':
        raise ValueError(f"design={kwargs['design']!r}: {name} is design 'single_branch'; for "
                         f'another design build repnext_{arch}')
    return build_model_with_cfg(
        RepNeXtTimm, name, False, feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        arch=arch, **kwargs)


def _fetch_checked(name: str, kwargs: dict[str, Any]) -> None:
    """Downloads a release into torch hub's cache through the checked fetch before timm looks.

    timm's own download keeps a cut-short or HTML answer as the file and reports a 404 as a
    traceback; this one is one error line and caches only a recognized checkpoint, and timm then
    finds the file there by its name.
    """
    prepare_pretrained(name, kwargs)  # also checks files and other addresses


@register_model
def repnext_m0(pretrained: bool = False, **kwargs: Any) -> RepNeXtTimm:
    """RepNeXt-M0: widths 40-320, depths 2, 2, 9, 1."""
    return _create('m0', pretrained, **kwargs)


@register_model
def repnext_m1(pretrained: bool = False, **kwargs: Any) -> RepNeXtTimm:
    """RepNeXt-M1: widths 48-384, depths 3, 3, 15, 2."""
    return _create('m1', pretrained, **kwargs)


@register_model
def repnext_m2(pretrained: bool = False, **kwargs: Any) -> RepNeXtTimm:
    """RepNeXt-M2: widths 56-448, depths 3, 3, 15, 2."""
    return _create('m2', pretrained, **kwargs)


@register_model
def repnext_m3(pretrained: bool = False, **kwargs: Any) -> RepNeXtTimm:
    """RepNeXt-M3: widths 64-512, depths 3, 3, 13, 2."""
    return _create('m3', pretrained, **kwargs)


@register_model
def repnext_m4(pretrained: bool = False, **kwargs: Any) -> RepNeXtTimm:
    """RepNeXt-M4: widths 64-512, depths 5, 5, 25, 4."""
    return _create('m4', pretrained, **kwargs)


@register_model
def repnext_m5(pretrained: bool = False, **kwargs: Any) -> RepNeXtTimm:
    """RepNeXt-M5: widths 80-640, depths 7, 7, 35, 2."""
    return _create('m5', pretrained, **kwargs)


@register_model
def repnext_m0e(pretrained: bool = False, **kwargs: Any) -> RepNeXtTimm:
    """RepNeXt-M0E: M0 with single-branch token mixers (no released weights)."""
    return _create_single_branch('m0', pretrained, **kwargs)


@register_model
def repnext_m1e(pretrained: bool = False, **kwargs: Any) -> RepNeXtTimm:
    """RepNeXt-M1E: M1 with single-branch token mixers (no released weights)."""
    return _create_single_branch('m1', pretrained, **kwargs)


@register_model
def repnext_m2e(pretrained: bool = False, **kwargs: Any) -> RepNeXtTimm:
    """RepNeXt-M2E: M2 with single-branch token mixers (no released weights)."""
    return _create_single_branch('m2', pretrained, **kwargs)
