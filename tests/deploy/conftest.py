"""Fixtures shared by the deploy tests: the real shapes configs and "trained" checkpoints of them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from repnext_mm.apis.model import build_model, load_model_config
from tests.helpers import randomize_norms

REPO = Path(__file__).resolve().parents[2]
CONFIGS = dict(
    classifier=REPO / 'configs/mmpretrain/repnext_m0_shapes.py',
    detector=REPO / 'configs/mmdet/mask_rcnn_repnext_m0_fpn_shapes.py',
    segmentor=REPO / 'configs/mmseg/fpn_repnext_m0_shapes.py',
)
# Input sizes for the checks: the shapes configs' image size (small, so the tests stay fast).
SHAPES = dict(classifier=(64, 64), detector=(128, 128), segmentor=(128, 128))


def save_trained_checkpoint(config: Path, path: Path, seed: int = 0) -> Path:
    """Saves a freshly built model as if trained: random BN statistics, a runner-like layout."""
    torch.manual_seed(seed)
    model = randomize_norms(build_model(load_model_config(config)), seed=seed)
    torch.save(dict(
        meta=dict(epoch=1, iter=10, dataset_meta=dict(classes=('circle', 'square', 'star', 'triangle'))),
        state_dict=model.state_dict(),
        optimizer=dict(state={}, param_groups=[dict(lr=1e-3)]),
    ), path)
    return path


@pytest.fixture(scope='session')
def trained_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A "trained" checkpoint per task, built lazily (each only when a test asks for it)."""
    root = tmp_path_factory.mktemp('trained')
    cache: dict[str, Path] = {}

    class Lazy(dict):
        def __missing__(self, task: str) -> Path:
            cache[task] = save_trained_checkpoint(CONFIGS[task], root / f'{task}.pth')
            self[task] = cache[task]
            return cache[task]

    return Lazy()


# ---------------------------------------------------------------------------------------------
# The authors' releases, RepNeXt-M0 in each published layout (tests/deploy/release_layout.py).
# ---------------------------------------------------------------------------------------------
@dataclass
class Release:
    """A file in one of the authors' published layouts.

    Attributes:
        path: The file; named ``checkpoint.pth`` whatever its kind (recognized by content).
        weights: The weights it was made from, in the authors' training-form names (for the
            detector and segmentor: the whole ``state_dict``).
    """
    path: Path
    weights: dict


def _release(kind: str, path: Path) -> Release:
    from .author_layout import author_checkpoint, author_state_dict
    from .release_layout import (AuthorFusedRepNext, detector_checkpoint, segmentor_checkpoint,
                                 timm_checkpoint)

    if kind == 'fused':
        weights = author_state_dict('m0', num_classes=10, seed=4)
        torch.jit.save(torch.jit.script(AuthorFusedRepNext.from_training(weights, 'm0')), path)
        return Release(path, weights)
    checkpoint = dict(imagenet=lambda: author_checkpoint('m0', num_classes=10, seed=1),
                      timm=lambda: timm_checkpoint('m0', num_classes=10, seed=2, ema=True),
                      detector=lambda: detector_checkpoint('m0', seed=3),
                      segmentor=lambda: segmentor_checkpoint('m0', seed=5))[kind]()
    torch.save(checkpoint, path)
    weights = checkpoint['model' if kind == 'imagenet' else 'state_dict']
    return Release(path, weights)


@pytest.fixture(scope='session')
def releases(tmp_path_factory) -> dict[str, Release]:
    """One file per released kind (imagenet, timm, detector, segmentor, fused), built lazily."""
    root = tmp_path_factory.mktemp('releases')

    class Lazy(dict):
        def __missing__(self, kind: str) -> Release:
            folder = root / kind
            folder.mkdir()
            self[kind] = _release(kind, folder / 'checkpoint.pth')
            return self[kind]

    return Lazy()
