"""repnext_mm/cli.py: run_cli turns a user-fixable problem into one error line and status 2."""
from __future__ import annotations

import errno
import os

import pytest

from repnext_mm.cli import run_cli
from repnext_mm.utils.errors import InputError, OutputWriteError


def raising(error: BaseException):
    def main(argv):
        raise error
    return main


def error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_main_s_own_status_or_0():
    assert run_cli(lambda argv: 3) == 3
    assert run_cli(lambda argv: None) == 0
    assert run_cli(lambda argv: True) == 0  # a bool is not a status


def test_an_input_error_is_one_line_with_its_exit_status(capsys):
    class Interrupted(InputError):
        exit_status = 130

    assert run_cli(raising(InputError('config x.py does not exist'))) == 2
    assert error_lines(capsys) == ['error: config x.py does not exist']
    assert run_cli(raising(Interrupted('stopped'))) == 130
    assert error_lines(capsys) == ['error: stopped']


def test_an_output_write_error_names_the_final_path(capsys):
    error = OutputWriteError('/data/out.pth', OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert run_cli(raising(error)) == 2
    assert error_lines(capsys) == [
        'error: cannot write /data/out.pth: No space left on device [Errno 28]; free space on '
        'that disk or choose a location on another one. Nothing was written.']


@pytest.mark.parametrize('code, text', [
    (errno.ENOSPC, 'No space left on device [Errno 28]; free space'),
    (errno.EROFS, 'Read-only file system [Errno 30]; choose a location on a writable'),
    (errno.EACCES, 'Permission denied [Errno 13]; fix the permissions'),
    (errno.EDQUOT, 'quota'),
])
def test_an_uncaught_os_error_of_the_machine_about_a_file_is_one_line(code, text, capsys):
    """The last line of defence: a library's own write that no code below caught."""
    assert run_cli(raising(OSError(code, os.strerror(code), '/logs/run.log'))) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith('error: cannot use /logs/run.log: ')
    assert text in lines[0]


@pytest.mark.parametrize('error', [
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),  # no file: where to look is unknown
    FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), '/built/wrong.py'),  # a bug's?
    NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), '/a/b'),
], ids=['enospc-without-a-file', 'enoent', 'enotdir'])
def test_other_os_errors_keep_their_traceback(error):
    with pytest.raises(type(error)) as raised:
        run_cli(raising(error))
    assert raised.value is error


def test_other_exceptions_are_not_touched():
    with pytest.raises(ValueError, match='a bug'):
        run_cli(raising(ValueError('a bug')))
