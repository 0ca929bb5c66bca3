"""One training run per work folder: a live holder refuses, a dead one's lock is taken over."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repnext_mm.engine.work_dir_lock import LOCK_NAME, holder_description, work_dir_lock
from repnext_mm.utils.errors import InputError
from tests.helpers import REPO

#: A process that takes the lock, says so and sleeps until it is killed.
HOLDER = '''
import sys, time
from repnext_mm.engine.work_dir_lock import work_dir_lock
with work_dir_lock(sys.argv[1]):
    print('locked', flush=True)
    time.sleep(600)
'''


def start_holder(work: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, '-c', HOLDER, str(work)], cwd=REPO,
                               env={**os.environ, 'PYTHONPATH': str(REPO)},
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == 'locked'
    return process


@pytest.fixture
def holder(tmp_path):
    process = start_holder(tmp_path / 'work')
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=60)


def test_the_lock_names_its_holder_and_is_removed_at_exit(tmp_path):
    work = tmp_path / 'work'
    with work_dir_lock(work) as path:
        assert path == work / LOCK_NAME
        assert path.read_text() == holder_description() + '\n'
        assert holder_description() == f'pid {os.getpid()} on {socket.gethostname()}'
    assert list(work.iterdir()) == []


def test_a_live_holder_refuses_a_second_run_and_keeps_its_record(holder, tmp_path):
    work = tmp_path / 'work'
    before = (work / LOCK_NAME).read_text()
    with pytest.raises(InputError, match=rf'{work} is in use by another training run \(pid '
                                         rf'{holder.pid} on {socket.gethostname()}\); wait'):
        with work_dir_lock(work):
            pass
    assert (work / LOCK_NAME).read_text() == before
    assert holder.poll() is None


def test_the_lock_of_a_killed_run_does_not_block(holder, tmp_path, capsys):
    work = tmp_path / 'work'
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert (work / LOCK_NAME).is_file()  # left behind: SIGKILL runs no clean-up
    with work_dir_lock(work) as path:
        assert path.read_text() == holder_description() + '\n'
    note = capsys.readouterr().err
    assert note.startswith(f'note: {work / LOCK_NAME} was left by a run that is no longer '
                           f'running (pid {holder.pid} on ')
    assert 'taking it over' in note


def test_after_a_run_released_it_the_next_one_takes_it_quietly(tmp_path, capsys):
    work = tmp_path / 'work'
    with work_dir_lock(work):
        pass
    start = time.monotonic()
    with work_dir_lock(work):
        pass
    assert time.monotonic() - start < 1
    assert capsys.readouterr().err == ''
