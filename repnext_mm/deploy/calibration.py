"""Images for int8 calibration and evaluation, preprocessed exactly as the config's model sees them.

A calibration image goes through the config's own test pipeline (decoding, resizing, cropping;
annotation loaders are skipped, since calibration images carry no labels) and then through the
model's own data preprocessor (channel order, mean/std, padding): the inputs a deployed model
receives. The exported graph has a fixed input size. A detector's image is zero-padded at the
bottom and right to it (:func:`.deployed_io.pad_to_shape`, what a whole detector's file takes);
for the other tasks, only if the pipeline gives another size is the normalized image resized
(bilinear) to it. The report says either.

Example:
    >>> folder = calibration_dir(cfg, 'test')            # data/shapes/imagenet/val
    >>> reader = PipelineInputs(cfg, prepared.fused().data_preprocessor, (64, 64))
    >>> images = reader.read_folder(folder, count=32)   # InputError for a bad folder
"""
from __future__ import annotations

import os
import os.path as osp
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import Tensor, nn

from repnext_mm.apis.inputs import dataset_configs
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import IMAGE_SUFFIXES
from .deployed_io import pad_to_shape

#: Calibration images used when the command line names no count.
DEFAULT_CALIBRATION_IMAGES = 32
#: Pipeline steps that read labels: calibration and evaluation images have none to read.
ANNOTATION_LOADERS = ('LoadAnnotations',)


@dataclass
class ImageSet:
    """Preprocessed images of one folder, ready to feed the exported graph.

    Attributes:
        folder: The folder they were read from.
        paths: The images read, in order.
        inputs: One ``(1, 3, H, W)`` float tensor per image (normalized, at the export size).
        skipped: ``(path, reason)`` of image files the pipeline could not read.
        pipeline_size: ``(H, W)`` the test pipeline produced before the resize (or padding) to
            the export size; ``None`` when it already matched.
        padded: The images were zero-padded to the export size rather than resized.
    """
    folder: Path
    paths: list[Path]
    inputs: list[Tensor]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    pipeline_size: tuple[int, int] | None = None
    padded: bool = False

    def describe(self) -> str:
        """One line: how many images, from where, and any resize or skipped file."""
        text = f'{len(self.inputs)} images from {self.folder}'
        if self.pipeline_size is not None:
            fitted = 'zero-padded to' if self.padded else 'resized to'
            text += (f' (test pipeline output {self.pipeline_size[0]}x{self.pipeline_size[1]}, '
                     f'{fitted} the export size)')
        if self.skipped:
            path, reason = self.skipped[0]
            text += f'; {len(self.skipped)} unreadable file(s) skipped, e.g. {path}: {reason}'
        return text


def _leaf_dataset(cfg: Config, split: str) -> dict:
    loader = cfg.get(f'{split}_dataloader') or {}
    leaves = list(dataset_configs(loader.get('dataset'), f'{split}_dataloader.dataset'))
    if not leaves:
        raise InputError(f'the config has no {split}_dataloader.dataset to take images from; '
                         'pass --calib-dir DIR (a folder of images)')
    return leaves[0][1]


def calibration_dir(cfg: Config, split: str = 'test') -> Path:
    """The image folder of the config's ``{split}_dataloader`` (``data_root`` + image prefix).

    Args:
        cfg: The model's config.
        split: ``'test'``, ``'val'`` or ``'train'``.

    Raises:
        InputError: The config names no such dataloader or no image folder.
    """
    dataset = _leaf_dataset(cfg, split)
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path', prefix.get('img'))
    # mmpretrain's ImageNet names its folder by split when no prefix is given.
    prefix = prefix or dataset.get('split') or ''
    folder = osp.join(dataset.get('data_root') or '', prefix)
    if not folder:
        raise InputError(f'{split}_dataloader.dataset names no image folder (data_root, '
                         'data_prefix); pass --calib-dir DIR')
    return Path(folder)


def inference_pipeline(cfg: Config) -> list[dict]:
    """The config's test pipeline without its annotation loaders."""
    pipeline = _leaf_dataset(cfg, 'test').get('pipeline') or cfg.get('test_pipeline')
    if not pipeline:
        raise InputError('the config defines no test pipeline (test_dataloader.dataset.pipeline '
                         'or test_pipeline) to preprocess calibration images with')
    return [dict(step) for step in pipeline
            if not str(step.get('type', '')).startswith(ANNOTATION_LOADERS)]


def list_images(folder: str | os.PathLike, count: int | None = None,
                flag: str = '--calib-dir') -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), ``count`` of them evenly spaced.

    Evenly spaced rather than the first ``count``: in a class-per-folder layout that samples
    every class, not the first one.

    Raises:
        InputError: ``folder`` is missing, not a folder, or holds no image file; ``count < 1``.
    """
    folder = Path(folder)
    if count is not None and count < 1:
        raise InputError(f'the number of images must be >= 1, got {count}')
    if not folder.exists():
        raise InputError(f'image folder {folder} does not exist (relative to {os.getcwd()}); '
                         f'pass {flag} DIR with images ({", ".join(IMAGE_SUFFIXES)}). Nothing '
                         'was written.')
    if not folder.is_dir():
        raise InputError(f'{folder} is not a folder; pass {flag} DIR, a folder of images. '
                         'Nothing was written.')
    images = sorted(p for p in folder.rglob('*')
                    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise InputError(f'image folder {folder} holds no image file ({", ".join(IMAGE_SUFFIXES)}'
                         f'); pass {flag} DIR with such images. Nothing was written.')
    if count is None or count >= len(images):
        return images
    step = len(images) / count
    return [images[int(index * step)] for index in range(count)]


class PipelineInputs:
    """Turns image files into the exported graph's input: test pipeline + data preprocessor.

    Args:
        cfg: The model's config (its test pipeline and ``default_scope``).
        data_preprocessor: The model's data preprocessor (``model.data_preprocessor``).
        shape: The exported graph's fixed input ``(height, width)``.
        pad: Zero-pad each image at the bottom and right to ``shape`` (a whole detector's input)
            instead of resizing it; an image larger than ``shape`` is an InputError.
    """

    def __init__(self, cfg: Config, data_preprocessor: nn.Module, shape: Sequence[int],
                 pad: bool = False) -> None:
        from mmengine.dataset import Compose
        from mmengine.registry import init_default_scope

        init_default_scope(cfg.get('default_scope', 'mmengine'))
        self.pipeline: Callable[[dict], Any] = Compose(inference_pipeline(cfg))
        self.data_preprocessor = data_preprocessor.eval()
        self.shape = (int(shape[0]), int(shape[1]))
        self.pad = pad

    @torch.no_grad()
    def __call__(self, path: str | os.PathLike) -> tuple[Tensor, tuple[int, int]]:
        """The ``(1, 3, H, W)`` input for one image and the size the pipeline gave it.

        Raises:
            InputError: With ``pad``, an image larger than the export size.
            Exception: Whatever the pipeline raises for a file it cannot decode.
        """
        from mmengine.dataset import pseudo_collate

        packed = self.pipeline(dict(img_path=str(path)))
        inputs = self.data_preprocessor(pseudo_collate([packed]), False)['inputs'].float()
        size = tuple(inputs.shape[-2:])
        if self.pad:
            inputs = pad_to_shape(inputs, self.shape)
        elif size != self.shape:
            inputs = F.interpolate(inputs, size=self.shape, mode='bilinear', align_corners=False)
        return inputs.contiguous(), size

    def read(self, paths: Sequence[Path], folder: Path, flag: str = '--calib-dir') -> ImageSet:
        """Preprocesses ``paths``; files the pipeline cannot read are skipped and listed.

        Raises:
            InputError: Not one of the files could be read.
        """
        images = ImageSet(Path(folder), [], [], padded=self.pad)
        for path in paths:
            try:
                tensor, size = self(path)
            except InputError:  # the file is fine, the export size is not: say so, once
                raise
            except Exception as error:  # a corrupt or mislabelled file: skip it, say so
                images.skipped.append((path, f'{type(error).__name__}: {error}'))
                continue
            images.paths.append(path)
            images.inputs.append(tensor)
            if size != self.shape:
                images.pipeline_size = size
        if not images.inputs:
            path, reason = images.skipped[0]
            raise InputError(f'image folder {folder} holds no readable image: all '
                             f'{len(images.skipped)} file(s) failed to load, e.g. {path}: '
                             f'{reason}; pass {flag} DIR with valid images. Nothing was written.')
        return images

    def read_folder(self, folder: str | os.PathLike, count: int | None = None,
                    flag: str = '--calib-dir') -> ImageSet:
        """:func:`list_images` of ``folder``, preprocessed (see :meth:`read`)."""
        return self.read(list_images(folder, count, flag), Path(folder), flag)
