"""Generates the synthetic "shapes" data set in real COCO, ADE20K and ImageNet layouts.

Small enough for CPU training tests, real enough that the unmodified OpenMMLab loaders read it::

    data/shapes/
      coco/{train,val}/000000.png ...            COCO instances (polygons and RLE, visible parts)
      coco/annotations/instances_{train,val}.json
      ade/images/{training,validation}/*.jpg     ADE20K style: uint8 PNG labels,
      ade/annotations/{training,validation}/*.png  0 = background (reduce_zero_label=True), 1..K
      imagenet/{train,val}/<class>/*.png         one dominant shape per image (CustomDataset)
      manifest.json                              written last: parameters + file counts

Classes (label order, alphabetical): circle, square, star, triangle (COCO ids 1..4, ADE labels
1..4, ImageNet-style labels 0..3 as folder-scanning loaders number them). Objects have random
textures, colour noise and rotations on random backgrounds with clutter lines; 80% of them take
their hue from a band of their class (red, blue, green, yellow), so that networks trained from
scratch learn within minutes on a CPU (see shapes_lib.CLASS_HUE_BANDS).

Usage::

    python tools/data/make_shapes.py                  # data/shapes, seed 0, 200 train / 50 val
    python tools/data/make_shapes.py --root /tmp/shapes --num-train 40 --num-val 10 --seed 3

A second run with the same parameters finds the manifest and returns at once; other parameters
(or a missing file) regenerate the data. The same seed gives byte-identical files (given the
same numpy, OpenCV and pycocotools versions).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

if __package__:  # imported as tools.data.make_shapes
    from . import shapes_lib as lib
else:  # run as a script or loaded from its path: the helper module sits beside this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import shapes_lib as lib

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


@dataclass(frozen=True)
class ShapesSpec:
    """Parameters that determine the generated data (all of them are in the manifest).

    Args:
        seed: Random seed; the same spec gives byte-identical files.
        num_train: Training images per data set (COCO, ADE, ImageNet each).
        num_val: Validation images per data set.
        img_size: Side of the COCO and ADE images (square).
        cls_img_size: Side of the ImageNet-style classification images.
    """

    seed: int = 0
    num_train: int = 200
    num_val: int = 50
    img_size: int = 128
    cls_img_size: int = 64

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f'--seed must be >= 0, got {self.seed}')
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError(f'--num-train and --num-val must be >= 1, got {self.num_train} and '
                             f'{self.num_val}')
        if self.img_size < 32 or self.cls_img_size < 32:
            raise ValueError(f'--img-size and --cls-img-size must be >= 32 pixels (shapes need '
                             f'room), got {self.img_size} and {self.cls_img_size}')

    def count(self, split: str) -> int:
        return self.num_train if split == 'train' else self.num_val


def image_rng(spec: ShapesSpec, dataset: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, DATASET_KEYS[dataset], SPLIT_KEYS[split], index])


def expected_files(spec: ShapesSpec) -> Iterator[str]:
    """Every file (relative to the root) that a complete data set of ``spec`` holds."""
    for split in SPLIT_KEYS:
        yield f'coco/annotations/instances_{split}.json'
        for index in range(spec.count(split)):
            yield f'coco/{split}/{index:06d}.png'
            yield f'ade/images/{ADE_SPLITS[split]}/{index:06d}.jpg'
            yield f'ade/annotations/{ADE_SPLITS[split]}/{index:06d}.png'
            yield f'imagenet/{split}/{lib.CLASSES[index % len(lib.CLASSES)]}/{index:06d}.png'


def read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_up_to_date(root: Path, spec: ShapesSpec) -> bool:
    """Whether ``root`` holds a complete data set generated from ``spec`` by this generator."""
    manifest = read_manifest(root)
    if manifest is None or manifest.get('generator_version') != GENERATOR_VERSION:
        return False
    if manifest.get('spec') != asdict(spec) or manifest.get('classes') != list(lib.CLASSES):
        return False
    return all((root / name).is_file() for name in expected_files(spec))


def _check_root_is_ours(root: Path, force: bool) -> None:
    """Refuses to delete folders under a non-empty root this tool never wrote to, unless --force.

    The lock file marks a root as this tool's from its first run on (the manifest only exists
    once a run completes), so an interrupted run is simply redone.
    """
    if (not root.exists() or force or (root / LOCK_NAME).exists()
            or (root / MANIFEST_NAME).exists() or not any(root.iterdir())):
        return
    raise FileExistsError(
        f'{root} already holds files this tool did not write (found '
        f'{sorted(p.name for p in root.iterdir())[:5]}); generating would replace its '
        f'{", ".join(SUBSETS)} folders. Pass --force to do it anyway, or choose another --root.')


def write_coco_split(root: Path, spec: ShapesSpec, split: str, tick: Callable[[], None]) -> None:
    images, annotations = [], []
    for index in range(spec.count(split)):
        rng = image_rng(spec, 'coco', split, index)
        image, instance_map, objects = lib.render_scene(rng, spec.img_size)
        file_name = f'{index:06d}.png'
        lib.atomic_write_bytes(root / 'coco' / split / file_name, lib.encode_image(image, '.png'))
        images.append({'id': index, 'file_name': file_name, 'height': spec.img_size,
                       'width': spec.img_size})
        annotations += lib.coco_annotations(instance_map, objects, rng, image_id=index,
                                            first_ann_id=len(annotations) + 1)
        tick()
    coco = {
        'info': {'description': f'synthetic shapes ({split}), seed {spec.seed}',
                 'version': str(GENERATOR_VERSION)},
        'licenses': [],
        'images': images,
        'annotations': annotations,
        'categories': [{'id': i + 1, 'name': name, 'supercategory': 'shape'}
                       for i, name in enumerate(lib.CLASSES)],
    }
    lib.atomic_write_json(root / 'coco' / 'annotations' / f'instances_{split}.json', coco)


def write_ade_split(root: Path, spec: ShapesSpec, split: str, tick: Callable[[], None]) -> None:
    folder = ADE_SPLITS[split]
    for index in range(spec.count(split)):
        rng = image_rng(spec, 'ade', split, index)
        image, instance_map, objects = lib.render_scene(rng, spec.img_size)
        labels = lib.semantic_map(instance_map, objects)
        lib.atomic_write_bytes(root / 'ade' / 'images' / folder / f'{index:06d}.jpg',
                               lib.encode_image(image, '.jpg'))
        lib.atomic_write_bytes(root / 'ade' / 'annotations' / folder / f'{index:06d}.png',
                               lib.encode_image(labels, '.png'))
        tick()


def write_imagenet_split(root: Path, spec: ShapesSpec, split: str,
                         tick: Callable[[], None]) -> None:
    for index in range(spec.count(split)):
        label = index % len(lib.CLASSES)  # balanced classes
        rng = image_rng(spec, 'imagenet', split, index)
        image, _ = lib.render_single(rng, spec.cls_img_size, label)
        path = root / 'imagenet' / split / lib.CLASSES[label] / f'{index:06d}.png'
        lib.atomic_write_bytes(path, lib.encode_image(image, '.png'))
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
    """
    root = Path(root)
    spec = spec or ShapesSpec()
    if not force and is_up_to_date(root, spec):
        return False
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

    total = 3 * (spec.num_train + spec.num_val)
    tick = _progress_bar(total) if progress else (lambda: None)
    started = time.perf_counter()
    for split in SPLIT_KEYS:
        write_coco_split(root, spec, split, tick)
        write_ade_split(root, spec, split, tick)
        write_imagenet_split(root, spec, split, tick)
    manifest = {
        'generator_version': GENERATOR_VERSION,
        'spec': asdict(spec),
        'classes': list(lib.CLASSES),
        'num_files': sum(1 for _ in expected_files(spec)),
    }
    lib.atomic_write_json(root / MANIFEST_NAME, manifest)
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


def _progress_bar(total: int) -> Callable[[], None]:
    from mmengine.utils import ProgressBar

    bar = ProgressBar(total)
    return bar.update


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ShapesSpec()
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--root', default='data/shapes', help='output folder')
    parser.add_argument('--seed', type=int, default=defaults.seed)
    parser.add_argument('--num-train', type=int, default=defaults.num_train,
                        help='training images per data set (COCO, ADE, ImageNet)')
    parser.add_argument('--num-val', type=int, default=defaults.num_val,
                        help='validation images per data set')
    parser.add_argument('--img-size', type=int, default=defaults.img_size,
                        help='side of the COCO and ADE images')
    parser.add_argument('--cls-img-size', type=int, default=defaults.cls_img_size,
                        help='side of the ImageNet-style images')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if up to date; allow replacing a foreign root')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = {f.name for f in fields(ShapesSpec)}
    try:
        spec = ShapesSpec(**{k: v for k, v in vars(args).items() if k in names})
        written = make_shapes(args.root, spec, force=args.force, progress=not args.quiet)
    except (ValueError, FileExistsError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if not written:
        print(f'{args.root} is up to date ({MANIFEST_NAME} matches); pass --force to regenerate')
    return 0


if __name__ == '__main__':
    sys.exit(main())
