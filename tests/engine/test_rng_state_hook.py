"""RNGStateHook: generator states go into checkpoints and come back on resume only."""
from __future__ import annotations

import io
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from repnext_mm.engine import RNGStateHook, capture_rng_state, restore_rng_state


def draw() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_restore_replays_every_generator():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = capture_rng_state()
    expected = draw()
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    restore_rng_state(state)
    assert draw() == expected


def test_state_survives_a_weights_only_load():
    # torch >= 2.6 loads checkpoints with weights_only=True: the state must need no allow-list.
    buffer = io.BytesIO()
    torch.save({'rng_state': capture_rng_state()}, buffer)
    expected = draw()
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True)['rng_state'])
    assert draw() == expected


def test_hook_restores_only_when_resuming():
    hook = RNGStateHook()
    logger = SimpleNamespace(info=lambda message: None)
    checkpoint: dict = {}
    torch.manual_seed(3)
    hook.before_save_checkpoint(SimpleNamespace(logger=logger), checkpoint)
    expected = torch.rand(2)

    torch.manual_seed(4)
    hook.after_load_checkpoint(SimpleNamespace(_resume=False, logger=logger), checkpoint)
    assert not torch.equal(torch.rand(2), expected)  # a plain weight load leaves RNGs alone
    hook.after_load_checkpoint(SimpleNamespace(_resume=True, logger=logger), checkpoint)
    assert torch.equal(torch.rand(2), expected)


def test_foreign_state_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match='not written by RNGStateHook'):
        restore_rng_state({'torch': torch.get_rng_state()})
