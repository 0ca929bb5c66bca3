"""Multi-process runs without CUDA."""
from __future__ import annotations

import pytest
from mmengine.config import Config

from repnext_mm.engine.launcher import setup_launcher
from repnext_mm.utils.errors import InputError


def test_cpu_multiprocess_refuses_syncbn_with_the_switch(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '0')
    cfg = Config(dict(model=dict(backbone=dict(norm_cfg=dict(type='SyncBN')))))
    with pytest.raises(InputError, match=r'--cfg-options model\.backbone\.norm_cfg\.type=BN'):
        setup_launcher(cfg, 'pytorch')
