"""The pieces of repnext_mm.tools_utils that need no training run."""
from __future__ import annotations

import os
import time

import pytest
from mmengine.config import Config

from repnext_mm.engine import ATOMIC_BACKEND_NAME
from repnext_mm.tools_utils import (SUPPORTED_SCOPES, TASK_ADAPTERS, ToolError, check_data,
                                    enable_auto_scale_lr, latest_checkpoint, load_config,
                                    set_work_dir, setup_launcher, use_atomic_checkpoints)


def touch(path, mtime: float) -> str:
    path.write_bytes(b'x')
    os.utime(path, (mtime, mtime))
    return str(path)


class TestLatestCheckpoint:

    def test_follows_last_checkpoint(self, tmp_path):
        now = time.time()
        older = touch(tmp_path / 'epoch_1.pth', now - 10)
        touch(tmp_path / 'epoch_2.pth', now)
        (tmp_path / 'last_checkpoint').write_text(older)
        assert latest_checkpoint(str(tmp_path)) == older

    @pytest.mark.parametrize('pointer', ['', 'deleted/epoch_9.pth', None])
    def test_falls_back_to_the_newest_complete_file(self, tmp_path, pointer):
        now = time.time()
        touch(tmp_path / 'epoch_1.pth', now - 10)
        newest = touch(tmp_path / 'epoch_2.pth', now - 5)
        touch(tmp_path / '.epoch_3.pth.abc.part', now)  # an interrupted atomic write
        if pointer is not None:
            (tmp_path / 'last_checkpoint').write_text(pointer)
        assert latest_checkpoint(str(tmp_path)) == newest

    def test_none_when_there_is_nothing(self, tmp_path):
        assert latest_checkpoint(str(tmp_path)) is None
        assert latest_checkpoint(str(tmp_path / 'not_created_yet')) is None


def coco_like_config(data_root: str) -> Config:
    return Config(dict(
        default_scope='mmdet',
        train_dataloader=dict(dataset=dict(
            type='RepeatDataset', times=2,
            dataset=dict(type='CocoDataset', data_root=data_root, ann_file='ann/train.json',
                         data_prefix=dict(img='train/')))),
        val_evaluator=dict(type='CocoMetric', ann_file=f'{data_root}ann/val.json')))


class TestCheckData:

    def test_complete_layout_passes(self, tmp_path):
        (tmp_path / 'ann').mkdir()
        (tmp_path / 'train').mkdir()
        (tmp_path / 'ann' / 'train.json').write_text('{}')
        (tmp_path / 'ann' / 'val.json').write_text('{}')
        check_data(coco_like_config(f'{tmp_path}/'), ['train', 'val'])

    def test_names_the_wrapped_dataset_and_the_override(self, tmp_path):
        with pytest.raises(ToolError) as error:
            check_data(coco_like_config(f'{tmp_path}/missing/'), ['train'])
        message = str(error.value)
        assert 'data root of train_dataloader.dataset.dataset' in message
        assert '--cfg-options train_dataloader.dataset.dataset.data_root=DIR' in message
        assert 'COCO 2017' in message

    def test_missing_image_folder(self, tmp_path):
        (tmp_path / 'ann').mkdir()
        (tmp_path / 'ann' / 'train.json').write_text('{}')
        with pytest.raises(ToolError, match=r"img folder of .* '.*/train/' does not exist"):
            check_data(coco_like_config(f'{tmp_path}/'), ['train'])

    def test_only_requested_splits_are_checked(self, tmp_path):
        check_data(coco_like_config(f'{tmp_path}/missing/'), ['test'])


def test_every_supported_scope_has_an_adapter():
    assert set(TASK_ADAPTERS) == set(SUPPORTED_SCOPES)


@pytest.mark.parametrize('scope, hook, expected', [
    ('mmdet', dict(type='DetVisualizationHook'), dict(draw=True, test_out_dir='shown')),
    ('mmseg', dict(type='SegVisualizationHook'), dict(draw=True, interval=1)),
    ('mmpretrain', dict(type='VisualizationHook'), dict(enable=True, out_dir='shown')),
])
def test_show_dir_switches_on_each_librarys_visualization(scope, hook, expected):
    cfg = Config(dict(default_scope=scope, default_hooks=dict(visualization=hook),
                      visualizer=dict(type='Visualizer')))
    TASK_ADAPTERS[scope].show_dir(cfg, 'shown')
    for key, value in expected.items():
        assert cfg.default_hooks.visualization[key] == value
    if scope == 'mmseg':
        assert cfg.visualizer.save_dir == 'shown'


def test_show_dir_without_visualization_hook_is_an_error():
    with pytest.raises(ToolError, match='visualization hook'):
        TASK_ADAPTERS['mmdet'].show_dir(Config(dict(default_hooks=dict())), 'shown')


def test_atomic_checkpoints_only_for_local_default_storage():
    cfg = Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1))))
    use_atomic_checkpoints(cfg)
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend=ATOMIC_BACKEND_NAME)

    remote = Config(dict(default_hooks=dict(checkpoint=dict(
        type='CheckpointHook', out_dir='s3://bucket/run'))))
    use_atomic_checkpoints(remote)
    assert 'backend_args' not in remote.default_hooks.checkpoint


def test_config_scope_must_be_supported(tmp_path):
    path = tmp_path / 'other.py'
    path.write_text("default_scope = 'mmocr'\n")
    with pytest.raises(ToolError, match=r"default_scope='mmocr'.*\('mmdet', 'mmseg', "
                                        r"'mmpretrain'\)"):
        load_config(str(path))


def test_work_dir_priority(tmp_path):
    cfg = Config(dict())
    set_work_dir(cfg, 'configs/mmdet/some_config.py', None)
    assert cfg.work_dir == os.path.join('./work_dirs', 'some_config')
    set_work_dir(cfg, 'configs/mmdet/some_config.py', 'explicit')
    assert cfg.work_dir == 'explicit'


def test_auto_scale_lr_needs_a_base_batch_size():
    cfg = Config(dict(auto_scale_lr=dict(enable=False, base_batch_size=16)))
    enable_auto_scale_lr(cfg)
    assert cfg.auto_scale_lr.enable is True
    with pytest.raises(ToolError, match='base_batch_size'):
        enable_auto_scale_lr(Config(dict()))


def test_cpu_multiprocess_refuses_syncbn_with_the_switch(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '0')
    cfg = Config(dict(model=dict(backbone=dict(norm_cfg=dict(type='SyncBN')))))
    with pytest.raises(ToolError, match=r'--cfg-options model\.backbone\.norm_cfg\.type=BN'):
        setup_launcher(cfg, 'pytorch')
