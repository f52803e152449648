"""The ``sirenup`` Typer app: global flags and one module per subcommand.

Command modules import only typer at module level; torch and the engine are imported inside
the commands, so ``sirenup --help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
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


class _ClosedStdout(io.TextIOBase):
    """Stands for a stdout the shell closed (``>&-``): writing to it is an error (one line,
    exit 1), not a silent loss or a write into whatever file took descriptor 1."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "stdout is closed")


def _guard_stdout() -> None:
    """Descriptor 1 closed: hold it with /dev/null (so that no file sirenup opens gets it and
    receives the results by mistake) and make sys.stdout refuse writes."""
    if sys.stdout is not None:
        return
    with contextlib.suppress(OSError):
        fd = os.open(os.devnull, os.O_WRONLY)
        if fd != 1:
            os.close(fd)
    sys.stdout = _ClosedStdout()


def _stdout_failed(error: BaseException, code: int) -> int:
    """What is left to say when stdout could not take the results: nothing on a closed pipe
    (``| head``: 141, as 128 + SIGPIPE), else one line on stderr and exit 1 (unless the
    command already failed with its own code). Pending output is sent to /dev/null so that
    Python's own flush at exit prints no traceback."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    if isinstance(error, BrokenPipeError):
        return 141
    if isinstance(code, int) and code != 0:
        return code  # the command failed and said why already
    if isinstance(error, OSError):
        from sirenup.files import os_reason

        reason = os_reason(error)
    else:
        reason = str(error) or type(error).__name__
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"error: cannot write the results to stdout ({reason})\n")
        sys.stderr.flush()
    return 1


_STDOUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EBADF, errno.EIO, errno.EFBIG,
                  getattr(errno, "EDQUOT", errno.ENOSPC)}


def main() -> None:
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)
    _guard_stdout()
    try:
        app()
    except SystemExit as done:
        code = done.code
    except OSError as error:  # raised outside a command (--version, --help): stdout's
        if error.errno not in _STDOUT_ERRNOS:
            raise
        sys.exit(_stdout_failed(error, 0))
    else:
        code = 0
    try:  # what is still buffered must reach stdout now, while an error can be one line
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError) as error:
        sys.exit(_stdout_failed(error, code if isinstance(code, int) else 1))
    sys.exit(code)
