"""What every command line tool of this package shares: its parser and its error handling.

A problem the user can fix (:class:`~repnext_mm.utils.errors.InputError`, or a bad argument)
is printed as exactly one ``error: ...`` line on stderr, without a traceback, and the tool
exits with status 2 - the convention of argparse and of the deploy tools. So is an ``OSError``
of the machine about a named file (a full disk, a read-only file system, no permission) that no
code below caught: see :func:`run_cli`.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Callable, Iterator, NoReturn, Sequence

from repnext_mm.utils.errors import InputError, describe_os_error

#: Exit status of a tool that refused its input.
INPUT_ERROR_STATUS = 2


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line naming the fix (``--help``).

    argparse prints the whole usage block before its one-line error; for a long tool that
    buries the message, so only the error line and a pointer to ``--help`` are printed.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(INPUT_ERROR_STATUS, f'error: {message} (see {self.prog} --help)\n')


class CfgOptionsAction(argparse.Action):
    """``--cfg-options KEY=VALUE ...`` parsed like MMEngine's ``DictAction``, with clear errors.

    MMEngine's ``DictAction`` raises a bare ``ValueError`` (a traceback) for an entry without
    ``=``; here that is an argparse error naming the entry and the expected form.
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Sequence[str] | str | None, option_string: str | None = None) -> None:
        from mmengine.config import DictAction

        options = dict(getattr(namespace, self.dest, None) or {})
        for entry in [values] if isinstance(values, str) else values or []:
            key, sep, value = entry.partition('=')
            if not sep or not key:
                raise argparse.ArgumentError(
                    self, f'{entry!r} is not KEY=VALUE; write e.g. train_cfg.max_epochs=2 '
                    '(lists as key="[a,b]")')
            options[key] = DictAction._parse_iterable(value)
        setattr(namespace, self.dest, options)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``config [checkpoint]``: the model a deploy / analysis tool works on (random weights
    without a checkpoint)."""
    parser.add_argument('config', help='classifier, detector or segmentor config')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='training or fused checkpoint (omit for random weights)')


def positive_int(text: str) -> int:
    """argparse ``type`` for counts (processes, images): an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def add_cfg_options_argument(parser: argparse.ArgumentParser) -> None:
    """Adds the ``--cfg-options`` argument every config-driven tool takes."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=CfgOptionsAction, metavar='KEY=VALUE',
        help='override config entries, e.g. train_cfg.max_epochs=2 '
        'model.backbone.norm_cfg.type=BN; lists as key="[a,b]", list items as key.0.x=v')


def add_unsafe_unpickle_argument(parser: argparse.ArgumentParser, what: str = 'CHECKPOINT') -> None:
    """The opt-in to full unpickling of a trusted file (:data:`~repnext_mm.apis.checkpoint.UNSAFE_FLAG`)."""
    from repnext_mm.apis.checkpoint import UNSAFE_FLAG

    parser.add_argument(UNSAFE_FLAG, dest='unsafe_full_unpickle', action='store_true',
                        help=f'unpickle arbitrary objects in {what} (only for files you trust: '
                        'unpickling can run code)')


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments ``tools/train.py`` and ``tools/test.py`` share (work dir, overrides, launcher)."""
    from repnext_mm.engine.launcher import LAUNCHERS

    parser.add_argument('--work-dir', help='folder for logs, checkpoints and metrics '
                        '(default: the config\'s work_dir, else ./work_dirs/<config name>)')
    add_cfg_options_argument(parser)
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher (tools/dist_*.sh pass "pytorch")')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)


def parse_run_args(parser: argparse.ArgumentParser,
                   argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses ``argv``; returns the arguments as keywords (without ``local_rank``).

    ``LOCAL_RANK`` is exported from ``--local-rank`` for launchers that pass the flag only.
    """
    import os

    args = vars(parser.parse_args(argv))
    local_rank = args.pop('local_rank')
    os.environ.setdefault('LOCAL_RANK', str(local_rank))
    return args


@contextlib.contextmanager
def _temporaries_removed_on_sigterm() -> Iterator[None]:
    """A SIGTERM (``kill PID``, a scheduler's stop) ends the tool as it would have ended anyway,
    after removing the temporaries of the outputs it was writing: Python runs no ``finally``
    for a signal it does not handle, so :func:`~repnext_mm.utils.fileio.atomic_write` could not.
    Only where SIGTERM has its default action and in the main thread (elsewhere a handler can
    neither be set nor be expected)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        import os

        from repnext_mm.utils.fileio import remove_active_temporaries

        remove_active_temporaries()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # die of the signal, as without this handler

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_cli(main: Callable[[Sequence[str] | None], Any],
            argv: Sequence[str] | None = None) -> int:
    """Runs a tool's ``main``; an :class:`InputError` becomes one ``error:`` line and its
    ``exit_status`` (2 unless the error says otherwise).

    The last line of defence for writes that do not go through
    :func:`~repnext_mm.utils.fileio.atomic_write` (a library's own log or image file): an
    uncaught ``OSError`` that names its file and whose errno is the machine's doing
    (:data:`~repnext_mm.utils.errors.ENVIRONMENT_ERRNO_FIXES`: no space, quota, read-only file
    system, permission) is one ``error:`` line naming the file, status 2. Any other
    ``OSError`` keeps its traceback: without a file name, or with an errno such as "no such
    file", it can be a bug's (a path the code built wrong), and the traceback finds it.

    Returns:
        The exit status: ``main``'s own if it returns an int, else 0.
    """
    try:
        with _temporaries_removed_on_sigterm():
            result = main(argv)
    except InputError as error:
        print(f'error: {error}', file=sys.stderr)
        return error.exit_status
    except OSError as error:
        description = error.filename and describe_os_error(error.filename, error)
        if not description:
            raise
        print(f'error: cannot use {description}', file=sys.stderr)
        return INPUT_ERROR_STATUS
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
