"""Progress on stderr for long work (only on a terminal, never with --quiet), and ``-`` as
the input (stdin) and the output (stdout) of ``sirenup upscale``."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sirenup.cli import batch as cli_batch
from sirenup.cli import console as cli_console

BAR = "━"


def noise_png(path, width, height):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_tiler_reports_progress_up_to_the_total():
    import torch

    from sirenup.inference.tiler import upscale_into
    from sirenup.inference.upscaler import load_upscaler

    upscaler = load_upscaler(None, device="cpu")
    calls = []
    lr = torch.rand(1, 3, 70, 90)
    upscale_into(upscaler.model, lr, (140, 180), lambda *a: None, tile=32, overlap=4,
                 progress=lambda done, total: calls.append((done, total)))
    assert len(calls) > 9  # per band of every tile
    dones = [done for done, _ in calls]
    assert dones == sorted(dones) and len({total for _, total in calls}) == 1
    assert dones[-1] == calls[-1][1]


@pytest.fixture
def terminal(monkeypatch):
    """stderr's console as a terminal writing into a buffer; bars at once (no 1 s wait)."""
    buffer = io.StringIO()
    fake = cli_console.Console(file=buffer, force_terminal=True, width=100)
    monkeypatch.setattr(cli_console, "console", fake)
    monkeypatch.setattr(cli_batch, "console", fake)
    monkeypatch.setattr(cli_console, "BAR_AFTER_S", 0.0)
    return buffer


def test_upscale_bar_on_a_terminal(invoke, tmp_path, terminal):
    src = noise_png(tmp_path / "in.png", 80, 60)
    result = invoke("upscale", src, "-o", tmp_path / "o.png", "--scale", "2", "--tile", "32")
    assert result.exit_code == 0, result.output
    assert BAR in terminal.getvalue() and "100%" in terminal.getvalue()


def test_upscale_no_bar_with_quiet(invoke, tmp_path, terminal):
    src = noise_png(tmp_path / "in.png", 80, 60)
    result = invoke("-q", "upscale", src, "-o", tmp_path / "o.png", "--scale", "2",
                    "--tile", "32")
    assert result.exit_code == 0, result.output
    assert BAR not in terminal.getvalue()


def test_batch_shows_the_current_image_under_the_folder_bar(invoke, tmp_path, terminal,
                                                           monkeypatch):
    from rich.progress import Progress

    rows = []  # every bar's description, as it is added (image rows last a moment only)
    add_task = Progress.add_task
    monkeypatch.setattr(Progress, "add_task", lambda self, description, **kw: (
        rows.append(description), add_task(self, description, **kw))[1])
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        noise_png(folder / name, 80, 60)
    result = invoke("batch", folder, tmp_path / "out", "--scale", "2", "--tile", "32")
    assert result.exit_code == 0, result.output
    assert "images" in terminal.getvalue() and BAR in terminal.getvalue()
    assert [row.strip() for row in rows[1:]] == ["a.png", "b.png"]  # under the folder's


def run_with_stderr_on_a_pty(args: list[str]) -> tuple[int, str]:
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return process.wait(), b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_upscale_moving_bar_under_a_pseudo_terminal(tmp_path):
    """Seconds of work (1600x1200 at x2 on a CPU, the issue's case): the bar appears after a
    second and moves."""
    src = noise_png(tmp_path / "in.png", 1600, 1200)
    code, stderr = run_with_stderr_on_a_pty(
        [sys.executable, "-m", "sirenup", "upscale", str(src), "-o", str(tmp_path / "o.png"),
         "--scale", "2", "--device", "cpu"])
    assert code == 0, stderr
    assert BAR in stderr and "ETA" in stderr
    percents = {int(p) for p in __import__("re").findall(r"(\d+)%", stderr)}
    assert len(percents) >= 2 and max(percents) == 100  # it moved, to the end


def test_no_bar_characters_when_stderr_is_not_a_terminal(tmp_path):
    src = noise_png(tmp_path / "in.png", 200, 150)
    out = subprocess.run([sys.executable, "-m", "sirenup", "upscale", str(src), "-o",
                          str(tmp_path / "o.png"), "--scale", "2", "--device", "cpu"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert BAR not in out.stderr and "ETA" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1  # the summary line only


def test_stdin_to_stdout_gives_a_png(runner, tmp_path):
    from sirenup.cli.app import app

    data = noise_png(tmp_path / "in.png", 40, 30).read_bytes()
    result = runner.invoke(app, ["upscale", "-", "-o", "-", "--scale", "2", "--device", "cpu"],
                           input=data)
    assert result.exit_code == 0, result.stderr
    with Image.open(io.BytesIO(result.stdout_bytes)) as im:
        assert im.format == "PNG" and im.size == (80, 60)
    assert " - 40x30 -> - 80x60 " in result.stderr


def test_stdout_format_option(runner, tmp_path):
    from sirenup.cli.app import app

    src = noise_png(tmp_path / "in.png", 40, 30)
    result = runner.invoke(app, ["upscale", str(src), "-o", "-", "-f", "jpg", "--scale", "2"])
    assert result.exit_code == 0, result.stderr
    with Image.open(io.BytesIO(result.stdout_bytes)) as im:
        assert im.format == "JPEG" and im.size == (80, 60)
    assert not (tmp_path / "-").exists()


def test_stdin_to_a_file(runner, tmp_path):
    from sirenup.cli.app import app

    data = noise_png(tmp_path / "in.png", 40, 30).read_bytes()
    out = tmp_path / "o.png"
    result = runner.invoke(app, ["upscale", "-", "-o", str(out), "--scale", "2"], input=data)
    assert result.exit_code == 0, result.stderr
    assert Image.open(out).size == (80, 60)


@pytest.mark.parametrize(("args", "stdin", "code", "says"), [
    (["upscale", "-", "--scale", "2"], b"x", 2, "give --output"),
    (["upscale", "-", "-o", "-"], b"", 1, "standard input is empty"),
    (["upscale", "-", "-o", "-"], b"not an image", 1, "-: not an image"),
    (["upscale", "-", "-o", "-", "--json"], b"x", 2, "--json and -o -"),
])
def test_stdio_errors_are_one_line(runner, args, stdin, code, says):
    from sirenup.cli.app import app

    result = runner.invoke(app, args, input=stdin)
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "/tmp" not in lines[0], result.stderr


def test_upscale_of_a_folder_names_batch(invoke, tmp_path):
    result = invoke("upscale", tmp_path)
    assert result.exit_code == 1
    assert "sirenup batch" in result.stderr


def test_shell_pipe(tmp_path):
    """cat in.png | sirenup upscale - -o - --scale 2 > out.png"""
    src = noise_png(tmp_path / "in.png", 40, 30)
    out = tmp_path / "out.png"
    with open(src, "rb") as stdin, open(out, "wb") as stdout:
        done = subprocess.run([sys.executable, "-m", "sirenup", "upscale", "-", "-o", "-",
                               "--scale", "2"], stdin=stdin, stdout=stdout,
                              stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (80, 60)


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_stdin_or_stdout_on_a_terminal_is_refused(tmp_path):
    import pty

    src = noise_png(tmp_path / "in.png", 8, 8)
    master, slave = pty.openpty()
    try:
        for args, stdin, stdout, says in (
                (["-", "-o", str(tmp_path / "o.png")], slave, subprocess.DEVNULL,
                 "standard input is a terminal"),
                ([str(src), "-o", "-"], subprocess.DEVNULL, slave,
                 "standard output is a terminal")):
            done = subprocess.run([sys.executable, "-m", "sirenup", "upscale", *args],
                                  stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                  text=True, timeout=120)
            assert done.returncode == 2 and says in done.stderr, done.stderr
    finally:
        os.close(master)
        os.close(slave)
