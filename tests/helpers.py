"""Helpers shared by the test modules of several rooms: the one-line error bar that every
failure meets (one line on stderr, no traceback, nothing partial left), small inputs, and
``python -m sirenup`` in a subprocess."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
from conftest import build_image, deep_pattern, write_png16
from PIL import Image

from sirenup import files
from sirenup.models.patch_siren import LiifSirenConfig

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "sirenup" / "assets" / "sirenup-base.safetensors"
SMALL = LiifSirenConfig(channels=8, n_blocks=1, hidden=16, n_hidden=1)


def no_traceback(result) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)


def one_error_line(result) -> str:
    no_traceback(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def error_line(result) -> str:
    """The one 'error:' line (download messages may come before it)."""
    no_traceback(result)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def temps_in(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(files.TEMP_SUFFIX)]


def make_input(folder: Path, kind: str, name: str = "in") -> Path:
    """A small input whose output keeps the ``kind`` format (16-bit colour for *16)."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "png16":
        return write_png16(folder / f"{name}.png", deep_pattern(16, 12))
    if kind == "tif16":
        path = folder / f"{name}.tif"
        tifffile.imwrite(path, deep_pattern(16, 12), photometric="rgb")
        return path
    path = folder / f"{name}.{kind}"
    build_image("RGB", (16, 12)).save(path)
    return path


def write_png(path: Path, mode: str = "RGB", size=(24, 20), **options) -> Path:
    """conftest's test pattern as a PNG at ``path`` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    build_image(mode, size).save(path, "PNG", **options)
    return path


def png(path: Path, size=(24, 20), mode="RGB") -> Path:
    """Random pixels as a PNG at ``path`` (folders made)."""
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
        return subprocess.run(f"{shlex.join(command)} {shell_redirect}", shell=True,
                              stderr=subprocess.PIPE, text=True, timeout=timeout, env=full_env)
    return subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, env=full_env)


def train_args(tmp_path: Path, out: Path, *extra) -> list:
    """A two-step ``sirenup train`` on one 64x64 image under ``tmp_path/data``."""
    data = tmp_path / "data"
    if not data.exists():
        png(data / "a.png", size=(64, 64))
    return ["train", data, "--out", out, "--steps", "2", "--batch", "2", "--patch", "8",
            "--queries", "16", "--device", "cpu", *extra]


class PickledCode:
    """Unpickled, it would touch ``marker``: a pickle that runs code, which must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
