"""Help that reads right, and Click's own usage errors as one line with exit 2."""

import pytest
import typer
from typer.testing import CliRunner

from sirenup.cli.app import app


def command_paths(command=None, path=()) -> list[tuple[str, ...]]:
    """Every command and group of the app, as argument lists ((), ('upscale',), ...)."""
    command = command or typer.main.get_command(app)
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths += command_paths(sub, (*path, name))
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "sirenup")
def test_help_renders_flags_as_flags_and_arguments_by_name(path):
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for bad in ("<bool>", "{input}", "{", "list["):
        assert bad not in result.output, f"{bad!r} in the help of {path}:\n{result.output}"


def test_every_command_is_covered():
    names = {p[0] for p in command_paths() if p}
    assert {"train", "upscale", "batch", "compare", "bench", "models", "doctor"} <= names


@pytest.mark.parametrize("args, says", [
    (["upscale", "--bogus", "x.png"], "No such option: --bogus"),
    (["upscale", "x.png", "--scale", "abc"], "'abc' is not a valid float"),
    (["batch"], "Missing argument"),
    (["models", "bogus"], "No such command 'bogus'"),
])
def test_click_usage_errors_are_one_line_with_exit_2(args, says):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and says in lines[0]
    assert "--help" in lines[0]
    assert result.stdout == ""


def test_no_arguments_still_shows_help():
    result = CliRunner().invoke(app, [])
    assert "Usage" in result.output
    assert "error:" not in result.output
