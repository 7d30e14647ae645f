"""User-facing errors: anything a user can fix by changing a config, a flag or a file.

Tools catch :class:`UserError` at the top level and print its one-line message with exit code 2,
so a typo never costs a traceback (see ``paddle_lenet.cli``).
"""


class UserError(Exception):
    """A problem in the user's input; the message names it and says how to fix it."""

    exit_code = 2


class ConfigError(UserError):
    """Unknown key, wrong type or value, malformed override, unreadable YAML."""


class DataError(UserError):
    """Missing, truncated or corrupt data files, or a download that cannot happen."""


class RunFolderError(UserError):
    """A run folder that already holds a run, or has nothing to resume/evaluate."""


class TrainingStopped(Exception):
    """Training ended early on purpose (signal, non-finite loss); carries the exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
