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


def test_a_refused_run_removes_only_its_own_log_folder(tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'epoch_1.pth').write_bytes(b'x')
    with pytest.raises(InputError):
        with discard_run_folder_on_input_error(str(work)) as record:
            record.log_dir = str(work / '20261130_120000')
            (work / '20261130_120000').mkdir()
            (work / '20261130_120000' / 'log.txt').write_text('...')
            # another run, started meanwhile in the same folder: its files are not ours
            (work / '20261130_120001').mkdir()
            (work / 'other_run_config.py').write_text('theirs')
            raise InputError('bad checkpoint')
    assert sorted(p.name for p in work.iterdir()) == ['20261130_120001', 'epoch_1.pth',
                                                      'other_run_config.py']


def test_a_work_folder_the_refused_run_created_is_removed_only_if_empty(tmp_path):
    fresh = tmp_path / 'fresh'
    with pytest.raises(InputError):
        with discard_run_folder_on_input_error(str(fresh)) as record:
            record.log_dir = str(fresh / 'stamp')
            (fresh / 'stamp').mkdir(parents=True)
            raise InputError('bad checkpoint')
    assert not fresh.exists()

    shared = tmp_path / 'shared'
    with pytest.raises(InputError):
        with discard_run_folder_on_input_error(str(shared)) as record:
            record.log_dir = str(shared / 'stamp')
            (shared / 'stamp').mkdir(parents=True)
            (shared / 'epoch_1.pth').write_bytes(b'another run wrote this')
            raise InputError('bad checkpoint')
    assert [p.name for p in shared.iterdir()] == ['epoch_1.pth']


def test_an_input_error_after_the_inputs_passed_keeps_the_log(tmp_path):
    # e.g. a sample that turned unreadable in epoch 3: the log is the record of the work done
    work = tmp_path / 'work'
    with pytest.raises(InputError):
        with discard_run_folder_on_input_error(str(work)) as record:
            record.log_dir = str(work / 'stamp')
            (work / 'stamp').mkdir(parents=True)
            record.inputs_passed = True
            raise InputError('cannot read sample 3')
    assert (work / 'stamp').is_dir()


def test_other_errors_keep_the_run_folder(tmp_path):
    # A crash in training is not bad input: its log is what the user needs.
    with pytest.raises(RuntimeError):
        with discard_run_folder_on_input_error(str(tmp_path / 'work')):
            (tmp_path / 'work' / 'stamp').mkdir(parents=True)
            raise RuntimeError('out of memory')
    assert (tmp_path / 'work' / 'stamp').is_dir()


class _Cfg(dict):
    filename = 'configs/x/my_config.py'

    def dump(self, file):
        with open(file, 'w') as f:
            f.write('dumped = True\n')


def _bare_runner(tmp_path):
    """A StrictLoadMixin over a stub Runner: only what dump_config/load_or_resume touch."""
    class Base:
        work_dir = str(tmp_path)
        timestamp = '20261130_120000'
        cfg = _Cfg()
        loaded = False

        def load_or_resume(self):
            self.loaded = True

    return type('Runner', (StrictLoadMixin, Base), {})()


def test_the_config_is_dumped_only_after_the_inputs_passed(tmp_path):
    runner = _bare_runner(tmp_path)
    (tmp_path / 'my_config.py').write_text('previous run')
    runner.dump_config()  # what Runner.__init__ calls: deferred
    assert (tmp_path / 'my_config.py').read_text() == 'previous run'
    with discard_run_folder_on_input_error(str(tmp_path)) as record:
        runner.load_or_resume()
        assert runner.loaded and record.inputs_passed
    assert (tmp_path / 'my_config.py').read_text() == 'dumped = True\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['my_config.py']  # no temporary left
