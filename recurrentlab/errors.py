"""User-facing errors: one line that says what is wrong and how to fix it."""


class RecurrentLabError(Exception):
    """An error caused by the user's input (config, data, workdir), not by a bug.

    The command line prints ``str(error)`` as a single line and exits with status 2.
    """


class ArgumentError(RecurrentLabError, ValueError):
    """An argument outside its range: a command-line flag, or a library function's argument."""


class ConfigError(RecurrentLabError):
    """A config key or value that cannot work."""


class DataError(RecurrentLabError):
    """A missing, truncated or corrupt data file."""


class WorkdirError(RecurrentLabError):
    """A workdir that holds another run, or a checkpoint that cannot be read."""


class NonFiniteError(RecurrentLabError):
    """A NaN or Inf in the loss or the gradients."""
