"""Fixtures shared by the deploy tests: the real shapes configs and "trained" checkpoints of them."""
from __future__ import annotations

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
