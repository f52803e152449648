"""Hostile inputs found by the robustness audit (cases test_hostile.py did not hold): names
with line breaks or characters the output encoding lacks, output names the file system
refuses, a user's file where a batch output goes, link loops, malformed URLs, an unusable
model cache, multi-line server messages, pickles with code, weights whose output overflows,
corrupt EXIF, interrupted and terminated writes, and train's data, --out, --val and --resume.
The bar is test_hostile.py's: one line on stderr, exit 1 or 2, no partial file, nothing
clobbered.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import threading
import warnings
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import build_image
from PIL import Image
from test_hostile import no_traceback, one_error_line, temps_in

from sirenup import files

BASE = Path(__file__).resolve().parents[1] / "sirenup" / "assets" / "sirenup-base.safetensors"


def write_png(path: Path, mode: str = "RGB", size=(24, 20), **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    build_image(mode, size).save(path, "PNG", **options)
    return path


def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A PNG whose header declares ``width`` x ``height`` over a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))
    return path


# -- names -------------------------------------------------------------------------------------

def test_newline_in_a_name_keeps_the_error_on_one_line(invoke, tmp_path):
    bad = tmp_path / "holiday\nphoto.png"
    bad.write_bytes(b"not an image")
    result = invoke("upscale", bad, "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "holiday\\nphoto.png" in line and "not an image" in line


def test_newline_in_a_name_in_batch(invoke, tmp_path):
    write_png(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "bad\nname.png").write_bytes(b"not an image")
    result = invoke("batch", tmp_path / "in", tmp_path / "out", "--device", "cpu",
                    "--scale", "2", "--json")
    no_traceback(result)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["done"] == 1
    [failure] = report["failures"]
    assert failure["error"].startswith("not an image")  # not the name's second half
    [line] = [x for x in result.stderr.splitlines() if x.startswith("failed:")]
    assert "bad\\nname.png: not an image" in line



def test_newline_in_a_name_keeps_a_warning_on_one_line(invoke, tmp_path):
    src = tmp_path / "two\nframes.gif"
    frames = [build_image("RGB").quantize(8), build_image("RGB").rotate(90).quantize(8)]
    frames[0].save(src, save_all=True, append_images=frames[1:])
    result = invoke("upscale", src, "-o", tmp_path / "out.png", "--device", "cpu",
                    "--scale", "2")
    assert result.exit_code == 0, result.output
    [warning] = [x for x in result.stderr.splitlines() if "animated" in x]
    assert warning.startswith("warning:") and "two\\nframes.gif: animated image" in warning

def test_output_name_too_long_fails_that_file_only(invoke, tmp_path):
    write_png(tmp_path / "in" / "a.png")
    write_png(tmp_path / "in" / ("l" * 245 + ".png"))
    result = invoke("batch", tmp_path / "in", tmp_path / "out", "--suffix", "_upscaled",
                    "--device", "cpu", "--scale", "2", "--json")
    no_traceback(result)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["done"] == 1 and report["failed"] == 1
    assert "file name too long" in report["failures"][0]["error"]
    assert (tmp_path / "out" / "a_upscaled.png").exists()


# -- existing files ----------------------------------------------------------------------------

def test_batch_does_not_replace_a_non_image_in_an_outputs_place(invoke, tmp_path):
    write_png(tmp_path / "in" / "a.png")
    write_png(tmp_path / "in" / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "a.png"
    mine.write_text("the user's notes, not an image\n")
    args = ("batch", tmp_path / "in", out, "--device", "cpu", "--scale", "2", "--json")
    result = invoke(*args)
    no_traceback(result)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["done"] == 1 and "not replaced" in report["failures"][0]["error"]
    assert mine.read_text() == "the user's notes, not an image\n"
    again = invoke(*args, "--overwrite")
    assert again.exit_code == 0, again.output
    assert Image.open(mine).size == (48, 40)


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


# -- images ------------------------------------------------------------------------------------

def test_corrupt_exif_in_a_png_is_ignored_with_a_warning(invoke, tmp_path):
    src = write_png(tmp_path / "a.png", exif=bytes(range(7, 67)))  # not a TIFF structure
    result = invoke("upscale", src, "-o", tmp_path / "out.png", "--device", "cpu",
                    "--scale", "2")
    assert result.exit_code == 0, result.output
    assert "unreadable EXIF data ignored" in result.stderr
    assert Image.open(tmp_path / "out.png").size == (48, 40)


# -- weights and the model cache ---------------------------------------------------------------

class _Code:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_postscript_is_never_handed_to_ghostscript(invoke, tmp_path, monkeypatch):
    """Pillow decodes EPS by running Ghostscript (a PostScript interpreter: a crafted file is a
    program). upscale and batch refuse such a file in one line, train skips it, and no
    subprocess is ever started."""
    import subprocess

    from sirenup.training.data import load_images

    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or 1 / 0)
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: started.append(a) or 1 / 0)
    eps = tmp_path / "in" / "figure.eps"
    eps.parent.mkdir()
    build_image("RGB", (40, 32)).save(eps, "EPS")  # Pillow writes EPS without Ghostscript
    result = invoke("upscale", eps, "-o", tmp_path / "out.png", "--device", "cpu")
    assert result.exit_code == 1 and "Ghostscript" in one_error_line(result)
    result = invoke("batch", eps.parent, tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 1 and "Ghostscript" in result.output
    disguised = tmp_path / "data" / "figure.png"  # train lists images by extension
    disguised.parent.mkdir()
    disguised.write_bytes(eps.read_bytes())
    images, warned = load_images([disguised.parent], min_side=8)
    assert images == [] and "Ghostscript" in warned[0]
    assert started == [] and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_pickle_with_code_is_one_line_and_never_run(invoke, tmp_path, suffix):
    marker = tmp_path / "ran"
    weights = tmp_path / f"evil{suffix}"
    weights.write_bytes(pickle.dumps(_Code(marker)))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        result = invoke("upscale", write_png(tmp_path / "a.png"), "--model", weights,
                        "--device", "cpu")
    assert result.exit_code == 1
    assert str(weights) in one_error_line(result)
    assert [str(w.message) for w in shown] == []  # torch.load's notes on the pickle
    assert not marker.exists()


def test_model_folder_is_named_as_a_folder(invoke, tmp_path):
    folder = tmp_path / "weights.safetensors"
    folder.mkdir()
    result = invoke("upscale", write_png(tmp_path / "a.png"), "--model", folder,
                    "--device", "cpu")
    assert result.exit_code == 2
    assert "is a folder" in one_error_line(result)


@pytest.mark.parametrize(("url", "fragment"), [
    ("http://", "names no host"), ("https:///model.safetensors", "names no host"),
    ("http://:80/m", "names no host"), ("http://[::1/m.safetensors", "not a valid URL"),
    ("http://127.0.0.1:abc/m", "not a valid URL"), ("http://127.0.0.1:99999/m", "not a valid URL"),
    ("http://a b/m.safetensors", "spaces or control characters"),
    ("http://h/\x00.safetensors", "spaces or control characters")])
def test_malformed_url_is_bad_usage_at_once(invoke, cache_root, monkeypatch, url, fragment):
    from sirenup.hub import download

    def no_network(*args, **kwargs):
        raise AssertionError("connected")

    monkeypatch.setattr(download, "urlopen", no_network)
    result = invoke("-q", "models", "download", url)
    assert result.exit_code == 2
    assert fragment in one_error_line(result)


def test_very_long_url_name_is_cut_for_the_cache(invoke, cache_root):
    from loopback_server import LoopbackServer

    path = "/" + "w" * 400 + ".safetensors"
    with LoopbackServer({path: BASE.read_bytes()}) as server:
        result = invoke("-q", "models", "download", server.url(path))
    assert result.exit_code == 0, result.output
    [cached] = [p for p in cache_root.rglob("*.safetensors")]
    assert len(cached.name) <= 140 and cached.read_bytes() == BASE.read_bytes()


@pytest.mark.parametrize("blocker", ["cache_is_a_file", "lock_is_a_folder"])
def test_unusable_cache_is_one_clear_line(invoke, tmp_path, monkeypatch, blocker):
    from sirenup.hub import cache

    root = tmp_path / "cache"
    monkeypatch.setenv("SIRENUP_CACHE_DIR", str(root))
    url = BASE.as_uri()
    if blocker == "cache_is_a_file":
        root.write_text("not a folder")
    else:
        cache.lock_path(cache.entry_id(url)).mkdir(parents=True)
    result = invoke("-q", "models", "download", url)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "SIRENUP_CACHE_DIR" in line and "Error:" not in line


def test_mistyped_cache_meta_is_ignored(invoke, cache_root):
    entry = cache_root / "models" / "m-0123456789ab"
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps(
        {"filename": "m.safetensors", "size": "abc", "sha256": 5, "pinned": "yes"}))
    (entry / "m.safetensors").write_bytes(b"junk")
    for args in (("models", "list"), ("models", "list", "--json"), ("models", "verify")):
        result = invoke(*args)
        no_traceback(result)
        assert result.exit_code == 0, result.output
        assert "m-0123456789ab" not in result.stdout


class _RedirectLoop(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.path)
        self.end_headers()


def test_redirect_loop_is_one_line(invoke, cache_root):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RedirectLoop)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/m.safetensors"
        result = invoke("-q", "models", "download", url)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1
    assert "HTTP 302" in one_error_line(result)


# -- train's inputs ----------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_training_data_skips_bombs_fifos_and_folders(tmp_path):
    from sirenup.training.data import list_images, load_images

    write_png(tmp_path / "good.png", size=(40, 40))
    bomb_png(tmp_path / "bomb.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "folder.png").mkdir()
    assert [p.name for p in list_images([tmp_path])] == ["bomb.png", "good.png"]
    images, warnings = load_images([tmp_path], min_side=16)
    assert len(images) == 1
    [warning] = warnings
    assert "bomb.png" in warning and "decompression bomb" in warning


TRAIN = ("train", "--steps", "1", "--batch", "2", "--patch", "16", "--queries", "16",
         "--device", "cpu")


def test_train_out_that_is_a_file_is_bad_usage(invoke, tmp_path):
    write_png(tmp_path / "data" / "a.png", size=(64, 64))
    out = tmp_path / "run"
    out.write_text("not a folder")
    result = invoke(*TRAIN, tmp_path / "data", "--out", out)
    assert result.exit_code == 2
    assert "--out" in one_error_line(result) and out.read_text() == "not a folder"


def test_bad_val_image_fails_before_training(invoke, tmp_path, monkeypatch):
    from sirenup.training import loop

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(loop.Trainer, "run", no_training)
    write_png(tmp_path / "data" / "a.png", size=(64, 64))
    val = tmp_path / "val"
    write_png(val / "good.png", size=(64, 64))
    (val / "broken.png").write_bytes(b"")
    result = invoke(*TRAIN, tmp_path / "data", "--out", tmp_path / "run", "--val", val)
    assert result.exit_code == 1
    line = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "broken.png" in line[0] and "--val" in line[0]
    no_traceback(result)



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


@pytest.mark.parametrize("content", ["empty", "code", "list"])
def test_damaged_checkpoint_is_one_clear_line(invoke, tmp_path, content):
    import torch

    marker = tmp_path / "ran"
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = run / "checkpoint.pt"
    if content == "empty":
        checkpoint.write_bytes(b"")
    elif content == "code":
        checkpoint.write_bytes(pickle.dumps(_Code(marker)))
    else:
        torch.save([1, 2], checkpoint)
    write_png(tmp_path / "data" / "a.png", size=(96, 96))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        result = invoke(*TRAIN, tmp_path / "data", "--out", run, "--resume")
    no_traceback(result)
    assert result.exit_code == 1
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "its checkpoint is damaged" in errors[0]
    assert [str(w.message) for w in shown if "pickle" in str(w.message)] == []
    assert not marker.exists()


def test_weights_that_overflow_write_no_black_image(invoke, tmp_path):
    """Finite weights that pass every check, but so large that the model's output overflows:
    an error, not an all-black image (NaN clamped to 0) with exit code 0."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(BASE), "pt") as f:
        header = f.metadata()
    tensors = {name: value * 1e4 if name.startswith("encoder") and value.ndim > 1 else value
               for name, value in load_file(str(BASE)).items()}
    weights = tmp_path / "overflow.safetensors"
    save_file(tensors, str(weights), metadata=header)
    out = tmp_path / "out.png"
    result = invoke("upscale", write_png(tmp_path / "a.png"), "-o", out, "--model", weights,
                    "--device", "cpu", "--scale", "2")
    assert result.exit_code == 1
    assert "NaN or infinite" in one_error_line(result)
    assert not out.exists() and temps_in(tmp_path) == []


def test_cache_dir_with_an_unknown_user_is_kept_literal(invoke, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIRENUP_CACHE_DIR", "~no_such_user_for_sirenup/cache")
    for args in (("models", "list"), ("doctor", "--quick", "--json")):
        result = invoke(*args)
        no_traceback(result)
        assert "home directory" not in result.output
    assert invoke("models", "list").exit_code == 0
    model = invoke("upscale", write_png(tmp_path / "a.png"), "--model",
                   "~no_such_user_for_sirenup/w.safetensors", "--device", "cpu")
    assert model.exit_code == 2 and "no such file" in one_error_line(model)


def test_sigterm_during_a_write_removes_the_temporary_file(invoke, tmp_path, monkeypatch):
    """main() turns SIGTERM into SystemExit(143), so the atomic write's cleanup runs (killed
    by the default action, the temporary file would stay)."""
    import signal

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


def test_compare_model_file_with_a_comma_in_its_name(invoke, tmp_path):
    import shutil

    weights = tmp_path / "base, copy.safetensors"
    shutil.copy(BASE, weights)
    result = invoke("compare", write_png(tmp_path / "a.png"), "--model", weights,
                    "--device", "cpu", "-d", tmp_path / "cmp", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["methods"]) == 2  # bicubic and the file



@pytest.mark.parametrize("spec", ["ftp://host/m.safetensors", "s3://bucket/m.safetensors"])
def test_model_url_of_another_scheme_says_so(invoke, tmp_path, spec):
    result = invoke("upscale", write_png(tmp_path / "a.png"), "--model", spec,
                    "--device", "cpu")
    assert result.exit_code == 2
    assert "only http://, https:// and file:// URLs" in one_error_line(result)


def test_batch_reports_dangling_and_looping_links(invoke, tmp_path):
    folder = tmp_path / "in"
    write_png(folder / "a.png")
    (folder / "gone.png").symlink_to(folder / "missing.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "stray").symlink_to(folder / "nothing")  # no image name: skipped, as before
    result = invoke("batch", folder, tmp_path / "out", "--device", "cpu", "--scale", "2",
                    "--json")
    no_traceback(result)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["done"] == 1 and report["not_images"] == 1
    assert sorted(Path(f["input"]).name for f in report["failures"]) == ["gone.png", "loop.png"]


def test_output_that_is_a_looping_link(invoke, tmp_path):
    """Python 3.11's Path.resolve raises RuntimeError (not OSError) on a link loop."""
    loop = tmp_path / "out.png"
    loop.symlink_to(loop)
    result = invoke("upscale", write_png(tmp_path / "a.png"), "-o", loop, "--device", "cpu",
                    "--scale", "2")
    assert result.exit_code == 0, result.output  # the link named as output is replaced
    assert Image.open(loop).size == (48, 40)


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
