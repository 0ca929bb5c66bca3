"""The images an inference reads and the folder it writes: checked before any work, and outputs
that appear complete or not at all.

The Inferencers write their pictures and predictions straight into the folder they are given,
file by file; :func:`publish` lets them write into a private staging folder instead and then
moves each file into the output folder atomically (:mod:`repnext_mm.utils.fileio`), so a run
that fails leaves the output folder as it was.
"""
from __future__ import annotations

import os
from pathlib import Path

from repnext_mm.datasets.checks import quick_problem
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import IMAGE_SUFFIXES, atomic_write_bytes

SUFFIXES_TEXT = ', '.join(IMAGE_SUFFIXES)


def is_image(path: Path) -> bool:
    """Whether ``path`` names an image file by its suffix (:data:`IMAGE_SUFFIXES`, any case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith('.')


def collect_images(inputs: str | os.PathLike) -> list[Path]:
    """The images to run on: ``inputs`` itself, or the images directly inside the folder.

    As mmdet's ``image_demo.py``: a folder's images are read in name order, its subfolders are
    not.

    Raises:
        InputError: ``inputs`` does not exist, is a file that is not an image, or is a folder
            without images; an image is empty or does not start like an image.
    """
    path = Path(inputs)
    images = _list_images(path)
    _check_distinct_stems(images)
    _check_readable(images)
    return images


def _check_readable(images: list[Path]) -> None:
    """Every image is a non-empty file that starts like an image (the Inferencers would stop
    with a traceback at the first that OpenCV cannot read)."""
    for image in images:
        problem = quick_problem(str(image))
        if problem:
            raise InputError(f'input image {image} {problem}; replace it with an image, or '
                             'remove it from the inputs. Nothing was written.')


def _list_images(path: Path) -> list[Path]:
    if path.is_file():
        if not is_image(path):
            raise InputError(f'{path} is not an image ({SUFFIXES_TEXT}); pass an image or a '
                             'folder of images first, then the model (INPUTS MODEL)')
        return [path]
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and is_image(p))
        if not images:
            nested = any(is_image(p) for p in path.rglob('*') if p.is_file())
            hint = ' (only in its subfolders, which are not read: pass a subfolder)' if nested \
                else ''
            raise InputError(f'the folder {path} holds no images ({SUFFIXES_TEXT}){hint}; '
                             'pass an image or a folder of images')
        return images
    raise InputError(f'{path} does not exist (relative to {os.getcwd()}); pass an image or a '
                     'folder of images')


def _check_distinct_stems(images: list[Path]) -> None:
    """Prediction files are named after the image's stem: two images must not share one."""
    by_stem: dict[str, Path] = {}
    for image in images:
        other = by_stem.setdefault(image.stem, image)
        if other is not image:
            raise InputError(f'{other} and {image} share the name {image.stem!r}, so their '
                             'predictions would overwrite each other; rename one of them or run '
                             'them separately. Nothing was written.')


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """The output folder, checked before any work: it may exist (files are added or replaced).

    Raises:
        InputError: ``out_dir`` or one of its parents is a file.
    """
    path = Path(out_dir)
    for folder in (path, *path.parents):
        if folder.exists() and not folder.is_dir():
            what = 'is a file' if folder == path else f'is inside {folder}, which is a file'
            raise InputError(f'--out-dir {path} {what}; pass a folder (it is created if '
                             'missing). Nothing was written.')
    return path


def publish(staging: Path, out_dir: Path) -> list[Path]:
    """Moves every file under ``staging`` to the same place under ``out_dir``, each atomically.

    Returns:
        The written files, in name order.
    """
    written = []
    for source in sorted(p for p in staging.rglob('*') if p.is_file()):
        destination = out_dir / source.relative_to(staging)
        # Regenerable outputs: no fsync (as for a data set); the rename still makes each whole.
        written.append(atomic_write_bytes(source.read_bytes(), destination, fsync=False))
    return written
