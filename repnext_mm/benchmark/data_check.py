"""How long the data checks take: a generated COCO-layout set, the quick pass and the full pass.

The quick pass is what ``tools/train.py`` and ``tools/test.py`` run before every run (the
annotation JSON parsed, then ``stat`` and the first bytes of each image); its file part is also
timed with ``stat`` alone, to show what the header sniff costs. The full pass is
``tools/misc/verify_dataset.py``'s (every image decoded, in parallel processes). The files are
read from the page cache (they were just written): on a cold disk both passes wait for it.
"""
from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from repnext_mm.datasets.checks import DataFile, find_problems, list_dataset_files
from repnext_mm.datasets.verify import decode_all, default_workers

CLASSES = ('circle', 'square')


def make_coco_set(root: Path, count: int, size: int = 128, seed: int = 0) -> dict:
    """Writes ``count`` JPEGs (``size`` pixels square, each different) and their COCO JSON.

    Returns:
        The mmdet dataset config that reads them.
    """
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    (root / 'images').mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        name = f'{index:06d}.jpg'
        image = np.roll(base, index, axis=1)  # a different picture per file, cheaply
        ok, data = cv2.imencode('.jpg', image)
        assert ok
        (root / 'images' / name).write_bytes(data.tobytes())
        images.append(dict(id=index, file_name=name, height=size, width=size))
        annotations.append(dict(id=index, image_id=index, category_id=1 + index % 2, iscrowd=0,
                                bbox=[8, 8, 32, 32], area=1024,
                                segmentation=[[8, 8, 40, 8, 40, 40, 8, 40]]))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    (root / 'annotations.json').write_text(
        json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return dict(type='CocoDataset', data_root=str(root), ann_file='annotations.json',
                data_prefix=dict(img='images/'), metainfo=dict(classes=CLASSES))


@dataclass
class DataCheckTimes:
    """Seconds of each part of the passes over :attr:`files` files (the quick parts: the best of
    :data:`REPEATS`, as they are short and the machine's load jitters)."""
    files: int
    listing: float
    stat_only: float
    quick: float
    full: float
    workers: int

    def rows(self) -> list[tuple[str, float]]:
        return [('annotation JSON parsed, files listed', self.listing),
                ('each file stat-ed (existence, type, size)', self.stat_only),
                ('each file stat-ed + first 16 bytes (the quick check)', self.quick),
                ('quick pass in all (listing + quick check)', self.listing + self.quick),
                (f'full pass: every file decoded, {self.workers} processes', self.full)]


REPEATS = 3


def _best_time(function: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float('inf'), None
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def _stat_problems(files: list[DataFile]) -> list[DataFile]:
    bad = []
    for file in files:
        try:
            info = os.stat(file.path)
        except OSError:
            bad.append(file)
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            bad.append(file)
    return bad


def time_data_checks(root: Path, count: int, workers: int | None = None,
                     progress: bool = False) -> DataCheckTimes:
    """Generates the set under ``root`` and times the passes over it."""
    dataset = make_coco_set(root, count)
    workers = workers or default_workers()
    list_dataset_files(dataset, 'dataset', 'mmdet')  # imports mmdet's datasets: not timed
    listing, listed = _best_time(lambda: list_dataset_files(dataset, 'dataset', 'mmdet'))
    stat_only, bad = _best_time(lambda: _stat_problems(listed.files))
    quick, problems = _best_time(lambda: find_problems(listed.files))
    started = time.perf_counter()
    decoded = decode_all(listed.files, workers, progress=progress)
    full = time.perf_counter() - started
    if bad or problems or decoded:
        raise RuntimeError(f'the generated set has bad files: {(bad + problems + decoded)[:3]}')
    return DataCheckTimes(len(listed.files), listing, stat_only, quick, full, workers)


def format_times(times: DataCheckTimes) -> str:
    lines = [f'{times.files} images (COCO layout, 128x128 JPEG, page cache warm)']
    for name, seconds in times.rows():
        lines.append(f'  {name:<55} {seconds:7.2f} s  {times.files / seconds:9.0f} images/s')
    return '\n'.join(lines)
