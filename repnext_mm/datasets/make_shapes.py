"""Writes the synthetic "shapes" data set in real COCO, ADE20K and ImageNet layouts.

Small enough for CPU training tests, real enough that the unmodified OpenMMLab loaders read it::

    data/shapes/
      coco/{train,val}/000000.png ...            COCO instances (polygons and RLE, visible parts)
      coco/annotations/instances_{train,val}.json
      ade/images/{training,validation}/*.jpg     ADE20K style: uint8 PNG labels,
      ade/annotations/{training,validation}/*.png  0 = background (reduce_zero_label=True), 1..K
      imagenet/{train,val}/<class>/*.png         one dominant shape per image (CustomDataset)
      manifest.json                              written last: parameters + file counts

The classes are :data:`repnext_mm.datasets.shapes.CLASSES` in label order (COCO ids and ADE
labels from 1, ImageNet-style labels from 0). A second call with the same parameters finds the
manifest and returns at once; other parameters (or a missing file) regenerate the data. The same
seed gives byte-identical files (given the same numpy, OpenCV and pycocotools versions).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write_bytes, check_output_dir
from .coco_encoding import coco_annotations, coco_categories
from .shapes import CLASSES, render_scene, render_single, semantic_map

# Bump whenever the pixels or annotations a given spec produces change, so old data regenerates.
GENERATOR_VERSION = 3
MANIFEST_NAME = 'manifest.json'
LOCK_NAME = '.make_shapes.lock'
SUBSETS = ('coco', 'ade', 'imagenet')
# Seed-sequence keys that give every (data set, split, image) its own random stream: an image
# depends only on the seed and its own index, never on how many images came before it.
DATASET_KEYS = {'coco': 1, 'ade': 2, 'imagenet': 3}
SPLIT_KEYS = {'train': 0, 'val': 1}
ADE_SPLITS = {'train': 'training', 'val': 'validation'}

Tick = Callable[[], None]


@dataclass(frozen=True)
class ShapesSpec:
    """Parameters that determine the generated data (all of them are in the manifest).

    Args:
        seed: Random seed; the same spec gives byte-identical files.
        num_train: Training images per data set (COCO, ADE, ImageNet each).
        num_val: Validation images per data set.
        img_size: Side of the COCO and ADE images (square).
        cls_img_size: Side of the ImageNet-style classification images.

    Raises:
        InputError: A value out of range (the message names the command line option).
    """

    seed: int = 0
    num_train: int = 200
    num_val: int = 50
    img_size: int = 128
    cls_img_size: int = 64

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise InputError(f'--seed must be >= 0, got {self.seed}')
        if self.num_train < 1 or self.num_val < 1:
            raise InputError(f'--num-train and --num-val must be >= 1, got {self.num_train} and '
                             f'{self.num_val}')
        if self.img_size < 32 or self.cls_img_size < 32:
            raise InputError(f'--img-size and --cls-img-size must be >= 32 pixels (shapes need '
                             f'room), got {self.img_size} and {self.cls_img_size}')

    def count(self, split: str) -> int:
        """Images per data set in ``split`` (``'train'`` or ``'val'``)."""
        return self.num_train if split == 'train' else self.num_val


def image_rng(spec: ShapesSpec, dataset: str, split: str, index: int) -> np.random.Generator:
    """The random stream of one image: depends on the seed and the image's own key only."""
    return np.random.default_rng([spec.seed, DATASET_KEYS[dataset], SPLIT_KEYS[split], index])


def imagenet_label(index: int) -> int:
    """Class of the ``index``-th classification image: classes in turn, so they are balanced."""
    return index % len(CLASSES)


def expected_files(spec: ShapesSpec) -> Iterator[str]:
    """Every file (relative to the root) that a complete data set of ``spec`` holds."""
    for split in SPLIT_KEYS:
        yield f'coco/annotations/instances_{split}.json'
        for index in range(spec.count(split)):
            yield f'coco/{split}/{index:06d}.png'
            yield f'ade/images/{ADE_SPLITS[split]}/{index:06d}.jpg'
            yield f'ade/annotations/{ADE_SPLITS[split]}/{index:06d}.png'
            yield f'imagenet/{split}/{CLASSES[imagenet_label(index)]}/{index:06d}.png'


def read_manifest(root: Path) -> dict | None:
    """The manifest under ``root``, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_up_to_date(root: Path, spec: ShapesSpec) -> bool:
    """Whether ``root`` holds a complete data set generated from ``spec`` by this generator."""
    manifest = read_manifest(root)
    if manifest is None or manifest.get('generator_version') != GENERATOR_VERSION:
        return False
    if manifest.get('spec') != asdict(spec) or manifest.get('classes') != list(CLASSES):
        return False
    return all((root / name).is_file() for name in expected_files(spec))


def _check_root_is_ours(root: Path, force: bool) -> None:
    """Refuses to delete folders under a non-empty root this tool never wrote to, unless forced.

    The lock file marks a root as this tool's from its first run on (the manifest only exists
    once a run completes), so an interrupted run is simply redone.
    """
    if (not root.exists() or force or (root / LOCK_NAME).exists()
            or (root / MANIFEST_NAME).exists() or not any(root.iterdir())):
        return
    raise InputError(
        f'{root} already holds files this tool did not write (found '
        f'{sorted(p.name for p in root.iterdir())[:5]}); generating would replace its '
        f'{", ".join(SUBSETS)} folders. Pass --force to do it anyway, or choose another --root.')


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    """PNG (lossless) or JPEG (quality 95) bytes of an RGB or single-channel uint8 image."""
    array = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = ([cv2.IMWRITE_JPEG_QUALITY, 95] if suffix == '.jpg'
              else [cv2.IMWRITE_PNG_COMPRESSION, 3])
    ok, buffer = cv2.imencode(suffix, array, params)
    if not ok:  # pragma: no cover - only for an unsupported suffix or a broken OpenCV build
        raise RuntimeError(f'OpenCV could not encode a {array.shape} image as {suffix}')
    return buffer.tobytes()


def _write(data: bytes, path: Path) -> None:
    # Without fsync: a data set that is regenerated in seconds does not need each of its ~1000
    # files on disk before the next (fsync doubled the generation time); the atomic rename
    # still means a reader never sees a half-written file.
    atomic_write_bytes(data, path, fsync=False)


def _write_json(obj: Any, path: Path) -> None:
    # Compact with sorted keys: identical inputs give identical bytes.
    _write(json.dumps(obj, sort_keys=True, separators=(',', ':')).encode(), path)


def write_coco_split(root: Path, spec: ShapesSpec, split: str, tick: Tick) -> None:
    """Writes the COCO images of ``split`` and then their instances JSON."""
    images, annotations = [], []
    for index in range(spec.count(split)):
        rng = image_rng(spec, 'coco', split, index)
        image, instance_map, objects = render_scene(rng, spec.img_size)
        file_name = f'{index:06d}.png'
        _write(encode_image(image, '.png'), root / 'coco' / split / file_name)
        images.append({'id': index, 'file_name': file_name, 'height': spec.img_size,
                       'width': spec.img_size})
        annotations += coco_annotations(instance_map, objects, rng, image_id=index,
                                        first_ann_id=len(annotations) + 1)
        tick()
    coco = {
        'info': {'description': f'synthetic shapes ({split}), seed {spec.seed}',
                 'version': str(GENERATOR_VERSION)},
        'licenses': [],
        'images': images,
        'annotations': annotations,
        'categories': coco_categories(),
    }
    _write_json(coco, root / 'coco' / 'annotations' / f'instances_{split}.json')


def write_ade_split(root: Path, spec: ShapesSpec, split: str, tick: Tick) -> None:
    """Writes the ADE20K-style images and label maps of ``split``."""
    folder = ADE_SPLITS[split]
    for index in range(spec.count(split)):
        rng = image_rng(spec, 'ade', split, index)
        image, instance_map, objects = render_scene(rng, spec.img_size)
        labels = semantic_map(instance_map, objects)
        _write(encode_image(image, '.jpg'),
                           root / 'ade' / 'images' / folder / f'{index:06d}.jpg')
        _write(encode_image(labels, '.png'),
                           root / 'ade' / 'annotations' / folder / f'{index:06d}.png')
        tick()


def write_imagenet_split(root: Path, spec: ShapesSpec, split: str, tick: Tick) -> None:
    """Writes the ImageNet-style class folders of ``split``."""
    for index in range(spec.count(split)):
        label = imagenet_label(index)
        rng = image_rng(spec, 'imagenet', split, index)
        image, _ = render_single(rng, spec.cls_img_size, label)
        path = root / 'imagenet' / split / CLASSES[label] / f'{index:06d}.png'
        _write(encode_image(image, '.png'), path)
        tick()


def make_shapes(root: str | Path = 'data/shapes', spec: ShapesSpec | None = None,
                force: bool = False, progress: bool = True) -> bool:
    """Generates the data set under ``root`` unless an identical one is already there.

    Args:
        root: Output folder.
        spec: Generation parameters (defaults: :class:`ShapesSpec`).
        force: Regenerate even if up to date, and allow replacing folders under a root that
            has no manifest.
        progress: Show a progress bar.

    Returns:
        True if files were written, False if the data were already up to date.

    Raises:
        InputError: ``root`` is a file, lies under one or cannot be written (checked only when
            there is something to write: an up-to-date root may be read-only), or holds files
            this generator did not write (and ``force`` is false).
    """
    root = Path(root)
    spec = spec or ShapesSpec()
    if not force and is_up_to_date(root, spec):
        return False
    check_output_dir(root, '--root')
    _check_root_is_ours(root, force)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / LOCK_NAME):
        # Another process (a parallel test, another training job) may have generated the same
        # data while this one waited for the lock.
        if not force and is_up_to_date(root, spec):
            return False
        _generate(root, spec, progress)
    return True


def _generate(root: Path, spec: ShapesSpec, progress: bool) -> None:
    # The manifest goes first and comes back last: an interrupted run leaves none, so the next
    # run regenerates instead of trusting half-written data. Old folders go so that a smaller
    # spec leaves no stale images behind for the folder-scanning loaders.
    (root / MANIFEST_NAME).unlink(missing_ok=True)
    for name in SUBSETS:
        shutil.rmtree(root / name, ignore_errors=True)

    total = len(SUBSETS) * (spec.num_train + spec.num_val)
    tick = _progress_bar(total) if progress else (lambda: None)
    started = time.perf_counter()
    for split in SPLIT_KEYS:
        write_coco_split(root, spec, split, tick)
        write_ade_split(root, spec, split, tick)
        write_imagenet_split(root, spec, split, tick)
    manifest = {
        'generator_version': GENERATOR_VERSION,
        'spec': asdict(spec),
        'classes': list(CLASSES),
        'num_files': sum(1 for _ in expected_files(spec)),
    }
    _write_json(manifest, root / MANIFEST_NAME)
    if progress:
        print(f'\nwrote {manifest["num_files"]} files to {root} in '
              f'{time.perf_counter() - started:.1f} s')


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``path`` (blocking); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no concurrent generation guard
        yield
        return
    with open(path, 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _progress_bar(total: int) -> Tick:
    from mmengine.utils import ProgressBar

    bar = ProgressBar(total)
    return bar.update
