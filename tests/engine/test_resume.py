"""Which checkpoint --resume starts from."""
from __future__ import annotations

import os
import time

import pytest

from repnext_mm.engine.resume import (format_cfg_option, how_to_continue, latest_checkpoint,
                                      train_command)
from repnext_mm.utils.fileio import temporary_path


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
        # An interrupted atomic write: hidden, though it also ends in .pth and is the newest.
        touch(temporary_path(tmp_path / 'epoch_3.pth'), now)
        if pointer is not None:
            (tmp_path / 'last_checkpoint').write_text(pointer)
        assert latest_checkpoint(str(tmp_path)) == newest

    def test_none_when_there_is_nothing(self, tmp_path):
        assert latest_checkpoint(str(tmp_path)) is None
        assert latest_checkpoint(str(tmp_path / 'not_created_yet')) is None


@pytest.mark.parametrize('value', [3, 0.5, 'BN', None, True, [0, 1], (0, 1, 2), (7,),
                                   [(1, 2), ['a', 'b'], 'c']])
def test_cfg_options_are_written_back_as_they_parse(value):
    from mmengine.config import DictAction

    assert DictAction._parse_iterable(format_cfg_option(value)) == value


def test_the_resume_command_repeats_the_users_options(tmp_path):
    command = train_command('configs/my config.py', 'work_dirs/x', True,
                            {'train_cfg.max_epochs': 12, 'model.backbone.out_indices': (0, 1)},
                            ('--amp',))
    assert command == ("python tools/train.py 'configs/my config.py' --work-dir work_dirs/x "
                       "--resume --amp --cfg-options train_cfg.max_epochs=12 "
                       "'model.backbone.out_indices=(0,1)'")


def test_how_to_continue_names_the_last_checkpoint_or_says_there_is_none(tmp_path):
    assert how_to_continue('c.py', str(tmp_path)) == (
        f'no checkpoint was written yet; start again with: python tools/train.py c.py '
        f'--work-dir {tmp_path}')
    checkpoint = touch(tmp_path / 'epoch_3.pth', time.time())
    assert how_to_continue('c.py', str(tmp_path), {'a': 1}) == (
        f'the last checkpoint is {checkpoint}; continue with: python tools/train.py c.py '
        f'--work-dir {tmp_path} --resume --cfg-options a=1')
