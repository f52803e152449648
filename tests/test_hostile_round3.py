"""The third hostile round (issue 19), one test (or a few) per class of failure:
1. nothing of the user's is replaced or deleted without --overwrite (or --resume);
2. every read of a file sirenup did not just write is bounded, every network wait too;
3. untrusted text is escaped wherever it is shown, URLs without their secrets;
4. downloads: the scheme allow-list on every redirect, If-Range on resume, SIGTERM keeps;
5. failures that the arguments and the header can tell come before the work;
6. colour and depth stay true;
7. a closed or full stdout is one line, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from loopback_server import LoopbackServer
from PIL import Image
from test_hostile import no_traceback, one_error_line

from sirenup import files

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "sirenup" / "assets" / "sirenup-base.safetensors"


def error_line(result) -> str:
    """The one 'error:' line (download messages may come before it)."""
    no_traceback(result)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def png(path: Path, size=(24, 20), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], len(mode))
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def sirenup(*args, stdout=subprocess.PIPE, timeout=60, shell_redirect: str = "",
            env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m sirenup ARGS`` in a subprocess (``shell_redirect``: e.g. '>/dev/full')."""
    command = [sys.executable, "-m", "sirenup", *map(str, args)]
    full_env = {**os.environ, **(env or {})}
    if shell_redirect:
        import shlex

        return subprocess.run(f"{shlex.join(command)} {shell_redirect}", shell=True,
                              stderr=subprocess.PIPE, text=True, timeout=timeout, env=full_env)
    return subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, env=full_env)


# -- 1. nothing of the user's is replaced or deleted ----------------------------------------

def test_upscale_never_replaces_a_non_image_at_its_default_output(invoke, tmp_path):
    src = png(tmp_path / "photo.png")
    mine = tmp_path / "photo_x2.png"
    mine.write_text("my notes, not an image")
    result = invoke("upscale", src, "--scale", "2", "--device", "cpu")
    assert result.exit_code == 1
    assert "not an image" in one_error_line(result) and "--overwrite" in result.stderr
    assert mine.read_text() == "my notes, not an image"
    result = invoke("upscale", src, "--scale", "2", "--device", "cpu", "--overwrite")
    assert result.exit_code == 0, result.output
    assert Image.open(mine).size == (48, 40)
    # an earlier output (an image) is redone as before
    assert invoke("upscale", src, "--scale", "2", "--device", "cpu").exit_code == 0


@pytest.mark.parametrize("target", ["fifo", "device", "link_to_device"])
def test_outputs_go_only_to_regular_files(invoke, tmp_path, target):
    src = png(tmp_path / "in.png")
    out = tmp_path / "out.png"
    if target == "fifo":
        os.mkfifo(out)
    elif target == "link_to_device":  # (a link: even a broken sirenup replaces the link only)
        out.symlink_to("/dev/null")
    else:  # a device node of the test's own, never the system's /dev/null: if the check
        import stat  # failed as root, the system's would be replaced by a regular file

        try:
            os.mknod(out, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating a device node needs root")
    result = invoke("upscale", src, "-o", out, "--format", "png", "--scale", "2")
    assert result.exit_code == 1
    assert "regular file" in one_error_line(result)
    assert not out.is_file()
    with pytest.raises(files.SirenupError, match="regular file"):
        files.atomic_write_bytes(out, b"x")
    if target == "link_to_device":
        assert out.is_symlink()


def test_compare_never_replaces_the_users_files(invoke, tmp_path):
    src = png(tmp_path / "cat.png", size=(48, 40))
    out = tmp_path / "cmp"
    out.mkdir()
    mine = out / "cat_hr.png"
    png(mine, size=(5, 5))
    before = mine.read_bytes()
    result = invoke("compare", src, "--self", "--scale", "2", "--methods", "bicubic", "-d", out)
    assert result.exit_code == 1
    assert "cat_hr.png" in one_error_line(result) and "--overwrite" in result.stderr
    assert mine.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["cat_hr.png"]
    mine.unlink()
    args = ("compare", src, "--self", "--scale", "2", "--methods", "bicubic", "-d", out)
    assert invoke(*args).exit_code == 0
    assert invoke(*args).exit_code == 0  # its own earlier outputs are redone
    (out / "cat_montage.png").write_bytes(before)  # replaced by the user since
    assert invoke(*args).exit_code == 1
    assert (out / "cat_montage.png").read_bytes() == before
    assert invoke(*args, "--overwrite").exit_code == 0


def test_batch_check_of_an_existing_output_respects_the_pixel_limit(invoke, tmp_path):
    src = png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    existing = png(out / "a.png", size=(60, 50))
    before = existing.read_bytes()
    result = invoke("batch", tmp_path / "in", out, "--scale", "2", "--device", "cpu",
                    "--max-output-pixels", "2000", "--json")
    no_traceback(result)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == 1 and "could not be checked" in report["failures"][0]["error"]
    assert existing.read_bytes() == before  # not called truncated, not replaced
    assert src.exists()


def test_models_remove_all_removes_only_what_sirenup_created(invoke, tmp_path, monkeypatch):
    from sirenup.hub import cache

    monkeypatch.setenv("SIRENUP_CACHE_DIR", str(tmp_path / "shared"))
    entry = cache.ensure(BASE.as_uri())
    interrupted = cache.models_dir() / "m-0123456789ab"
    interrupted.mkdir()
    (interrupted / "m.safetensors.1-abcd.incomplete").write_bytes(b"partial")
    models = cache.models_dir()
    (models / "notes.txt").write_text("mine")
    (models / "photos").mkdir()
    (models / "photos" / "cat.png").write_bytes(b"mine too")
    (models / "looks-like-0123456789ab").mkdir()
    (models / "looks-like-0123456789ab" / "thesis.pdf").write_bytes(b"mine as well")
    result = invoke("models", "remove", "--all")
    assert result.exit_code == 0, result.output
    assert "removed 1 cached model," in result.stderr and "left 3" in result.stderr
    assert not entry.dir.exists() and not interrupted.exists()
    assert (models / "notes.txt").read_text() == "mine"
    assert (models / "photos" / "cat.png").read_bytes() == b"mine too"
    assert (models / "looks-like-0123456789ab" / "thesis.pdf").exists()


def train_args(tmp_path: Path, out: Path, *extra) -> list:
    data = tmp_path / "data"
    if not data.exists():
        png(data / "a.png", size=(64, 64))
    return ["train", data, "--out", out, "--steps", "2", "--batch", "2", "--patch", "8",
            "--queries", "16", "--device", "cpu", *extra]


@pytest.mark.parametrize("name", ["model.safetensors", "checkpoint.pt", "metrics.jsonl"])
def test_train_never_replaces_a_run_without_resume(invoke, tmp_path, name):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_bytes(b"hours of training")
    result = invoke(*train_args(tmp_path, out))
    assert result.exit_code == 2
    assert "--resume" in one_error_line(result)
    assert (out / name).read_bytes() == b"hours of training"
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_a_second_training_on_the_same_folder_fails_at_once(invoke, tmp_path):
    import filelock

    from sirenup.training.run_folder import LOCK

    out = tmp_path / "run"
    out.mkdir()
    with filelock.FileLock(str(out / LOCK)):  # a training holds the folder
        result = invoke(*train_args(tmp_path, out))
    assert result.exit_code == 1
    assert "another training" in one_error_line(result)
    assert not (out / "model.safetensors").exists()


def test_train_checks_val_and_metrics_at_its_start(invoke, tmp_path):
    val = tmp_path / "val"
    val.mkdir()
    (val / "notes.txt").write_text("no image here")
    result = invoke(*train_args(tmp_path, tmp_path / "run"), "--val", val)
    assert result.exit_code == 2
    assert "holds no image" in one_error_line(result)
    # a metrics log that is a FIFO fails at once, instead of blocking its first write
    fifo = tmp_path / "metrics.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(files.SirenupError, match="cannot write|regular"):
        files.append_line(fifo, "{}")


def test_dist_timeout_reaches_the_process_group(monkeypatch):
    import datetime

    import torch

    from sirenup.training import distributed

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda **kwargs: seen.update(kwargs))
    distributed.init(torch.device("cpu"), 42)
    assert seen["timeout"] == datetime.timedelta(seconds=42)
    distributed._current = distributed.Distributed()


# -- 2. every read of a file sirenup did not just write is bounded ---------------------------

@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_cache_meta_json_that_never_ends_is_not_waited_on(tmp_path, kind):
    from sirenup.hub import cache

    entry = tmp_path / "cache" / "models" / "m-0123456789ab"
    entry.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(entry / "meta.json")
    else:
        (entry / "meta.json").symlink_to("/dev/zero")
    result = sirenup("models", "list", "--json", timeout=60,
                     env={"SIRENUP_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["models"]
    assert cache.read_entry(entry) is None


@pytest.fixture
def cache_root(cache_root, monkeypatch):
    """conftest's empty cache, with short time-outs."""
    from sirenup.hub import download

    monkeypatch.setattr(download, "TIMEOUT_S", 10.0)
    return cache_root


def test_a_stalled_server_fails_in_one_line_and_a_slow_one_succeeds(invoke, cache_root,
                                                                     monkeypatch):
    from sirenup.hub import download

    data = BASE.read_bytes()[:3000] + b"x" * 100
    monkeypatch.setattr(download, "STALL_GRACE_S", 0.5)
    monkeypatch.setattr(download, "MIN_RATE", 200)  # bytes/s
    with LoopbackServer({"/m.safetensors": data}) as server:
        server.byte_delay = 0.05  # 20 bytes/s: a stall at this rate
        began = time.monotonic()
        result = invoke("models", "download", server.url("/m.safetensors"))
        assert time.monotonic() - began < 20
        assert result.exit_code == 1
        assert "stalled" in error_line(result)
        assert list(cache_root.rglob("*.incomplete"))  # kept, to resume
    # a slow link that keeps moving succeeds: 64 KiB every 0.1 s is above 100 KB/s
    monkeypatch.setattr(download, "STALL_GRACE_S", 0.2)
    monkeypatch.setattr(download, "MIN_RATE", 100_000)
    with LoopbackServer({"/n.safetensors": BASE.read_bytes()}) as server:
        server.chunk_delay = 0.1
        result = invoke("models", "download", server.url("/n.safetensors"))
        assert result.exit_code == 0, result.output


def test_a_silent_server_is_waited_on_until_the_deadline_only(invoke, cache_root,
                                                             monkeypatch):
    """Connected, then not a byte (not even the headers): the watchdog ends the wait."""
    import socket

    from sirenup.hub import download

    monkeypatch.setattr(download, "STALL_GRACE_S", 0.5)
    monkeypatch.setattr(download, "TIMEOUT_S", 30.0)  # one read would wait this long
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    accepting = threading.Thread(target=lambda: [held.append(listener.accept())
                                                 for _ in range(8)], daemon=True)
    accepting.start()
    began = time.monotonic()
    result = invoke("models", "download",
                    f"http://127.0.0.1:{listener.getsockname()[1]}/m.safetensors")
    assert time.monotonic() - began < 15
    assert result.exit_code == 1
    assert "stalled" in error_line(result)
    listener.close()


# -- 3. untrusted text is escaped where shown; URLs without secrets ------------------------

HOSTILE_NAME = "evil\x1b[2J\x1b]0;owned\x07\nfake line\u202eexe.png[/bogus][red]" + "A" * 10_000


def hostile_weights(path: Path) -> Path:
    from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
    from sirenup.models.weights import save_weights

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


def test_urls_are_shown_without_secrets_and_meta_json_is_private(invoke, cache_root):
    data = BASE.read_bytes()
    with LoopbackServer({"/m.safetensors": data}) as server:
        server.fail["/m.safetensors"] = (503, 1)  # one retry line
        url = server.url("/m.safetensors").replace("http://", "http://user:s3cret@")
        result = invoke("models", "download", url + "?token=t0ken")
        assert result.exit_code == 0, result.output
        listed = invoke("models", "list")
        listed_json = invoke("models", "list", "--json")
    for text in (result.output, listed.output, listed_json.output):
        assert "s3cret" not in text and "t0ken" not in text
    assert "retrying" in result.stderr
    (meta,) = cache_root.rglob("meta.json")
    assert meta.stat().st_mode & 0o777 == 0o600


# -- 4. downloads ---------------------------------------------------------------------------

def test_a_redirect_to_another_scheme_is_refused(invoke, cache_root):
    with LoopbackServer({}) as server:
        server.redirects["/m.safetensors"] = "ftp://127.0.0.1/m.safetensors"
        result = invoke("models", "download", server.url("/m.safetensors"))
    assert result.exit_code == 1
    assert "redirect" in error_line(result)


def test_a_resumed_download_restarts_when_the_servers_file_changed(cache_root, tmp_path,
                                                                    monkeypatch):
    import torch

    from sirenup.hub import cache, download
    from sirenup.models.weights import load_weights, save_weights

    v1 = BASE.read_bytes()
    model, _ = load_weights(BASE)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    save_weights(tmp_path / "v2.safetensors", model, {})
    v2 = (tmp_path / "v2.safetensors").read_bytes()
    assert len(v2) > 70_000 and v2 != v1
    with LoopbackServer({"/m.safetensors": v1}) as server:
        server.etags["/m.safetensors"] = '"v1"'
        server.drop_after["/m.safetensors"] = 70_000
        url = server.url("/m.safetensors")
        monkeypatch.setattr(download, "RETRIES", 0)
        with pytest.raises(download.DownloadError):
            cache.ensure(url)  # unpinned; interrupted after 70 000 bytes
        assert [p.stat().st_size for p in cache_root.rglob("*.incomplete")] == [70_000]
        server.files["/m.safetensors"] = v2  # the file changes on the server meanwhile
        server.etags["/m.safetensors"] = '"v2"'
        entry = cache.ensure(url)
        assert entry.path.read_bytes() == v2  # never v1's first bytes and v2's rest
        assert ("/m.safetensors", '"v1"') in server.if_ranges


def test_sigterm_keeps_the_partial_download(tmp_path):
    data = BASE.read_bytes()
    cache = tmp_path / "cache"
    with LoopbackServer({"/m.safetensors": data}) as server:
        server.hang_after["/m.safetensors"] = 50_000
        process = subprocess.Popen(
            [sys.executable, "-m", "sirenup", "models", "download",
             server.url("/m.safetensors")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "SIRENUP_CACHE_DIR": str(cache)})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = list(cache.rglob("*.incomplete"))
            if parts and parts[0].stat().st_size >= 50_000:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert [p.stat().st_size for p in cache.rglob("*.incomplete")] == [50_000]


# -- 5. failures the arguments and the header can tell come before the work ----------------

NO_TORCH = """
import sys
from sirenup.cli.app import main
sys.argv = ["sirenup", *sys.argv[1:]]
try:
    main()
except SystemExit as done:
    assert "torch" not in sys.modules, "torch was imported"
    raise
"""


@pytest.mark.parametrize("case", [
    "upscale-scale", "upscale-missing-dir", "upscale-format", "upscale-webp-limit",
    "batch-scale", "batch-tile", "compare-both", "train-val", "train-run", "upscale-device",
    "batch-precision", "train-gan-loss", "train-device"])
def test_usage_errors_come_before_torch(tmp_path, case):
    src = png(tmp_path / "in.png")
    (tmp_path / "val").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"x")
    args, code = {
        "upscale-scale": (["upscale", src, "--scale", "0.5"], 2),
        "upscale-missing-dir": (["upscale", src, "-o", tmp_path / "no" / "x.png"], 2),
        "upscale-format": (["upscale", src, "-o", tmp_path / "x.png", "--format", "jpg"], 2),
        "upscale-webp-limit": (["upscale", src, "-o", tmp_path / "x.webp", "--width", "20000",
                                "--max-output-pixels", "0"], 1),
        "batch-scale": (["batch", src, tmp_path / "out", "--scale", "0.5"], 2),
        "batch-tile": (["batch", src, tmp_path / "out", "--tile", "3"], 2),
        "compare-both": (["compare", src, "--self", "--reference", src], 2),
        "train-val": (["train", tmp_path, "--out", tmp_path / "r2", "--val", tmp_path / "val"],
                      2),
        "train-run": (["train", tmp_path, "--out", tmp_path / "run"], 2),
        "upscale-device": (["upscale", src, "--device", "gpu"], 2),
        "batch-precision": (["batch", src, tmp_path / "out", "--precision", "fp8"], 2),
        "train-gan-loss": (["train", tmp_path, "--out", tmp_path / "r3", "--gan", "--gan-loss",
                            "bogus"], 2),
        "train-device": (["train", tmp_path, "--out", tmp_path / "r4", "--device", "tpu"], 2),
    }[case]
    result = subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "torch was imported" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_read_only_output_folder_fails_before_the_model_loads(invoke, tmp_path,
                                                               monkeypatch):
    from sirenup.inference import upscaler

    src = png(tmp_path / "in.png")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if (
        Path(path) == tmp_path / "ro" and mode & os.W_OK) else real_access(path, mode, **kw))
    monkeypatch.setattr(upscaler, "load_upscaler", lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "ro").mkdir()
    result = invoke("upscale", src, "-o", tmp_path / "ro" / "x.png")
    assert result.exit_code == 1
    assert "not writable" in one_error_line(result)
    result = invoke(*train_args(tmp_path, tmp_path / "ro"))
    assert result.exit_code == 1, result.output
    assert "not writable" in one_error_line(result)


def test_the_torch_free_spelling_checks_match_the_engines():
    from sirenup.defaults import MIN_TILE
    from sirenup.inference import devices, planning, tiler
    from sirenup.training import gan, loop, run_folder

    assert set(planning.PRECISION_NAMES) == set(devices.PRECISIONS) | set(devices._ALIASES)
    assert MIN_TILE == tiler.MIN_TILE
    assert (loop.CHECKPOINT, loop.WEIGHTS, loop.METRICS) == run_folder.RUN_FILES
    assert gan.GanConfig is not None


def test_exif_too_long_for_jpeg_is_dropped_with_a_warning_before_the_work(invoke, tmp_path):
    exif = Image.Exif()
    exif[0x010E] = "x" * 70_000  # ImageDescription
    src = tmp_path / "in.png"
    Image.new("RGB", (20, 16), "red").save(src, exif=exif.tobytes())
    result = invoke("upscale", src, "-o", tmp_path / "out.jpg", "--scale", "2",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "EXIF" in result.stderr and "too long" in result.stderr
    assert Image.open(tmp_path / "out.jpg").size == (40, 32)


# -- 7. a closed or full stdout ---------------------------------------------------------------

@pytest.mark.parametrize("args", [["--version"], ["--help"], ["models", "list"],
                                  ["models", "path"], ["upscale", "--help"]])
@pytest.mark.parametrize("redirect", [">/dev/full", ">&-"])
def test_a_full_or_closed_stdout_is_one_line(args, redirect):
    result = sirenup(*args, shell_redirect=redirect)
    assert result.returncode in (1, 120, 141), result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "stdout" in result.stderr


# -- 6. colour and depth stay true -----------------------------------------------------------

def write_png_la16(path: Path, array: np.ndarray) -> Path:
    """(H, W, 2) uint16 -> a 16-bit grey+alpha PNG (colour type 4)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    height, width, _ = array.shape
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16_bit_grey_alpha_stays_grey_alpha(invoke, tmp_path, ext):
    import tifffile

    array = np.zeros((12, 16, 2), np.uint16)
    array[..., 0] = np.arange(16) * 4001 + 3
    array[..., 1] = 40_000
    src = write_png_la16(tmp_path / "in.png", array)
    out = tmp_path / f"out.{ext}"
    result = invoke("upscale", src, "-o", out, "--scale", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    if ext == "png":
        with Image.open(out) as im:
            assert im.tile[0].args == "LA;16B"  # grey+alpha, 16 bits
    else:
        back = tifffile.imread(out)
        assert back.shape == (24, 32, 2) and back.dtype == np.uint16
        assert abs(int(back[..., 1].mean()) - 40_000) <= 2
    # 8 bits: grey+alpha too
    Image.fromarray((array >> 8).astype(np.uint8), "LA").save(tmp_path / "la8.png")
    assert invoke("upscale", tmp_path / "la8.png", "-o", tmp_path / "la8_out.png",
                  "--scale", "2").exit_code == 0
    assert Image.open(tmp_path / "la8_out.png").mode == "LA"


def test_colour_profile_range_and_chunks(invoke, tmp_path):
    from PIL import ImageCms, PngImagePlugin

    from sirenup.imaging import imageio

    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.new("LAB", (12, 10), (50, 10, 20)).save(tmp_path / "lab.tif", icc_profile=lab)
    result = invoke("upscale", tmp_path / "lab.tif", "-o", tmp_path / "lab.png", "--scale", "2",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "ICC profile (Lab)" in result.stderr
    assert "icc_profile" not in Image.open(tmp_path / "lab.png").info

    values = (np.arange(120).reshape(10, 12) * 1500).astype(np.int32)  # up to 178 500
    Image.fromarray(values, "I").save(tmp_path / "wide.tif")
    image = imageio.read_image(tmp_path / "wide.tif")
    assert any("clipped" in w for w in image.warnings)

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    info = PngImagePlugin.PngInfo()
    info.add_text("big", "x" * 3_000_000, zip=True)
    Image.new("RGB", (12, 10), "red").save(tmp_path / "text.png", pnginfo=info)
    Image.new("RGB", (12, 10), "red").save(tmp_path / "icc.png",
                                           icc_profile=srgb + bytes(3_000_000))
    for name in ("text.png", "icc.png"):
        image = imageio.read_image(tmp_path / name)
        assert image.size == (12, 10) and any("chunk" in w for w in image.warnings)
    assert imageio.read_image(tmp_path / "icc.png").icc_profile is None
