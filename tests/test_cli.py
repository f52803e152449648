"""What every command's failures look like (``cli/app.py``, ``cli/console.py``): one line on
stderr, never read as markup, line breaks and control characters escaped, the right exit code
(1, 2, 130 on Ctrl-C, 143 on SIGTERM), results on stdout, a full or closed stdout in one line,
and nothing partial left behind; names a user or a weights file chose are shown escaped."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import build_image
from helpers import make_input, no_traceback, one_error_line, png, sirenup, temps_in, write_png

from sirenup import files
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
from sirenup.models.weights import save_weights

BRACKETED = ["holiday [edited].png", "[bold]x.png", "a]b.png", "open[.png"]


@pytest.mark.parametrize("name", BRACKETED)
def test_bracketed_names_in_errors(invoke, tmp_path, name):
    bad = tmp_path / name
    bad.write_bytes(b"not an image at all")
    result = invoke("upscale", bad, "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert str(bad) in line  # shown as it is: nothing eaten as markup


def test_bracket_slash_path(invoke, tmp_path):
    folder = tmp_path / "bad["
    folder.mkdir()
    path = folder / "x].png"  # the path reads bad[/x].png
    for run in (lambda: invoke("upscale", path, "--device", "cpu"),
                lambda: invoke("-q", "models", "download", path.as_uri().replace("%5B", "[")
                               .replace("%5D", "]")),
                lambda: invoke("compare", path, "--device", "cpu")):
        result = run()
        assert result.exit_code in (1, 2)
        line = one_error_line(result)
        assert "x]" in line
    path.write_bytes(b"")
    result = invoke("batch", path, tmp_path / "out", "--device", "cpu")
    no_traceback(result)
    assert result.exit_code == 1 and f"{path}" in result.stderr


def test_bracketed_names_succeed_and_show(invoke, tmp_path):
    src = make_input(tmp_path / "in", "png", name="holiday [edited]")
    result = invoke("upscale", src, "--device", "cpu", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert "holiday [edited]_x2.png" in result.stderr
    batch = invoke("batch", src.parent, tmp_path / "out", "--device", "cpu", "--scale", "2",
                   "--suffix", "[bold]")
    assert batch.exit_code == 0, batch.output
    assert (tmp_path / "out" / "holiday [edited][bold].png").exists()


def test_reports_go_to_stdout(invoke, cache_root, make_image, tmp_path, monkeypatch):
    from sirenup.inference import devices

    monkeypatch.setattr(devices, "nvidia_driver_version", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    doctor = invoke("doctor", "--quick")
    assert "Versions" in doctor.stdout and "Versions" not in doctor.stderr
    listed = invoke("models", "list")
    assert listed.exit_code == 0
    assert "sirenup-base" in listed.stdout and listed.stderr == ""
    assert "clean images, most faithful" in listed.stdout
    src = make_image("in.png")
    batch = invoke("batch", src, tmp_path / "out", "--device", "cpu", "--scale", "2")
    assert batch.exit_code == 0
    assert "sirenup batch" in batch.stdout and "sirenup batch" not in batch.stderr


def test_newline_in_a_name_keeps_the_error_on_one_line(invoke, tmp_path):
    bad = tmp_path / "holiday\nphoto.png"
    bad.write_bytes(b"not an image")
    result = invoke("upscale", bad, "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "holiday\\nphoto.png" in line and "not an image" in line


def test_newline_in_a_name_keeps_a_warning_on_one_line(invoke, tmp_path):
    src = tmp_path / "two\nframes.gif"
    frames = [build_image("RGB").quantize(8), build_image("RGB").rotate(90).quantize(8)]
    frames[0].save(src, save_all=True, append_images=frames[1:])
    result = invoke("upscale", src, "-o", tmp_path / "out.png", "--device", "cpu",
                    "--scale", "2")
    assert result.exit_code == 0, result.output
    [warning] = [x for x in result.stderr.splitlines() if "animated" in x]
    assert warning.startswith("warning:") and "two\\nframes.gif: animated image" in warning


def test_interrupted_write_leaves_the_old_file(invoke, tmp_path, monkeypatch):
    src = write_png(tmp_path / "a.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"the previous result")
    calls = [0]

    def interrupted(fd, data):
        calls[0] += 1
        if calls[0] > 1:
            raise KeyboardInterrupt
        return os.write(fd, data[:100])

    monkeypatch.setattr(files, "_write", interrupted)
    result = invoke("upscale", src, "-o", out, "--device", "cpu", "--scale", "2")
    assert result.exit_code == 130
    assert one_error_line(result) == "error: interrupted"
    assert out.read_bytes() == b"the previous result" and temps_in(tmp_path) == []


def test_names_the_output_encoding_lacks_are_escaped(tmp_path):
    """stdout in ASCII (PYTHONIOENCODING=ascii, an old C locale): a table naming é.png is
    printed with escapes, not lost to a UnicodeEncodeError after the work is done."""
    from typer.testing import CliRunner

    from sirenup.cli.app import app

    src = write_png(tmp_path / "in" / "été.png")
    (tmp_path / "in" / "brûlé.png").write_bytes(b"not an image")
    result = CliRunner(charset="ascii").invoke(
        app, ["batch", str(src.parent), str(tmp_path / "out"), "--device", "cpu",
              "--scale", "2"])
    no_traceback(result)
    assert result.exit_code == 1  # the bad file, nothing else
    assert "br\\xfbl\\xe9.png" in result.stdout and (tmp_path / "out" / "été.png").exists()


def test_sigterm_during_a_write_removes_the_temporary_file(invoke, tmp_path, monkeypatch):
    """main() turns SIGTERM into SystemExit(143), so the atomic write's cleanup runs (killed
    by the default action, the temporary file would stay)."""

    from sirenup.cli import app as app_module

    saved = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    monkeypatch.setattr("sys.argv", ["sirenup", "--version"])
    try:
        with pytest.raises(SystemExit):
            app_module.main()
        handler = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert handler is app_module._terminated
    src = write_png(tmp_path / "a.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"the previous result")

    def terminated(fd, data):
        os.write(fd, data[:100])
        handler(signal.SIGTERM, None)

    monkeypatch.setattr(files, "_write", terminated)
    result = invoke("upscale", src, "-o", out, "--device", "cpu", "--scale", "2")
    assert result.exit_code == 128 + signal.SIGTERM
    assert out.read_bytes() == b"the previous result" and temps_in(tmp_path) == []


@pytest.mark.parametrize("command", ["output", "input", "batch", "model", "train"])
def test_name_too_long_for_the_file_system_reads_as_words(invoke, tmp_path, command):
    """Python 3.11's Path.exists/is_dir raise on a 300-byte component: whatever command
    meets it says the path and "file name too long", not "OSError: [Errno 36] ..."."""
    src = write_png(tmp_path / "a.png")
    long = tmp_path / ("d" * 300)
    args = {"output": ("upscale", src, "-o", long / "x.png"),
            "input": ("upscale", long.with_suffix(".png")),
            "batch": ("batch", long.with_suffix(".png"), tmp_path / "out"),
            "model": ("upscale", src, "--model", long.with_suffix(".safetensors")),
            "train": ("train", long, "--out", tmp_path / "run")}[command]
    result = invoke(*args, "--device", "cpu")
    assert result.exit_code in (1, 2)
    line = one_error_line(result)
    assert "file name too long" in line and "Errno" not in line


@pytest.mark.parametrize(("text", "shown"), [
    ("a\nb", "a\\nb"), ("cr\rtab\t", "cr\\rtab\\t"), ("esc\x1b[31m", "esc\\x1b[31m"),
    ("photo\u202egnp.exe", "photo\\u202egnp.exe"), ("line\u2028sep", "line\\u2028sep"),
    ("bytes\udcff", "bytes\\udcff"), ("été 東京 🙂", "été 東京 🙂"),
    ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧")])
def test_one_line_escapes_only_what_breaks_or_disguises_a_line(text, shown):
    from sirenup.cli.console import one_line

    assert one_line(text) == shown


HOSTILE_NAME = "evil\x1b[2J\x1b]0;owned\x07\nfake line\u202eexe.png[/bogus][red]" + "A" * 10_000


def hostile_weights(path: Path) -> Path:

    model = LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=1, hidden=16, n_hidden=1))
    save_weights(path, model, {"name": HOSTILE_NAME})
    return path


def assert_escaped(text: str) -> None:
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "fake line" not in text.replace("\\nfake line", "")
    assert "A" * 200 not in text


def test_a_weights_files_name_is_shown_escaped_and_cut(invoke, tmp_path):
    weights = hostile_weights(tmp_path / "evil.safetensors")
    src = png(tmp_path / "in" / "a.png")
    result = invoke("upscale", src, "-o", tmp_path / "o.png", "--model", weights,
                    "--scale", "2", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert_escaped(result.stderr)
    assert_escaped(json.loads(result.stdout)["model"])
    result = invoke("batch", tmp_path / "in", tmp_path / "out", "--model", weights,
                    "--scale", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert_escaped(result.output)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["models", "list"],
                                  ["models", "path"], ["upscale", "--help"]])
@pytest.mark.parametrize("redirect", [">/dev/full", ">&-"])
def test_a_full_or_closed_stdout_is_one_line(args, redirect):
    result = sirenup(*args, shell_redirect=redirect)
    assert result.returncode in (1, 120, 141), result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "stdout" in result.stderr
