"""One console for everything the CLI says.

Messages, progress and tables go to stderr; stdout carries only results that scripts consume
(``--json`` reports), so ``sirenup ... --json | jq`` always works.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

console = Console(stderr=True, highlight=False)
state = {"debug": False, "quiet": False}


def info(message: str) -> None:
    if not state["quiet"]:
        console.print(message, soft_wrap=True)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/] {message}", soft_wrap=True)
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
        except SirenupError as error:
            if state["debug"]:
                raise
            raise fail(str(error), error.exit_code) from None
        except Exception as error:
            if state["debug"]:
                raise
            raise fail(f"{type(error).__name__}: {error} (rerun with --debug for details)") \
                from None

    return wrapper
