"""Ctrl-C and two runs at once, as a user meets them: real ``tools/train.py`` processes.

Ctrl-C stops training with one ``error:`` line (exit status 130) that names the last checkpoint
and the ``--resume`` command, and that command continues the run. A second run on a work
folder a live run holds is refused with one line naming the holder's process id, and touches
none of its files; the lock of a run killed with SIGKILL does not block the next one.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from repnext_mm.engine.work_dir_lock import LOCK_NAME
from tests.helpers import (REPO, SHAPES_CONFIGS, describe_process, run_tool_process,
                           single_error_line)
from tests.tools.test_checked_inputs import TINY_TRAIN

CLS_CONFIG = SHAPES_CONFIGS['classifier']
#: A run that goes on until it is stopped: a checkpoint per epoch (2 iterations), two kept.
LONG_TRAIN = [*(o for o in TINY_TRAIN if not o.startswith('train_cfg.max_epochs')),
              'train_cfg.max_epochs=10000', 'default_hooks.checkpoint.interval=1',
              'default_hooks.checkpoint.max_keep_ckpts=2']
#: The safety net of every wait (a process importing the stack on 2 busy cores is slow).
TIMEOUT_S = 300

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('shapes_data')]


def start_training(work: Path, log: Path, *options: str) -> subprocess.Popen:
    """``tools/train.py`` in a fresh process (output to files: a full pipe would block it)."""
    env = {'OMP_NUM_THREADS': '1', **os.environ, 'PYTHONPATH': str(REPO)}
    return subprocess.Popen(
        [sys.executable, 'tools/train.py', str(CLS_CONFIG), '--work-dir', str(work),
         '--cfg-options', *options], cwd=REPO, env=env,
        stdout=open(log.with_suffix('.out'), 'w'), stderr=open(log.with_suffix('.err'), 'w'))


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not path.exists():
        assert process.poll() is None, f'the run ended (exit {process.returncode}) before {path}'
        assert time.monotonic() < deadline, f'no {path} after {TIMEOUT_S} s'
        time.sleep(0.2)


@pytest.fixture
def processes():
    """Started processes; any still running at the end is killed."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)


def test_ctrl_c_names_the_last_checkpoint_and_its_resume_command_continues(tmp_path,
                                                                           processes):
    work = tmp_path / 'work'
    run = start_training(work, tmp_path / 'first', *LONG_TRAIN)
    processes.append(run)
    wait_for(work / 'epoch_1.pth', run)
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=TIMEOUT_S) == 130
    stderr = (tmp_path / 'first.err').read_text()
    line = single_error_line(stderr)
    found = re.fullmatch(r'error: training interrupted \(Ctrl-C\); the last checkpoint is '
                         r'(\S+/epoch_(\d+)\.pth); continue with: (python tools/train\.py .*)',
                         line)
    assert found, line
    checkpoint, epoch, command = Path(found[1]), int(found[2]), found[3]
    assert checkpoint.parent == work and '--resume' in command
    # whole, although the interrupt may have come while a checkpoint was being written
    assert torch.load(checkpoint, map_location='cpu', weights_only=False)['meta']['epoch'] == epoch
    assert [p.name for p in work.iterdir() if p.name.startswith('.')] == []  # no temporary, lock

    # The printed command, as the user would paste it, for one more epoch.
    argv = shlex.split(command)
    assert argv[:2] == ['python', 'tools/train.py']
    resumed = run_tool_process(*argv[1:], f'train_cfg.max_epochs={epoch + 1}',
                               timeout=TIMEOUT_S)
    assert resumed.returncode == 0, describe_process(resumed)
    assert (work / f'epoch_{epoch + 1}.pth').is_file()
    log = max(work.glob('*/*.log'), key=os.path.getmtime).read_text()
    assert f'resumed epoch: {epoch},' in log


def test_a_second_run_is_refused_while_the_first_holds_the_folder(tmp_path, processes):
    work = tmp_path / 'work'
    first = start_training(work, tmp_path / 'first', *LONG_TRAIN)
    processes.append(first)
    wait_for(work / 'epoch_1.pth', first)
    config_dump = (work / CLS_CONFIG.name).read_bytes()
    lock = (work / LOCK_NAME).read_text()
    log_dirs = sorted(p.name for p in work.iterdir() if p.is_dir())

    second = run_tool_process('tools/train.py', CLS_CONFIG, '--work-dir', work, '--cfg-options',
                              *TINY_TRAIN, timeout=TIMEOUT_S)
    assert second.returncode == 2, describe_process(second)
    line = single_error_line(second.stderr)
    assert line.startswith(f'error: {work} is in use by another training run (pid {first.pid} '
                           'on '), line
    assert first.poll() is None  # still training
    assert (work / CLS_CONFIG.name).read_bytes() == config_dump
    assert (work / LOCK_NAME).read_text() == lock
    assert sorted(p.name for p in work.iterdir() if p.is_dir()) == log_dirs

    # A run killed without clean-up leaves its lock file: the next run notes it and goes on.
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=TIMEOUT_S)
    assert (work / LOCK_NAME).is_file()
    epoch = max(int(p.stem.split('_')[1]) for p in work.glob('epoch_*.pth'))
    after = run_tool_process('tools/train.py', CLS_CONFIG, '--work-dir', work, '--resume',
                             '--cfg-options', *TINY_TRAIN, f'train_cfg.max_epochs={epoch + 1}',
                             timeout=TIMEOUT_S)
    assert after.returncode == 0, describe_process(after)
    assert (f'note: {work / LOCK_NAME} was left by a run that is no longer running '
            f'(pid {first.pid} on ') in after.stderr
    assert (work / f'epoch_{epoch + 1}.pth').is_file()
    assert not (work / LOCK_NAME).exists()
