"""Errors the CLI turns into a one-line message and an exit code."""


class SirenupError(Exception):
    """A failure the user can act on: exit code 1."""

    exit_code = 1


class UsageError(SirenupError):
    """Bad options or arguments: exit code 2."""

    exit_code = 2
