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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from loopback_server import LoopbackServer
from PIL import Image

from sirenup import files

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "sirenup" / "assets" / "sirenup-base.safetensors"


def no_traceback(result) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)


def one_error_line(result) -> str:
    no_traceback(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
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
    elif target == "link_to_device":
        out.symlink_to("/dev/null")
    else:
        out = Path("/dev/null")
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
