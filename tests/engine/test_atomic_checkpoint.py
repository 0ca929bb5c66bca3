"""Atomic checkpoint writes: a path holds the old file or the whole new one, never a part."""
from __future__ import annotations

import os

import pytest
from mmengine.fileio import get_file_backend

from repnext_mm.engine import ATOMIC_BACKEND_NAME, AtomicLocalBackend
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write_bytes


def test_write_creates_folders_and_leaves_only_the_file(tmp_path):
    target = tmp_path / 'a' / 'b' / 'epoch_1.pth'
    atomic_write_bytes(b'complete', target)
    assert target.read_bytes() == b'complete'
    assert os.listdir(target.parent) == ['epoch_1.pth']


@pytest.mark.parametrize('interruption', [KeyboardInterrupt, OSError])
def test_interrupted_write_keeps_the_previous_file_and_no_temporary(tmp_path, monkeypatch,
                                                                    interruption):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'previous checkpoint')

    def interrupted_fsync(fd):  # the data is written, the rename has not happened yet
        raise interruption('interrupted while saving')

    monkeypatch.setattr(os, 'fsync', interrupted_fsync)
    with pytest.raises(interruption):
        atomic_write_bytes(b'new checkpoint that never lands', target)
    assert target.read_bytes() == b'previous checkpoint'
    assert os.listdir(tmp_path) == ['epoch_1.pth']


def test_interrupted_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'fsync', lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(b'data', tmp_path / 'epoch_1.pth')
    assert os.listdir(tmp_path) == []


def test_backend_is_selected_by_name_and_writes_atomically(tmp_path, monkeypatch):
    backend = get_file_backend(str(tmp_path), backend_args=dict(backend=ATOMIC_BACKEND_NAME))
    assert isinstance(backend, AtomicLocalBackend)
    calls = []
    monkeypatch.setattr('repnext_mm.engine.atomic_checkpoint.atomic_write_bytes',
                        lambda data, path: calls.append(path))
    backend.put(b'x', tmp_path / 'iter_3.pth')
    assert calls == [tmp_path / 'iter_3.pth']


def test_default_local_backend_is_unchanged(tmp_path):
    # Registering the atomic backend claims no URI prefix: plain paths keep MMEngine's backend.
    assert type(get_file_backend(str(tmp_path))) is not AtomicLocalBackend


def test_an_old_checkpoint_is_deleted_only_after_the_new_one_is_written(tmp_path, monkeypatch):
    # CheckpointHook(max_keep_ckpts=1) removes epoch_1.pth before it saves epoch_2.pth
    backend = AtomicLocalBackend()
    old = tmp_path / 'epoch_1.pth'
    old.write_bytes(b'previous checkpoint')
    backend.remove(old)
    assert old.is_file()
    monkeypatch.setattr(os, 'fsync', lambda fd: (_ for _ in ()).throw(OSError(28, 'full')))
    with pytest.raises((OSError, InputError)):  # InputError: atomic_write names the path
        AtomicLocalBackend().put(b'new', tmp_path / 'epoch_2.pth')  # the runner's own instance
    assert old.read_bytes() == b'previous checkpoint'
    monkeypatch.undo()
    AtomicLocalBackend().put(b'new', tmp_path / 'epoch_2.pth')
    assert sorted(os.listdir(tmp_path)) == ['epoch_2.pth']
