"""User-facing errors.

The rule (README, DESIGN.md): a fault the *user* can fix (a bad argument, a missing or malformed
file, a checkpoint of the wrong kind, a limit exceeded) raises a :class:`BregnetError` subclass
whose message is one line naming what is wrong and, where it helps, what to do. The CLI prints
those (and the operating system's file errors, :class:`OSError`) as one line and exits with code 2.
Every other exception is a bug and keeps its traceback, so that it can be found and fixed.
"""


class BregnetError(Exception):
    """A problem with the user's input (file, argument, data) explained in one line."""


class UsageError(BregnetError):
    """A command-line argument or API argument out of its type or range."""


class ConfigError(BregnetError):
    """A training recipe or override that is not valid (unknown key, wrong type or value)."""


class DataError(BregnetError):
    """Malformed or missing data: the message names the file and, where known, the line."""


class CheckpointError(BregnetError):
    """A checkpoint that is missing, corrupt, or of the wrong kind."""


class LimitError(BregnetError):
    """An input larger than a configured limit (pixels, classes, model size, file size).

    Raised *before* the memory is allocated; the message names the limit and how to raise it.
    """


class OutputError(BregnetError):
    """An output path that cannot be written, or that would overwrite an input or a file that
    bregnet must not replace."""
