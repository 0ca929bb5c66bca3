"""Learning tests: the shapes configs train on CPU and clearly beat their untrained models.

Each test builds MMEngine's Runner from the real config (the shapes variant of the M0 config,
which changes only data and schedule), measures the untrained model on the validation split,
trains, and measures again with the library's own metric (mmseg ``IoUMetric``, mmpretrain
``Accuracy``). Data come from repnext_mm/datasets/make_shapes.py (default spec, generated into a
temporary folder so that parallel runs never share files).

Measured on 2 shared CPU cores (one thread), seed 0:
  segmentation   mIoU  8.4 -> 50.5 after 150 iterations (about 2.5 min)
  classification top-1 40 -> 78 after 8 epochs (56 iterations, about 1 min)
An untrained model scores around chance (4 classes: top-1 ~25, mIoU ~10). The thresholds sit
far above chance yet well below what training reaches, so seed or platform noise cannot fail
them, while a pipeline that does not learn (wrong labels, no gradient, a broken backbone) does.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from repnext_mm.datasets.make_shapes import make_shapes
from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('one_cpu_thread')]

# mIoU (percent) that the trained segmentor must reach, and its minimum gain over untrained.
MIN_MIOU, MIN_MIOU_GAIN = 35.0, 20.0
# Top-1 (percent) that the trained classifier must reach, and its minimum gain over untrained.
MIN_TOP1, MIN_TOP1_GAIN = 60.0, 25.0


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('shapes')
    make_shapes(root, progress=False)
    return root


def shapes_config(name: str, data_root: Path, work_dir: Path) -> Config:
    cfg = Config.fromfile(str(REPO / 'configs' / name))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root)
    cfg.work_dir = str(work_dir)
    cfg.default_hooks.logger.interval = 25
    return cfg


def untrained_and_trained(cfg: Config, metric: str) -> tuple[float, float]:
    """Validates, trains (the loop validates once more at its end), returns both ``metric``s."""
    runner = Runner.from_cfg(cfg)
    before = runner.val()[metric]
    runner.train()
    # The train loop's final validation stores its metrics in the message hub as val/<name>.
    after = runner.message_hub.get_scalar(f'val/{metric}').current()
    return float(before), float(after)


def test_semantic_fpn_learns_shapes(shapes_root, tmp_path):
    cfg = shapes_config('mmseg/fpn_repnext_m0_shapes.py', shapes_root / 'ade', tmp_path)
    before, after = untrained_and_trained(cfg, 'mIoU')
    print(f'shapes segmentation mIoU: untrained {before:.2f}, trained {after:.2f}')
    assert after >= MIN_MIOU, (before, after)
    assert after - before >= MIN_MIOU_GAIN, (before, after)
    assert (tmp_path / f'iter_{cfg.train_cfg.max_iters}.pth').is_file()


def test_image_classifier_learns_shapes(shapes_root, tmp_path):
    cfg = shapes_config('mmpretrain/repnext_m0_shapes.py', shapes_root / 'imagenet', tmp_path)
    before, after = untrained_and_trained(cfg, 'accuracy/top1')
    print(f'shapes classification top-1: untrained {before:.1f}, trained {after:.1f}')
    assert after >= MIN_TOP1, (before, after)
    assert after - before >= MIN_TOP1_GAIN, (before, after)
    assert (tmp_path / f'epoch_{cfg.train_cfg.max_epochs}.pth').is_file()
