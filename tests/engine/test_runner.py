"""The tools' runner: strict checkpoint loading, atomic checkpoints, clean-up on bad input."""
from __future__ import annotations

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from repnext_mm.engine import ATOMIC_BACKEND_NAME
from repnext_mm.engine.runner import (StrictLoadMixin, allowed_mismatch_of,
                                      discard_run_folder_on_input_error, strict_runner_class,
                                      use_atomic_checkpoints)
from repnext_mm.utils.errors import InputError


def test_atomic_checkpoints_only_for_local_default_storage():
    cfg = Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1))))
    use_atomic_checkpoints(cfg)
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend=ATOMIC_BACKEND_NAME)

    remote = Config(dict(default_hooks=dict(checkpoint=dict(
        type='CheckpointHook', out_dir='s3://bucket/run'))))
    use_atomic_checkpoints(remote)
    assert 'backend_args' not in remote.default_hooks.checkpoint


def test_a_custom_runner_class_keeps_its_own_behaviour_behind_the_strict_load():
    class MyRunner(Runner):
        pass

    combined = strict_runner_class(MyRunner)
    assert issubclass(combined, MyRunner) and issubclass(combined, StrictLoadMixin)
    assert combined.load_checkpoint is StrictLoadMixin.load_checkpoint
    assert strict_runner_class(combined) is combined
    with pytest.raises(InputError, match='is not an MMEngine Runner subclass'):
        strict_runner_class(dict)


@pytest.mark.parametrize('value, expected', [
    (None, ()), (['head'], ('head',)), (('roi_head.bbox_head.fc_cls', ''),
                                        ('roi_head.bbox_head.fc_cls', ''))])
def test_allowed_mismatch_is_read_from_the_config(value, expected):
    assert allowed_mismatch_of(Config(dict(load_from_allow_mismatch=value))) == expected


@pytest.mark.parametrize('value', ['head', [1, 2]])
def test_allowed_mismatch_must_be_a_list_of_names(value):
    with pytest.raises(InputError, match='give a list of module names'):
        allowed_mismatch_of(Config(dict(load_from_allow_mismatch=value)))


def test_a_refused_run_removes_only_what_it_created(tmp_path):
    work = tmp_path / 'work'
    (work / 'epoch_1.pth').parent.mkdir()
    (work / 'epoch_1.pth').write_bytes(b'x')
    with pytest.raises(InputError):
        with discard_run_folder_on_input_error(str(work)):
            (work / '20261130_120000').mkdir()
            (work / '20261130_120000' / 'log.txt').write_text('...')
            raise InputError('bad checkpoint')
    assert sorted(p.name for p in work.iterdir()) == ['epoch_1.pth']

    fresh = tmp_path / 'fresh'
    with pytest.raises(InputError):
        with discard_run_folder_on_input_error(str(fresh)):
            (fresh / 'stamp').mkdir(parents=True)
            raise InputError('bad checkpoint')
    assert not fresh.exists()


def test_other_errors_keep_the_run_folder(tmp_path):
    # A crash in training is not bad input: its log is what the user needs.
    with pytest.raises(RuntimeError):
        with discard_run_folder_on_input_error(str(tmp_path / 'work')):
            (tmp_path / 'work' / 'stamp').mkdir(parents=True)
            raise RuntimeError('out of memory')
    assert (tmp_path / 'work' / 'stamp').is_dir()
