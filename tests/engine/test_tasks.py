"""The library-specific steps of tools/train.py and tools/test.py."""
from __future__ import annotations

import pytest
from mmengine.config import Config

from repnext_mm.apis.config import SUPPORTED_SCOPES
from repnext_mm.engine.tasks import TASK_ADAPTERS, enable_auto_scale_lr
from repnext_mm.utils.errors import InputError


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
    with pytest.raises(InputError, match='visualization hook'):
        TASK_ADAPTERS['mmdet'].show_dir(Config(dict(default_hooks=dict())), 'shown')


def test_auto_scale_lr_needs_a_base_batch_size():
    cfg = Config(dict(auto_scale_lr=dict(enable=False, base_batch_size=16)))
    enable_auto_scale_lr(cfg)
    assert cfg.auto_scale_lr.enable is True
    with pytest.raises(InputError, match='base_batch_size'):
        enable_auto_scale_lr(Config(dict()))
