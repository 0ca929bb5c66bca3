"""Ctrl-C: the first one raises KeyboardInterrupt, the second one ends the process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from repnext_mm.engine.interrupt import (SIGINT_EXIT_STATUS, TrainingInterrupted,
                                         second_interrupt_exits)
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write, atomic_write_bytes
from tests.helpers import REPO


def test_interrupted_is_an_input_error_with_the_shells_sigint_status():
    assert issubclass(TrainingInterrupted, InputError)
    assert TrainingInterrupted.exit_status == SIGINT_EXIT_STATUS == 128 + signal.SIGINT


@pytest.mark.own_process  # it signals its own process
def test_the_first_interrupt_raises_and_leaves_the_default_action():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with second_interrupt_exits():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10 ** 7):  # the handler runs between two bytecodes
                pass
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.own_process  # it signals its own process
def test_an_interrupt_during_a_checkpoint_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    path.write_bytes(b'previous checkpoint')

    def interrupted_write(tmp):
        with open(tmp, 'wb') as file:
            file.write(b'half of a new ')
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10 ** 7):  # the handler raises here, mid-write
                pass
            file.write(b'checkpoint')

    with pytest.raises(KeyboardInterrupt):
        with second_interrupt_exits():
            atomic_write(path, interrupted_write)
    assert path.read_bytes() == b'previous checkpoint'
    assert [p.name for p in tmp_path.iterdir()] == ['epoch_1.pth']
    atomic_write_bytes(b'new', path)  # and the next write still works
    assert path.read_bytes() == b'new'


#: Takes the first Ctrl-C (prints, keeps going), then is hit by a second one.
TWICE = '''
import os, signal, sys, time
from repnext_mm.engine.interrupt import second_interrupt_exits
with second_interrupt_exits():
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    except KeyboardInterrupt:
        print('first', flush=True)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
    print('still running', flush=True)
'''


def test_a_second_interrupt_ends_the_process_at_once():
    result = subprocess.run([sys.executable, '-c', TWICE], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, 'PYTHONPATH': str(REPO)}, timeout=120)
    assert result.returncode == -signal.SIGINT, result.stderr
    assert result.stdout == 'first\n'
    assert 'Traceback' not in result.stderr
