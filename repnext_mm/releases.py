"""The authors' released files (github suous/RepNeXt, release v1.0), listed once.

File names and download addresses of every release, and for the ImageNet classifiers what each
file holds and how the authors evaluated it, read off their repository: ``README.md``, the
DeiT-style ``main.py`` / ``data/datasets.py`` (the paper's recipe, after RepViT) and the timm
``moganet_train.py`` / ``moganet_valid.py`` runs of the StarNet recipe
(``logs/strategy/*_args.yaml``). The timm registration (:mod:`repnext_mm.hub.timm_models`) builds
its pretrained configs from :data:`IMAGENET`; the model zoo can name the files from here too.

Nothing here imports the rest of the package.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

#: Where every file of the release can be downloaded (``RELEASE_URL + file name``).
RELEASE_URL = 'https://github.com/suous/RepNeXt/releases/download/v1.0/'
#: Environment variable naming another folder that serves the release's files under their own
#: names (a mirror; the tests' local server): :func:`release_base_url`, the only reader.
RELEASE_URL_ENV = 'REPNEXT_RELEASE_URL'
ORIGIN_URL = 'https://github.com/suous/RepNeXt'
#: The license of the authors' repository and weights.
LICENSE = 'apache-2.0'
PAPER_ID = 'arXiv:2406.16004'

#: File name patterns (``{arch}``: ``'m0'`` .. ``'m5'``) and the archs each was released for.
DISTILL_300E = 'repnext_{arch}_distill_300e.pth'
FUSED_300E = 'repnext_{arch}_distill_300e_fused.pt'
COREML_300E = 'repnext_{arch}_distill_300e_224.mlmodel'
STARNET_300E = 'repnext_{arch}_sz224_4xbs512_ep300.pth.tar'
STARNET_DISTILL_300E = 'repnext_{arch}_sz224_4xbs256_ep300_distill.pth.tar'
COCO_MASK_RCNN = 'repnext_{arch}_coco.pth'
ADE20K_SEMANTIC_FPN = 'repnext_{arch}_ade20k.pth'
CLASSIFIER_ARCHS = ('m0', 'm1', 'm2', 'm3', 'm4', 'm5')
STARNET_ARCHS = ('m0', 'm1', 'm2')
DOWNSTREAM_ARCHS = ('m3', 'm4', 'm5')
#: Every released checkpoint (the Core ML models are not checkpoints), by file name.
CHECKPOINT_FILES: tuple[str, ...] = (
    *(pattern.format(arch=arch) for pattern in (DISTILL_300E, FUSED_300E)
      for arch in CLASSIFIER_ARCHS),
    *(pattern.format(arch=arch) for pattern in (STARNET_300E, STARNET_DISTILL_300E)
      for arch in STARNET_ARCHS),
    *(pattern.format(arch=arch) for pattern in (COCO_MASK_RCNN, ADE20K_SEMANTIC_FPN)
      for arch in DOWNSTREAM_ARCHS),
)

#: The two ImageNet-1K training recipes of the release.
#: ``'repvit'``: the paper's, DeiT-style ``main.py`` (RepViT's recipe), weights under ``model``;
#: evaluated at 224 after a bicubic resize to 256 (crop 0.875), ImageNet mean / std.
#: ``'starnet'``: timm's ``train.py`` with StarNet's recipe (no EMA), weights under
#: ``state_dict``; evaluated with ``moganet_valid.py``: crop 0.9, the bicubic default.
RECIPES = ('repvit', 'starnet')


@dataclass(frozen=True)
class ImageNetRelease:
    """One released ImageNet-1K classifier (1000 classes, 224x224, both heads of the paper).

    Attributes:
        arch: RepNeXt arch (``'m0'`` .. ``'m5'``).
        filename: The released file.
        recipe: ``'repvit'`` or ``'starnet'`` (:data:`RECIPES`).
        distilled: Trained with hard distillation from RegNetY-16GF.
        top1: ImageNet-1K top-1 (%) as the authors' README reports it for this file.
        top5: Top-5 (%) where the README reports it.
        crop_pct: Centre-crop fraction of the authors' evaluation.
        interpolation: Resize interpolation of the authors' evaluation.
    """

    arch: str
    filename: str
    recipe: str
    distilled: bool
    top1: float
    top5: float | None = None
    crop_pct: float = 0.875
    interpolation: str = 'bicubic'

    @property
    def url(self) -> str:
        return release_url(self.filename)

    @property
    def tag(self) -> str:
        """timm's pretrained tag (``repnext_m4.<tag>``): ``dist_300e_in1k`` for the paper's
        recipe, ``starnet_300e_in1k`` / ``starnet_dist_300e_in1k`` for StarNet's."""
        recipe = 'starnet_' if self.recipe == 'starnet' else ''
        return f'{recipe}{"dist_" if self.distilled else ""}300e_in1k'


def _repvit(arch: str, top1: float) -> ImageNetRelease:
    return ImageNetRelease(arch, DISTILL_300E.format(arch=arch), 'repvit', True, top1)


def _starnet(arch: str, distilled: bool, top1: float, top5: float) -> ImageNetRelease:
    name = STARNET_DISTILL_300E if distilled else STARNET_300E
    return ImageNetRelease(arch, name.format(arch=arch), 'starnet', distilled, top1, top5,
                           crop_pct=0.9)


#: Every released ImageNet-1K classifier, the paper's recipe first for each arch.
IMAGENET: tuple[ImageNetRelease, ...] = (
    _repvit('m0', 74.2), _starnet('m0', False, 73.8, 91.6), _starnet('m0', True, 75.4, 92.1),
    _repvit('m1', 78.8), _starnet('m1', False, 77.9, 94.0), _starnet('m1', True, 79.7, 94.5),
    _repvit('m2', 80.1), _starnet('m2', False, 78.8, 94.5), _starnet('m2', True, 80.6, 95.1),
    _repvit('m3', 80.7),
    _repvit('m4', 82.3),
    _repvit('m5', 83.3),
)


def release_base_url() -> str:
    """The folder the release is downloaded from: :data:`RELEASE_URL`, or the address in the
    environment variable :data:`RELEASE_URL_ENV` (read here only) where it is set."""
    base = os.environ.get(RELEASE_URL_ENV) or RELEASE_URL
    return base if base.endswith('/') else base + '/'


def release_url(filename: str) -> str:
    """The download address of a released file (:func:`release_base_url` + ``filename``)."""
    return release_base_url() + filename


def imagenet_release(filename: str) -> ImageNetRelease | None:
    """The ImageNet classifier released under ``filename`` (a name or an address), if any."""
    name = filename.rsplit('/', 1)[-1]
    return next((release for release in IMAGENET if release.filename == name), None)
