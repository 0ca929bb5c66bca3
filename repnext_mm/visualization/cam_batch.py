"""Grad-CAM over image files and folders: the logic of ``tools/visualization/vis_cam.py``.

:func:`run_cam` checks the options, collects the images (:func:`collect_images`), decides where
each overlay goes (:func:`output_paths`) before the model is loaded, writes one overlay per image
and prints one line per image (:func:`describe`). In a batch, an image OpenCV cannot read is
skipped and reported (:func:`compute_overlays`, :func:`report_batch`) rather than costing the
maps of all the others; a run where no image could be read is an error.

Example:
    >>> run_cam(CAMRunSettings('configs/mmpretrain/repnext_m0_shapes.py', 'ckpt.pth',
    ...                        images=['images/'], out='vis_cam/'))
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from repnext_mm.utils.fileio import IMAGE_SUFFIXES
from .cam import (CAMError, CAMResult, CAMVisualizer, UnreadableImageError, all_layer_names,
                  cam_method_class, check_image_output, feature_layer_summary, load_image,
                  overlay, save_image)

#: Overlay folder when several images are given without ``out``.
DEFAULT_FOLDER = 'vis_cam'


@dataclass
class CAMRunSettings:
    """What ``tools/visualization/vis_cam.py`` computes (its command line options).

    Attributes:
        config: mmpretrain / mmdet / mmseg config.
        checkpoint: Training or fused checkpoint, or ``'none'`` (any case) for random weights.
        images: Image files, or folders whose images are all processed.
        target_layers: Layers the map is computed on (``None``: the last backbone stage).
        method: Grad-CAM method name (:data:`~repnext_mm.visualization.cam.METHODS`).
        target_category: Class (classifiers) or deepest-output channel (others) to explain.
        feature_score: Score of the deepest backbone output for non-classifiers.
        out: Output image for one input image, or a folder (see :func:`output_paths`).
        input_size: ``(height, width)`` of the model input (``None``: derived per model).
        fuse: Reparameterize the model first.
        image_weight: Weight of the image in the overlay, ``0..1``.
        eigen_smooth: Use the first principal component of the weighted activations.
        aug_smooth: Average over flips and brightness changes.
        device: ``'cpu'`` or ``'cuda[:N]'``.
        list_layers: Print the valid target layer names instead of computing maps.
        cfg_options: Config overrides.
        unsafe_full_unpickle: Unpickle arbitrary objects in the checkpoint (trusted files only).
    """
    config: str
    checkpoint: str
    images: list[str] = field(default_factory=list)
    target_layers: list[str] | None = None
    method: str = 'gradcam'
    target_category: int | None = None
    feature_score: str = 'energy'
    out: str | None = None
    input_size: Sequence[int] | None = None
    fuse: bool = False
    image_weight: float = 0.5
    eigen_smooth: bool = False
    aug_smooth: bool = False
    device: str = 'cpu'
    list_layers: bool = False
    cfg_options: dict[str, Any] | None = None
    unsafe_full_unpickle: bool = False


def collect_images(entries: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in named folders.

    Raises:
        CAMError: An entry does not exist, or a folder holds no file with an image suffix.
    """
    images: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CAMError(f'folder {path} holds no image ({", ".join(IMAGE_SUFFIXES)})')
            images.extend(found)
        elif path.is_file():
            images.append(path)
        else:
            raise CAMError(f'image {path} does not exist; pass image files or folders')
    return images


def _single_output(out: str, out_path: Path, count: int) -> Path:
    """``out`` as the one overlay file: an image suffix, one image, an existing folder."""
    if out_path.suffix.lower() not in IMAGE_SUFFIXES:
        raise CAMError(f'--out {out} is neither an image file nor a folder: '
                       f'{out_path.suffix!r} is not an image suffix. Pass an image name '
                       f'({", ".join(IMAGE_SUFFIXES)}) for one image, or a folder (a name '
                       'without a suffix, or ending in "/")')
    if count > 1:
        raise CAMError(f'--out {out_path} is one image file but {count} images were '
                       'given; pass a folder to --out')
    if not out_path.parent.is_dir():
        raise CAMError(f'the folder of --out ({out_path.parent}) does not exist; create it')
    return check_image_output(out_path)


def output_paths(images: Sequence[Path], out: str | None) -> list[Path]:
    """Where each overlay goes: ``out`` itself for one image, else ``<folder>/<stem>_cam.png``.

    Without ``out``: ``<stem>_cam.png`` in the working folder for one image, else the folder
    :data:`DEFAULT_FOLDER`. ``out`` is a folder if it is an existing folder, ends in a path
    separator or has no suffix; otherwise it is one image file, and its suffix must be an image
    format (so ``x.txt`` is refused instead of becoming a folder named ``x.txt``). Only checks
    the paths; the folder is created by the first overlay written, so a run that writes nothing
    leaves nothing behind.

    Raises:
        CAMError: ``out`` cannot hold the overlays of ``images`` (see the message for why).
    """
    if out is None:
        if len(images) == 1:
            return [Path(f'{images[0].stem}_cam.png')]
        folder = Path(DEFAULT_FOLDER)
    else:
        out_path = Path(out)
        if not (out_path.is_dir() or out.endswith(('/', os.sep)) or not out_path.suffix):
            return [_single_output(out, out_path, len(images))]
        folder = out_path
    if folder.exists() and not folder.is_dir():
        raise CAMError(f'--out {folder} exists and is not a folder')
    paths = [folder / f'{image.stem}_cam.png' for image in images]
    if len(set(paths)) != len(paths):
        raise CAMError('two input images share a file name; their overlays would overwrite each '
                       'other - run the folders separately')
    return paths


def describe(result: CAMResult, image: Path, out: Path) -> str:
    """One summary line per image: what was explained where, the score, and an empty-map hint."""
    text = (f'{image} -> {out}: {result.method} of {result.target} on '
            f'{", ".join(result.target_layers)} (score {result.score:.4g}, input '
            f'{result.input_size[0]}x{result.input_size[1]})')
    if result.probabilities is not None and result.category is not None:
        text += f', p={result.probabilities[result.category]:.3f}'
    if result.empty:
        text += ('; warning: the map is empty (no positive evidence for this target at this '
                 'layer); try another layer, category or method')
    return text


def check_settings(settings: CAMRunSettings) -> None:
    """Refuses options that cannot work, before the (slow) model loading.

    Raises:
        CAMError: Unknown method or grad-cam missing, image weight outside ``[0, 1]``, no image.
    """
    cam_method_class(settings.method)  # also fails early if grad-cam is not installed
    if not 0.0 <= settings.image_weight <= 1.0:
        raise CAMError(f'--image-weight must be in [0, 1], got {settings.image_weight}')
    if not settings.list_layers and not settings.images:
        raise CAMError('pass at least one IMAGE (or --list-layers to see the layer names)')


def checkpoint_path(checkpoint: str) -> str | None:
    """The checkpoint file, or ``None`` for the word ``none`` (random weights).

    Raises:
        CAMError: The file does not exist.
    """
    if checkpoint.lower() == 'none':
        return None
    if not Path(checkpoint).is_file():
        raise CAMError(f'checkpoint {checkpoint} does not exist; pass a .pth file, or "none" for '
                       'random weights')
    return checkpoint


def print_layers(visualizer: CAMVisualizer) -> None:
    """Prints the feature-map layers, then every module name, of the visualizer's model."""
    print('feature-map layers (same names in the training and the fused form):')
    print('\n'.join(f'  {line}' for line in feature_layer_summary(visualizer.model)))
    print('every module:')
    print('\n'.join(f'  {line}' for line in all_layer_names(visualizer.model)))


def compute_overlays(visualizer: CAMVisualizer, images: Sequence[Path], outs: Sequence[Path],
                     settings: CAMRunSettings) -> tuple[list[str], list[UnreadableImageError]]:
    """Writes the overlay of each image to its output path (with a progress bar for several).

    Returns:
        The :func:`describe` line of every overlay written, and the errors of the images
        skipped because they could not be read.

    Raises:
        UnreadableImageError: The only image given cannot be read.
    """
    bar = None
    if len(images) > 1:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(images))
    lines: list[str] = []
    skipped: list[UnreadableImageError] = []
    for image_path, out_path in zip(images, outs):
        try:
            image = load_image(image_path)
        except UnreadableImageError as error:
            if len(images) == 1:
                raise
            # One bad file in a folder should not cost the maps of all the others.
            skipped.append(error)
        else:
            result = visualizer.compute(image, settings.target_layers, settings.method,
                                        settings.target_category,
                                        feature_score=settings.feature_score,
                                        eigen_smooth=settings.eigen_smooth,
                                        aug_smooth=settings.aug_smooth)
            save_image(overlay(image, result.cam, settings.image_weight), out_path)
            lines.append(describe(result, image_path, out_path))
        if bar is not None:
            bar.update()
    if bar is not None:
        print()  # ProgressBar leaves its line open
    return lines, skipped


def report_batch(lines: Sequence[str], skipped: Sequence[UnreadableImageError],
                 total: int) -> None:
    """Prints the overlay lines (stdout), then one warning per skipped image (stderr).

    Raises:
        CAMError: Every image was skipped (nothing was written).
    """
    if skipped and not lines:
        first = skipped[0]
        more = f' (and {len(skipped) - 1} more)' if len(skipped) > 1 else ''
        raise CAMError(f'none of the {total} images could be read: {first.path} '
                       f'{first.reason}{more}; nothing was written')
    for line in lines:
        print(line)
    for error in skipped:
        print(f'warning: skipped {error.path}: it {error.reason}', file=sys.stderr)
    if skipped:
        print(f'warning: skipped {len(skipped)} of {total} images; wrote the other '
              f'{len(lines)}', file=sys.stderr)


def run_cam(settings: CAMRunSettings) -> list[str]:
    """Loads the model and writes a Grad-CAM overlay per image, or lists its layers.

    Every option and path is checked before the model is loaded, so a mistake costs no time.

    Returns:
        The :func:`describe` line of every overlay written (empty for ``list_layers``).

    Raises:
        CAMError: A bad option, path or image (the message names the fix).
    """
    check_settings(settings)
    images = [] if settings.list_layers else collect_images(settings.images)
    outs = output_paths(images, settings.out) if images else []
    checkpoint = checkpoint_path(settings.checkpoint)

    visualizer = CAMVisualizer.from_config(
        settings.config, checkpoint, fuse=settings.fuse, cfg_options=settings.cfg_options,
        input_size=tuple(settings.input_size) if settings.input_size else None,
        device=settings.device, unsafe_full_unpickle=settings.unsafe_full_unpickle)
    for note in visualizer.notes:
        print(f'note: {note}')
    if settings.list_layers:
        print_layers(visualizer)
        return []
    lines, skipped = compute_overlays(visualizer, images, outs, settings)
    report_batch(lines, skipped, len(images))
    return lines
