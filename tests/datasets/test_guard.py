"""Samples that fail to load during a run: one line naming the file and index, or skipped by
opt-in with every skip logged (repnext_mm/datasets/guard.py), with mmpretrain's real pipeline."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DATASETS, init_default_scope

from repnext_mm.datasets.guard import (SKIP_UNREADABLE_KEY, GuardedDataset,
                                       UnreadableSampleError, guard_dataloaders)
from repnext_mm.utils.errors import InputError
from tests.helpers import write_shape_images

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]


@pytest.fixture
def folder(tmp_path) -> tuple[Path, Path]:
    """8 class-folder images; sample 2 (square/001.png) cut after its header."""
    paths = write_shape_images(tmp_path / 'data', 8)
    broken = sorted(paths)[2]
    broken.write_bytes(broken.read_bytes()[:100])
    return tmp_path / 'data', broken


def loader_config(root: Path, **top_level) -> Config:
    return Config(dict(train_dataloader=dict(dataset=dict(
        type='CustomDataset', data_root=str(root), pipeline=PIPELINE)), **top_level))


def built(cfg: Config) -> GuardedDataset:
    init_default_scope('mmpretrain')
    guard_dataloaders(cfg)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    dataset.full_init()
    return dataset


def test_guard_wraps_each_loader_once_and_proxies_the_dataset(folder):
    cfg = loader_config(folder[0])
    cfg.test_dataloader = dict(dataset=dict(cfg.train_dataloader.dataset))
    guard_dataloaders(cfg)
    guard_dataloaders(cfg)  # a config dumped by an earlier run: not wrapped twice
    for name in ('train_dataloader', 'test_dataloader'):
        wrapper = cfg[name].dataset
        assert wrapper.type == 'GuardedDataset' and wrapper.dataset.type == 'CustomDataset'
        assert wrapper.key == f'{name}.dataset'
    dataset = built(cfg)
    assert len(dataset) == 8
    assert dataset.metainfo['classes'] == ('circle', 'square', 'star', 'triangle')
    assert dataset.get_data_info(0)['img_path'].endswith('circle/000.png')
    assert dataset.with_label is True  # any attribute of the wrapped dataset
    assert pickle.loads(pickle.dumps(dataset)).get_data_info(1) == dataset.get_data_info(1)


def test_a_broken_sample_stops_with_its_file_and_index(folder):
    dataset = built(loader_config(folder[0]))
    assert dataset[0]['inputs'].shape == (3, 64, 64)
    with pytest.raises(UnreadableSampleError) as error:
        dataset[2]
    assert isinstance(error.value, InputError)
    assert (error.value.path, error.value.index) == (str(folder[1]), 2)
    message = str(error.value)
    assert '\n' not in message
    assert f"sample 2 of train_dataloader.dataset, file '{folder[1]}'" in message
    assert 'AssertionError: failed to load image' in message  # the original error's text
    assert f'{SKIP_UNREADABLE_KEY} = True' in message


@pytest.mark.own_process  # it forks a DataLoader worker
def test_a_worker_process_error_keeps_its_one_line(folder):
    dataset = built(loader_config(folder[0]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=1,
                                         collate_fn=lambda batch: batch)
    with pytest.raises(UnreadableSampleError) as error:
        list(loader)
    in_process = None
    try:
        dataset[2]
    except UnreadableSampleError as direct:
        in_process = str(direct)
    assert str(error.value) == in_process  # not "Caught ... Original Traceback ..."
    assert (error.value.path, error.value.index) == (str(folder[1]), 2)


@pytest.mark.own_process  # it forks a DataLoader worker
def test_skipping_loads_the_next_sample_and_logs_every_skip(folder, tmp_path):
    import logging

    from mmengine.logging import MMLogger

    dataset = built(loader_config(folder[0], **{SKIP_UNREADABLE_KEY: True}))
    # A file handler, as the runner's log file: the forked worker process writes to it too.
    log = logging.FileHandler(tmp_path / 'run.log')
    logger = MMLogger.get_current_instance()
    logger.addHandler(log)
    try:
        assert dataset[2]['data_samples'].img_path == dataset.get_data_info(3)['img_path']
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1,
                                             collate_fn=lambda batch: batch)
        assert sum(len(batch) for batch in loader) == 8  # every index yields a sample
    finally:
        logger.removeHandler(log)
        log.close()
    assert dataset.skipped == 2  # the worker process's skip counts in the same total
    skips = [line for line in (tmp_path / 'run.log').read_text().splitlines()
             if 'skipped: sample 2' in line]
    assert len(skips) == 2, skips
    assert f"file '{folder[1]}'" in skips[0] and 'AssertionError' in skips[0]
    assert '1 unreadable sample skipped so far' in skips[0]
    assert '2 unreadable samples skipped so far' in skips[1]


def test_every_sample_unreadable_is_an_error_even_when_skipping(tmp_path):
    paths = write_shape_images(tmp_path / 'data', 4)
    for path in paths:
        path.write_bytes(b'\x89PNG\r\n\x1a\n')
    dataset = built(loader_config(tmp_path / 'data', **{SKIP_UNREADABLE_KEY: True}))
    with pytest.raises(UnreadableSampleError, match='every sample of train_dataloader.dataset'):
        dataset[0]


def test_the_message_survives_a_dataloader_style_reraise():
    original = UnreadableSampleError("sample 7 of val_dataloader.dataset, file 'a b/c.png', "
                                     'could not be loaded (OSError: x)')
    text = ('Caught UnreadableSampleError in DataLoader worker process 3.\nOriginal Traceback '
            '(most recent call last):\n  File "x.py", line 1, in f\n'
            f'repnext_mm.datasets.guard.UnreadableSampleError: {original}\n')
    error = UnreadableSampleError(text)
    assert str(error) == str(original)
    assert (error.path, error.index) == ('a b/c.png', 7)
