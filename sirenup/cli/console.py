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


def result(renderable: Any) -> None:
    """A human-readable result (report, table) on stdout. Into a file or a pipe, as wide as
    the widest row needs, so every row of a table stays on one line for grep."""
    if stdout.is_terminal:
        stdout.print(renderable)
        return
    from rich.measure import Measurement

    wide = Console(highlight=False, width=MAX_PIPE_WIDTH)
    need = Measurement.get(wide, wide.options, renderable).maximum
    Console(highlight=False, width=max(need, 40)).print(renderable)


MAX_PIPE_WIDTH = 4000  # columns a result may take in a file or a pipe


def result_line(text: str) -> None:
    """A line of plain text among the results (stdout), never wrapped or read as markup."""
    stdout.print(Text(text), soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _stdout_error(error: OSError) -> bool:
    """Whether an OSError without a file name is stdout's (full, closed): the file writes of
    sirenup name their file."""
    import errno

    return error.errno in {errno.ENOSPC, errno.EBADF, errno.EIO, errno.EFBIG}


def flag(option: str) -> str:
    """The command-line flag of a library option name: every flag is the parameter's name
    with dashes (``max_output_pixels`` -> ``--max-output-pixels``)."""
    return "--" + option.replace("_", "-")


def error_text(error: BaseException) -> str:
    """What the CLI says of ``error``, in one place: a sirenup error's message with the
    options it concerns spelled as flags; anything else as 'Type: first line' and where the
    details are."""
    from sirenup.errors import SirenupError, describe, typed_line

    if isinstance(error, SirenupError):
        return describe(error, flag)
    return f"{typed_line(error)} (rerun with --debug for details)"


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
            raise fail(error_text(error), error.exit_code) from None
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
            raise fail(error_text(error)) from None

    return wrapper


def bars_shown() -> bool:
    """Progress bars go to stderr only when it is a terminal, and never with --quiet."""
    return console.is_terminal and not state["quiet"]


def progress_columns(unit: str | None = None, *extra) -> tuple:
    """The columns of every sirenup bar: what, bar, done/total ``unit`` (None: a percentage),
    ``extra`` columns, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    amount = (TaskProgressColumn(),) if unit is None else (MofNCompleteColumn(),
                                                          TextColumn(unit))
    return (TextColumn("[bold]{task.description}"), BarColumn(), *amount, *extra,
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())


BAR_AFTER_S = 1.0  # work that ends sooner shows no bar


class WorkBar:
    """``bar(done, total)`` from the library's progress callbacks -> a bar with ETA on stderr
    (``bars_shown``), drawn once the work has lasted BAR_AFTER_S, so quick work stays silent.
    Inside another rich Progress (``within``), a row under its bars, removed at the end."""

    def __init__(self, description: str, unit: str | None = None, *, within=None, **fields):
        import time

        self.description, self.unit, self.within = description, unit, within
        self.fields = fields  # what ``within``'s own columns show
        self.enabled = bars_shown() if within is None else True
        self.started, self.progress, self.task = time.perf_counter(), None, None

    def __call__(self, done: int, total: int) -> None:
        import time

        if not self.enabled:
            return
        if self.task is None:
            if time.perf_counter() - self.started < BAR_AFTER_S:
                return
            self.progress = self.within
            if self.progress is None:
                from rich.progress import Progress

                self.progress = Progress(*progress_columns(self.unit), console=console,
                                         transient=True)
                self.progress.start()
            self.task = self.progress.add_task(self.description, total=total, **self.fields)
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.task is not None:
            if self.progress is self.within:
                self.progress.remove_task(self.task)
            else:
                self.progress.stop()
        self.progress = self.task = None

    def __enter__(self) -> WorkBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
