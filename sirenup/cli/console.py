"""One console for everything the CLI says.

Results (reports, tables, ``--json``) go to stdout through ``result``/``print_json``, so
``sirenup doctor > report.txt`` and ``sirenup models list | grep base`` work; progress bars,
messages, warnings and errors go to stderr (``console``).

User text is never markup: ``fail`` and ``handle_errors`` print the message as plain text;
``info`` and ``warn`` take rich markup, so callers escape what they did not write
(``rich.markup.escape``) or use ``info_text``/``warn_text``, which print plain text.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from sirenup.untrusted import one_line  # noqa: F401 (the CLI's modules import it here)

console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)  # results only
state = {"debug": False, "quiet": False}


def info(message: str) -> None:
    """A message in rich markup (escape user text in it), on one line, unless --quiet."""
    if not state["quiet"]:
        console.print(one_line(message), soft_wrap=True)


def warn(message: str) -> None:
    """A warning in rich markup (escape user text in it), on one line."""
    console.print(f"[yellow]warning:[/] {one_line(message)}", soft_wrap=True)


def info_text(text: str) -> None:
    """Plain text (paths, URLs, errors: never read as markup) on one line (see
    ``one_line``: a name's escape sequences or newline are shown, not obeyed), unless
    --quiet."""
    if not state["quiet"]:
        console.print(Text(one_line(text)), soft_wrap=True)


def warn_text(text: str) -> None:
    """A warning of plain text (never read as markup), on one line (see ``one_line``)."""
    console.print(Text.assemble(("warning:", "yellow"), " ", one_line(text)), soft_wrap=True)


PIPE_WIDTH = 160  # columns of tables written to a file or a pipe (rich's default is 80)


def result(renderable: Any) -> None:
    """A human-readable result (report, table) on stdout. Into a file or a pipe, tables are
    laid out PIPE_WIDTH columns wide (COLUMNS overrides), so rows stay whole for grep."""
    wide = not stdout.is_terminal and not os.environ.get("COLUMNS")
    target = Console(highlight=False, width=PIPE_WIDTH) if wide else stdout
    target.print(renderable)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _stdout_error(error: OSError) -> bool:
    """Whether an OSError without a file name is stdout's (full, closed): the file writes of
    sirenup name their file."""
    import errno

    return error.errno in {errno.ENOSPC, errno.EBADF, errno.EIO, errno.EFBIG}


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` (plain text: it holds paths and exception text) as an error, on one
    line."""
    console.print(Text.assemble(("error:", "red"), " ", one_line(message)), soft_wrap=True)
    return typer.Exit(code)


def handle_errors(command: Callable) -> Callable:
    """Turn exceptions into a one-line message and an exit code (1 failure, 2 usage).

    ``--debug`` re-raises instead, so the traceback shows.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from sirenup.errors import SirenupError

        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except BrokenPipeError:  # stdout's reader left (| head): no message, as 128+SIGPIPE
            raise typer.Exit(141) from None
        except SirenupError as error:
            if state["debug"]:
                raise
            raise fail(str(error), error.exit_code) from None
        except OSError as error:  # the file system's refusal (a name too long, ...) that no
            if state["debug"]:  # check caught first: the path and the reason, in words
                raise
            from sirenup.files import os_reason

            if not error.filename and _stdout_error(error):
                raise fail(f"cannot write the results to stdout ({os_reason(error)})") \
                    from None
            where = f"{error.filename}: " if error.filename else ""
            raise fail(f"{where}{os_reason(error)}") from None
        except Exception as error:
            if state["debug"]:
                raise
            lines = str(error).strip().splitlines()  # the first line: one-line errors
            raise fail(f"{type(error).__name__}: {lines[0] if lines else ''} (rerun with "
                       "--debug for details)") from None

    return wrapper
