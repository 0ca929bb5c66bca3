"""Which checkpoint --resume starts from."""
from __future__ import annotations

import os
import time

import pytest

from repnext_mm.engine.resume import latest_checkpoint
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
