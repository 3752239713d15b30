"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class BregnetError(Exception):
    """A problem with the user's input (file, argument, data) explained in one line."""


class DataError(BregnetError):
    """Malformed or missing data: the message names the file and, where known, the line."""


class CheckpointError(BregnetError):
    """A checkpoint that is missing, corrupt, or of the wrong kind."""
