"""The ``sirenup`` Typer app: global flags and one module per subcommand.

Command modules import only typer at module level; torch and the engine are imported inside
the commands, so ``sirenup --help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import contextlib
import signal
import sys

import typer

from sirenup import __version__
from sirenup.cli import batch, bench, compare, doctor, models, train, upscale
from sirenup.cli.console import fail, state


class _Group(typer.core.TyperGroup):
    """The top-level group: Click's own usage errors (an unknown option, a value that does not
    parse, a missing argument) as the one-line message and exit 2 that every other error
    gives, not Click's multi-line box."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        import click

        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as error:
            sys.exit(_click_error(error).exit_code)
        except click.Abort:
            sys.exit(fail("aborted").exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def _click_error(error) -> typer.Exit:
    """One line: Click's message, and for a usage error where the command's help is. No line
    for a command given no arguments: its help is the message, and it is already printed."""
    message = error.format_message().strip()
    if not message:
        return typer.Exit(error.exit_code)
    context = getattr(error, "ctx", None)
    if context is not None:
        message += f" (see '{context.command_path} --help')"
    return fail(message, error.exit_code)


app = typer.Typer(
    cls=_Group,
    name="sirenup",
    help="Upscale images to any resolution with a learned continuous model.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sirenup {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks, not one-line errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and results."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    state["debug"] = debug
    state["quiet"] = quiet
    for stream in (sys.stdout, sys.stderr):  # a name the terminal's encoding lacks: escaped,
        with contextlib.suppress(AttributeError, ValueError):  # not a UnicodeEncodeError
            stream.reconfigure(errors="backslashreplace")
    if quiet or "sirenup.hub.download" in sys.modules:  # its default is verbose: imported
        from sirenup.hub import download  # only to silence it (http.client, email: start-up)

        download.verbose = not quiet  # download messages and progress bar


app.command("train")(train.train)
app.command("upscale")(upscale.upscale)
app.command("batch")(batch.batch)
app.command("compare")(compare.compare)
app.command("bench")(bench.bench)
app.add_typer(models.app, name="models")
app.command("doctor")(doctor.doctor)


def _terminated(signum, frame) -> None:
    """SIGTERM (kill, timeout, docker stop) as an exception, so that cleanups run: a temporary
    file being written is removed, a batch's pending write completes."""
    raise SystemExit(128 + signum)


def main() -> None:
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)
    app()
