"""tools/dist_train.sh, dist_test.sh and dist_launch.sh check their inputs before torchrun starts.

Cases of issue 19: ``dist_train.sh CONFIG abc`` (was ``abc: unbound variable``), a process count
of 0, a missing config or checkpoint (was the error once per process, then torchrun's
``ChildFailedError``), and no ``PYTHON`` outside the venv. Each is one ``error:`` line, exit
status 2, and nothing else: the scripts stop before any Python starts, so these are cheap. The
launch itself (2 CPU processes over gloo) is tested in ``test_train_detection.py``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, SHAPES_CONFIGS

CONFIG = str(SHAPES_CONFIGS['classifier'].relative_to(REPO))
#: The scripts, the shell library they source and the tools they launch (never run here): what
#: a copy of the tools folder needs.
SCRIPTS = ('dist_train.sh', 'dist_test.sh', 'dist_launch.sh', 'lib/dist_common.sh', 'train.py',
           'test.py')


def run_script(script: str, *args: str, env: dict | None = None, tools: Path = REPO / 'tools',
               cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``bash tools/<script> args`` with ``PYTHON`` unset unless ``env`` sets it."""
    full_env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    full_env.update(env or {})
    return subprocess.run(['bash', str(tools / script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120)


def refused(result: subprocess.CompletedProcess) -> str:
    """The single error line of a refused launch; nothing else was printed (no torchrun)."""
    assert result.returncode == 2, result
    assert result.stdout == '', result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    return lines[0]


@pytest.mark.parametrize('script, args, env, expected', [
    pytest.param('dist_train.sh', [CONFIG, 'abc'], {}, ["NPROC must be a positive integer, got "
                                                       "'abc'", 'dist_train.sh CONFIG NPROC'],
                 id='dist_train-nproc-abc'),
    pytest.param('dist_train.sh', [CONFIG, '0'], {}, ["NPROC must be a positive integer, got '0'"],
                 id='dist_train-nproc-0'),
    pytest.param('dist_train.sh', ['configs/missing.py', '2'], {},
                 [f'CONFIG configs/missing.py does not exist (relative to {REPO})'],
                 id='dist_train-missing-config'),
    pytest.param('dist_train.sh', [CONFIG], {}, ['expected CONFIG and NPROC', 'usage:'],
                 id='dist_train-no-nproc'),
    pytest.param('dist_test.sh', [CONFIG, 'missing.pth', '1'], {},
                 [f'CHECKPOINT missing.pth does not exist (relative to {REPO})'],
                 id='dist_test-missing-checkpoint'),
    pytest.param('dist_test.sh', ['configs/missing.py', 'missing.pth', '1'], {},
                 ['CONFIG configs/missing.py does not exist'], id='dist_test-missing-config'),
    pytest.param('dist_test.sh', [CONFIG, 'missing.pth', 'two'], {},
                 ["NPROC must be a positive integer, got 'two'"], id='dist_test-nproc-two'),
    pytest.param('dist_train.sh', [CONFIG, '2'], {'PORT': 'http'},
                 ["PORT must be a TCP port number (1-65535), got 'http'"], id='port-not-a-number'),
    pytest.param('dist_train.sh', [CONFIG, '2'], {'NNODES': '2', 'NODE_RANK': '2'},
                 ['NODE_RANK must be an integer from 0 to NNODES - 1 = 1', "got '2'"],
                 id='node-rank-out-of-range'),
    pytest.param('dist_launch.sh', ['1', 'missing.py'], {},
                 [f'SCRIPT {REPO}/tools/missing.py does not exist'], id='dist_launch-no-script'),
])
def test_a_bad_argument_is_one_line_before_torchrun(script, args, env, expected):
    line = refused(run_script(script, *args, env=env))
    for part in expected:
        assert part in line, line


def test_a_checkpoint_url_is_left_to_the_test_tool(tmp_path):
    """A URL is downloaded by tools/test.py: only a local CHECKPOINT is checked here (the run
    then stops at the interpreter, which this test makes fail)."""
    line = refused(run_script('dist_test.sh', CONFIG, 'https://example.org/m0.pth', '1',
                              env={'PYTHON': str(tmp_path / 'no-python')}))
    assert 'CHECKPOINT' not in line and f'PYTHON={tmp_path / "no-python"}: no such command' in line


@pytest.fixture
def tools_copy(tmp_path) -> Path:
    """The launch scripts in a checkout without .venv (``<tmp>/repo/tools``), the config too."""
    repo = tmp_path / 'repo'
    for name in SCRIPTS:
        (repo / 'tools' / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / 'tools' / name, repo / 'tools' / name)
    (repo / CONFIG).parent.mkdir(parents=True)
    shutil.copy2(REPO / CONFIG, repo / CONFIG)
    return repo


def fake_python(folder: Path, name: str) -> Path:
    """An interpreter without torch: prints Python's import error, exits 1."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    path.chmod(0o755)
    return path


def test_without_python_and_venv_python3_without_torch_says_how_to_set_up(tools_copy, tmp_path):
    # python3 on PATH is one without torch, as on a fresh machine (the real one is never used).
    bin_dir = fake_python(tmp_path / 'bin', 'python3').parent
    line = refused(run_script('dist_train.sh', CONFIG, '1', tools=tools_copy / 'tools',
                              cwd=tools_copy, env={'PATH': f'{bin_dir}:{os.environ["PATH"]}'}))
    assert f'python3 (PYTHON is not set and there is no {tools_copy}/.venv)' in line
    assert "No module named 'torch'" in line
    assert "run 'bash tools/setup_env.sh'" in line and 'or set PYTHON' in line


def test_without_python_the_checkouts_venv_is_used(tools_copy):
    venv_python = fake_python(tools_copy / '.venv' / 'bin', 'python')
    line = refused(run_script('dist_train.sh', CONFIG, '1', tools=tools_copy / 'tools',
                              cwd=tools_copy))
    assert line.startswith(f'error: {venv_python} cannot start torchrun'), line


def test_python_set_wins_over_the_venv(tools_copy, tmp_path):
    fake_python(tools_copy / '.venv' / 'bin', 'python')
    chosen = fake_python(tmp_path / 'elsewhere', 'python')
    line = refused(run_script('dist_train.sh', CONFIG, '1', tools=tools_copy / 'tools',
                              cwd=tools_copy, env={'PYTHON': str(chosen)}))
    assert line.startswith(f'error: PYTHON={chosen} cannot start torchrun'), line
