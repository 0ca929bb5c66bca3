"""Checks of the files a run reads (data, annotations, pretrained weights), before it starts.

Each missing path is an :class:`~repnext_mm.utils.errors.InputError` that names the config key,
the path and how to get the data or point the config elsewhere. Beyond the folders, the data of
each split is checked file by file (:mod:`repnext_mm.datasets.checks`): annotation files parse,
every image and label map exists, is not empty and starts like an image, class folders are all
there and not empty, the split is not empty.
"""
from __future__ import annotations

import os
import os.path as osp
import sys
from typing import Any, Iterator, Sequence

from mmengine.config import Config

from repnext_mm.datasets.checks import (ALLOW_EMPTY_CLASS_FOLDERS_KEY, DatasetFiles,
                                        find_problems, list_dataset_files, problems_error,
                                        read_json)
from repnext_mm.utils.errors import InputError
from .config import iter_config_dicts

SHAPES_HINT = 'generate it with `python tools/data/make_shapes.py` (writes data/shapes/)'


DATASET_HINTS = {
    'mmdet': 'put COCO 2017 there (annotations/instances_{train,val}2017.json, train2017/, '
             'val2017/)',
    'mmseg': 'put ADE20K there (ADEChallengeData2016: images/{training,validation}/, '
             'annotations/{training,validation}/)',
    'mmpretrain': 'put ImageNet-1K there (train/, val/, meta/{train,val}.txt)',
}


def is_local_path(path: str) -> bool:
    return '://' not in path


def check_pretrained_files(cfg: Config) -> None:
    """Every local ``init_cfg=dict(type='Pretrained', checkpoint=...)`` in the model must exist.

    Only training reads them (``init_weights``); testing a trained model never does.
    """
    for key, node in iter_config_dicts(cfg.get('model'), 'model'):
        if node.get('type') != 'Pretrained' or not isinstance(node.get('checkpoint'), str):
            continue
        checkpoint = node['checkpoint']
        if is_local_path(checkpoint) and not osp.isfile(checkpoint):
            init_key = key if key.endswith('init_cfg') else key.rsplit('.', 1)[0]
            raise InputError(
                f'{key}.checkpoint: pretrained weights {checkpoint!r} do not exist (relative to '
                f'{os.getcwd()}). Put an ImageNet-1K backbone checkpoint there (an mmpretrain '
                'checkpoint, or the authors\' release converted with '
                'tools/deploy/convert_official.py), point to one with '
                f'--cfg-options {key}.checkpoint=PATH, or train from scratch with '
                f'--cfg-options {init_key}=None')


def dataset_configs(node: Any, key: str) -> Iterator[tuple[str, dict]]:
    """The leaf dataset dicts under a dataset config, through wrappers (Repeat, Concat, ...)."""
    if isinstance(node, (list, tuple)):
        for index, item in enumerate(node):
            yield from dataset_configs(item, f'{key}.{index}')
    elif isinstance(node, dict):
        if 'dataset' in node:
            yield from dataset_configs(node['dataset'], f'{key}.dataset')
        elif 'datasets' in node:
            yield from dataset_configs(node['datasets'], f'{key}.datasets')
        else:
            yield key, node


def _missing_data_error(cfg: Config, what: str, path: str, root_key: str) -> InputError:
    hint = SHAPES_HINT if 'shapes' in path else DATASET_HINTS.get(cfg.get('default_scope'), '')
    return InputError(f'{what} {path!r} does not exist (relative to {os.getcwd()}): {hint}, or '
                     f'point the config elsewhere with --cfg-options {root_key}=DIR')


def check_data(cfg: Config, splits: Sequence[str]) -> None:
    """Checks the data of the given splits before loading starts: folders, annotation files and
    every image and label map (``stat`` and its first bytes; decoding is
    ``tools/misc/verify_dataset.py``'s).

    Args:
        cfg: The config.
        splits: Any of ``'train'``, ``'val'``, ``'test'``: the dataloaders and evaluators named
            ``{split}_dataloader`` / ``{split}_evaluator`` to check.

    Raises:
        InputError: A data root, data prefix folder or annotation file is missing, an annotation
            file does not parse, a split is empty, a class folder is missing or empty (unless
            :data:`~repnext_mm.datasets.checks.ALLOW_EMPTY_CLASS_FOLDERS_KEY` allows it), or an
            image or label map is missing, empty or not an image. Allowed empty class folders
            are named in a ``warning:`` line on stderr.
    """
    for listed in iter_data_files(cfg, splits):
        for warning in listed.warnings:
            print(f'warning: {warning}', file=sys.stderr)
        problems = find_problems(listed.files)
        if problems:
            raise problems_error(listed.key, problems, len(listed.files))


def iter_data_files(cfg: Config, splits: Sequence[str]) -> Iterator[DatasetFiles]:
    """Checks the folders and annotation files of the given splits and lists their files, one
    dataset at a time (so that a caller stops at the first dataset's problem).

    Yields:
        The files of each leaf dataset (through wrappers) whose layout
        :mod:`repnext_mm.datasets.checks` knows; datasets on remote storage or of another layout
        are only checked as far as their folders.

    Raises:
        InputError: As :func:`check_data`, except for problems of single files.
    """
    parsed: set[str] = set()  # annotation files already parsed (an evaluator's is often one)
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for key, dataset in dataset_configs(loader.get('dataset'), f'{split}_dataloader.dataset'):
            if dataset.get('backend_args'):
                continue  # remote storage: nothing to check locally
            ann_file = _check_dataset_paths(cfg, dataset, key)
            files = list_dataset_files(dataset, key, cfg.get('default_scope'),
                                       cfg.get(ALLOW_EMPTY_CLASS_FOLDERS_KEY, False))
            if files is not None:  # the layout is known, so its annotation file was parsed
                if ann_file:
                    parsed.add(osp.realpath(ann_file))
                yield files
        evaluators = cfg.get(f'{split}_evaluator') or []
        for index, evaluator in enumerate([evaluators] if isinstance(evaluators, dict) else
                                          evaluators):
            ann_file = evaluator.get('ann_file') if isinstance(evaluator, dict) else None
            if (not isinstance(ann_file, str) or not is_local_path(ann_file)
                    or evaluator.get('backend_args')):
                continue
            if not osp.isfile(ann_file):
                key = f'{split}_evaluator' + ('' if isinstance(evaluators, dict) else f'.{index}')
                raise _missing_data_error(cfg, f'annotation file of {key}', ann_file,
                                          f'{key}.ann_file')
            real_path = osp.realpath(ann_file)
            if ann_file.endswith('.json') and real_path not in parsed:
                read_json(ann_file)
                parsed.add(real_path)


def _check_dataset_paths(cfg: Config, dataset: dict, key: str) -> str | None:
    """The data root, annotation file and prefix folders of one dataset exist.

    Returns:
        The annotation file's path (joined to the data root), if the dataset names one.
    """
    data_root = dataset.get('data_root') or ''
    root_key = f'{key}.data_root'
    if data_root and not osp.isdir(data_root):
        raise _missing_data_error(cfg, f'data root of {key}', data_root, root_key)

    def resolve(path: str) -> str:
        return path if osp.isabs(path) else osp.join(data_root, path)

    ann_file = dataset.get('ann_file')
    if isinstance(ann_file, str) and ann_file and not osp.isfile(resolve(ann_file)):
        raise _missing_data_error(cfg, f'annotation file of {key}', resolve(ann_file), root_key)
    prefixes = dataset.get('data_prefix') or {}
    if isinstance(prefixes, str):
        prefixes = dict(img=prefixes)
    for name, prefix in prefixes.items():
        if isinstance(prefix, str) and prefix and not osp.isdir(resolve(prefix)):
            raise _missing_data_error(cfg, f'{name} folder of {key}', resolve(prefix), root_key)
    return resolve(ann_file) if isinstance(ann_file, str) and ann_file else None


def check_checkpoint_file(path: str, what: str) -> None:
    """A local checkpoint path names an existing file (an address is read later)."""
    if is_local_path(path) and osp.isdir(path):
        raise InputError(f'{what} {path!r} is a directory; pass the .pth file inside it')
    if is_local_path(path) and not osp.isfile(path):
        raise InputError(f'{what} {path!r} does not exist (relative to {os.getcwd()})')
