"""What train() makes of a run that stops: Ctrl-C, an unreadable sample, a full disk."""
from __future__ import annotations

import errno
import os

import pytest

from repnext_mm.datasets.guard import UnreadableSampleError
from repnext_mm.engine import run
from repnext_mm.engine.interrupt import TrainingInterrupted
from repnext_mm.engine.work_dir_lock import LOCK_NAME
from repnext_mm.utils.errors import InputError
from tests.helpers import REPO, SHAPES_CONFIGS

CONFIG = str(SHAPES_CONFIGS['classifier'])


@pytest.fixture
def stopping_runner(monkeypatch, shapes_data, tmp_path):
    """Makes the runner's ``train()`` raise what the test gives, after writing a checkpoint."""
    monkeypatch.chdir(REPO)
    work = tmp_path / 'work'

    def stop_with(error: BaseException, checkpoint: bool = True):
        class Runner:
            def train(self):
                assert (work / LOCK_NAME).is_file()  # held while the run goes
                if checkpoint:
                    (work / 'epoch_2.pth').write_bytes(b'x')
                raise error

        monkeypatch.setattr(run, 'build_runner', lambda cfg: Runner())
        return work

    return stop_with


def test_ctrl_c_is_one_line_with_the_resume_command(stopping_runner):
    work = stopping_runner(KeyboardInterrupt())
    with pytest.raises(TrainingInterrupted) as error:
        run.train(CONFIG, str(work), cfg_options={'train_cfg.max_epochs': 3}, amp=False)
    assert str(error.value) == (
        f'training interrupted (Ctrl-C); the last checkpoint is {work}/epoch_2.pth; continue '
        f'with: python tools/train.py {CONFIG} --work-dir {work} --resume --cfg-options '
        'train_cfg.max_epochs=3')
    assert error.value.exit_status == 130
    assert not (work / LOCK_NAME).exists()


def test_ctrl_c_before_the_first_checkpoint_says_so(stopping_runner):
    work = stopping_runner(KeyboardInterrupt(), checkpoint=False)
    with pytest.raises(TrainingInterrupted, match='no checkpoint was written yet; start again '
                                                  f'with: python tools/train.py {CONFIG} '
                                                  f'--work-dir {work}$'):
        run.train(CONFIG, str(work))


def test_an_unreadable_sample_names_file_index_and_checkpoint(stopping_runner):
    work = stopping_runner(UnreadableSampleError(
        "sample 7 of train_dataloader.dataset, file 'data/x/7.png', cannot be read: decode failed",
        path='data/x/7.png', index=7))
    with pytest.raises(InputError) as error:
        run.train(CONFIG, str(work))
    message = str(error.value)
    assert message.startswith("sample 7 of train_dataloader.dataset, file 'data/x/7.png', cannot "
                              'be read: decode failed; the run stopped: fix or remove the file, '
                              'then the last checkpoint is ')
    assert f'{work}/epoch_2.pth; continue with: python tools/train.py' in message
    assert '--resume' in message and '\n' not in message


def test_a_full_disk_in_a_library_write_is_one_line(stopping_runner):
    path = 'work/20261130_120000/vis_data/scalars.json'
    work = stopping_runner(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path))
    with pytest.raises(InputError, match=f'^cannot write {path}: No space left on device '
                                         '\\[Errno 28\\]; free space or choose another '
                                         '--work-dir$'):
        run.train(CONFIG, str(work))


def test_other_os_errors_are_not_reworded(stopping_runner):
    work = stopping_runner(OSError(errno.EIO, os.strerror(errno.EIO), 'somewhere'))
    with pytest.raises(OSError):
        run.train(CONFIG, str(work))


@pytest.mark.parametrize('launcher, variable, value, expected', [
    ('none', 'RANK', '3', True), ('pytorch', 'RANK', '0', True), ('pytorch', 'RANK', '1', False),
    ('slurm', 'SLURM_PROCID', '2', False), ('mpi', 'OMPI_COMM_WORLD_RANK', '0', True)])
def test_only_the_first_process_takes_the_lock(monkeypatch, launcher, variable, value, expected):
    monkeypatch.setenv(variable, value)
    assert run.is_rank_zero(launcher) is expected
