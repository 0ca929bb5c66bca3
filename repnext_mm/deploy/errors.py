"""The one exception type the deploy tools raise for problems a user can fix."""


class DeployError(Exception):
    """Bad input to a deploy tool (file, config, option); the message names the problem and the fix.

    The command line tools print the message without a traceback and exit with status 2, so
    everything needed to act on it must be in the message itself.
    """
