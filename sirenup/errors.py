"""Errors the CLI turns into a one-line message and an exit code.

An error about one option carries it (``option="tile"``: the parameter's name) and a message
that follows it ("8: must be 0 (whole image) or at least 32"); the library's errors never
write a command-line flag. ``describe`` joins the two: by the option's name for a reader of the
library (``str(error)``), by its flag for the CLI (``sirenup.cli.console``, the one place that
knows flags). Another option named inside the message is written ``mention("overwrite")``.
``detail``: the error this one wraps, described the same way, in parentheses.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

# A mention of an option inside a message: its name between NULs, which no path holds; only
# a plain name is read so (text from elsewhere cannot make anything else of it).
_MENTION = re.compile("\0([a-z_]+)\0")


def mention(option: str) -> str:
    """``option`` named inside an error's message (``describe`` spells it)."""
    return f"\0{option}\0"


class SirenupError(Exception):
    """A failure the user can act on: exit code 1."""

    exit_code = 1

    def __init__(self, message: str = "", *, option: str | None = None,
                 detail: SirenupError | None = None):
        super().__init__(message)
        self.message, self.option, self.detail = message, option, detail

    def __str__(self) -> str:
        return describe(self)


    def renamed(self, old: str, new: str) -> SirenupError:
        """This error about option ``new`` wherever it names ``old``: for an option that is
        resolved as another is (``train --init`` names a model as ``--model`` does)."""
        error = copy.copy(self)
        error.message = self.message.replace(mention(old), mention(new))
        error.option = new if self.option == old else self.option
        error.args = (error.message,)
        return error


class UsageError(SirenupError):
    """Bad options or arguments: exit code 2."""

    exit_code = 2


class OptionValueError(UsageError, ValueError):
    """A bad option value found by code that validates with ValueError (the training
    configs): a usage error for the CLI, a ValueError for that code's callers."""


def describe(error: BaseException, spell: Callable[[str], str] = str) -> str:
    """``error``'s message with its option spelled by ``spell`` (the CLI: the flag) before it:
    '<option> <message>', or '<option>: ...' for a message that starts with ':'; options it
    mentions spelled the same way."""
    if not isinstance(error, SirenupError):
        return str(error)
    text = _MENTION.sub(lambda found: spell(found.group(1)), error.message)
    if error.option is not None:
        text = f"{spell(error.option)}{'' if text.startswith(':') else ' '}{text}"
    if error.detail is not None:
        text += f" ({describe(error.detail, spell)})"
    return text


def typed_line(error: BaseException) -> str:
    """An unexpected error in one line: 'Type: first line of its message' (the type alone
    when it says nothing)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
