"""Small image folders for the int8 calibration tests (shared by tests/deploy and tests/tools)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from repnext_mm.datasets.shapes import CLASSES, render_single


def write_shape_images(folder: Path, count: int, size: int = 64, seed: int = 0) -> list[Path]:
    """``count`` shapes images in class folders (``folder/<class>/NNN.png``), classes in turn."""
    paths = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        label = index % len(CLASSES)
        image, _ = render_single(rng, size, label)
        path = folder / CLASSES[label] / f'{index:03d}.png'
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


@pytest.fixture(scope='session')
def shape_images(tmp_path_factory) -> dict[str, Path]:
    """``{'calib': 8 images, 'heldout': 8 other images}`` (64x64 shapes, class folders)."""
    root = tmp_path_factory.mktemp('shape_images')
    write_shape_images(root / 'calib', 8, seed=0)
    write_shape_images(root / 'heldout', 8, seed=1)
    return dict(calib=root / 'calib', heldout=root / 'heldout')
