"""The one exception type for problems a user can fix."""


class InputError(Exception):
    """Bad input to a tool or API: a file, config, option or argument.

    The message names the problem and the fix. The command line tools print it as one
    ``error: ...`` line without a traceback and exit with status 2
    (:func:`repnext_mm.cli.run_cli`), so everything needed to act on it must be in the message.
    """
