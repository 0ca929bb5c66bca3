"""The one exception type for problems a user can fix, and the OS errors that are such problems."""
from __future__ import annotations

import errno
import os


class InputError(Exception):
    """Bad input to a tool or API: a file, config, option or argument.

    The message names the problem and the fix. The command line tools print it as one
    ``error: ...`` line without a traceback and exit with :attr:`exit_status`
    (:func:`repnext_mm.cli.run_cli`), so everything needed to act on it must be in the message.
    """

    #: The tool's exit status: 2, argparse's for bad input; a subclass may choose another
    #: (an interrupted run exits with 130, the shell's status for SIGINT).
    exit_status: int = 2


#: ``OSError``s that come from the machine, not from the code, with what the user does about
#: them: a full disk or quota, a file too large for the file system, a read-only mount, missing
#: permission. Tools report them as one line naming the path. Other errnos (a missing file,
#: "not a directory") can be a bug's (a path the code built wrong) and keep their traceback.
ENVIRONMENT_ERRNO_FIXES: dict[int, str] = {
    errno.ENOSPC: 'free space on that disk or choose a location on another one',
    errno.EDQUOT: 'free space within your disk quota or choose a location on another disk',
    errno.EFBIG: 'choose a location on a file system that takes larger files',
    errno.EROFS: 'choose a location on a writable file system (this one is mounted read-only)',
    errno.EACCES: 'fix the permissions or choose another location',
    errno.EPERM: 'fix the permissions or choose another location',
}


def describe_os_error(path: str | os.PathLike, error: OSError,
                      fix: str | None = None) -> str | None:
    """``'<path>: <strerror> [Errno N]; <fix>'`` for an error of :data:`ENVIRONMENT_ERRNO_FIXES`.

    Args:
        path: The file the error is about (``error.filename`` may be a temporary, or absent).
        error: The error.
        fix: Advice instead of the errno's default, e.g. naming the tool's option.

    Returns:
        The description, or ``None`` for an errno that may be a bug's (no fix to name).
    """
    if error.errno not in ENVIRONMENT_ERRNO_FIXES:
        return None
    reason = error.strerror or os.strerror(error.errno)
    return f'{path}: {reason} [Errno {error.errno}]; {fix or ENVIRONMENT_ERRNO_FIXES[error.errno]}'


class OutputWriteError(InputError, OSError):
    """Writing an output failed for a reason of the machine (:data:`ENVIRONMENT_ERRNO_FIXES`).

    Raised by :func:`repnext_mm.utils.fileio.atomic_write`, which has already removed its
    temporary: the output's previous content, if any, is unchanged. An :class:`InputError` (one
    ``error:`` line, exit status 2) that is also the ``OSError`` it replaces, with the same
    ``errno`` and ``strerror`` and the *final* path as ``filename`` (the failing call only knew
    the temporary, or, for ``torch.save`` into an open file, no path at all), so code that
    handles ``OSError`` by errno keeps working.

    Args:
        path: The output that could not be written.
        error: The original error; its errno must be a key of :data:`ENVIRONMENT_ERRNO_FIXES`.
        fix: What to do instead of the errno's default advice, e.g. naming the tool's option.
    """

    def __init__(self, path: str | os.PathLike, error: OSError, fix: str | None = None) -> None:
        super().__init__(error.errno, error.strerror, str(path))
        description = describe_os_error(path, error, fix)
        if description is None:
            raise ValueError(f'errno {error.errno} is not an environment error: {error!r}')
        self.fix = fix
        self.message = f'cannot write {description}. Nothing was written.'

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:  # OSError's would call __init__ with (errno, strerror, path)
        return type(self), (self.filename, OSError(self.errno, self.strerror), self.fix)
