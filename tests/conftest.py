"""Shared fixtures: small test images written to tmp_path, and a CLI runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

ORIENTATION = 0x0112


def pattern(width: int, height: int, channels: int = 3, *, seed: int = 0) -> np.ndarray:
    """A smooth gradient plus a little noise: (H, W, C) uint8, never constant."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = [x / max(width - 1, 1), y / max(height - 1, 1), (x + y) / max(width + height - 2, 1)]
    planes = [base[c % 3] * 200 + 20 + rng.uniform(-10, 10, (height, width))
              for c in range(channels)]
    return np.clip(np.stack(planes, axis=-1), 0, 255).round().astype(np.uint8)


def alpha_pattern(width: int, height: int) -> np.ndarray:
    """Opaque left half, transparent right half: (H, W) uint8."""
    alpha = np.zeros((height, width), dtype=np.uint8)
    alpha[:, : width // 2] = 255
    return alpha


def build_image(mode: str, size: tuple[int, int] = (24, 20)) -> Image.Image:
    """A test image of ``mode``: RGB, RGBA, L, LA, P, P-transparent, CMYK, 1, I;16."""
    w, h = size
    rgb = pattern(w, h)
    if mode == "RGB":
        return Image.fromarray(rgb)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha_pattern(w, h)]))
    if mode == "L":
        return Image.fromarray(rgb[..., 0])
    if mode == "LA":
        return Image.merge("LA", [Image.fromarray(rgb[..., 0]),
                                  Image.fromarray(alpha_pattern(w, h))])
    if mode == "P":
        return Image.fromarray(rgb).quantize(16)
    if mode == "P-transparent":
        im = Image.fromarray(rgb).quantize(16)
        im.info["transparency"] = 0
        return im
    if mode == "CMYK":
        return Image.fromarray(rgb).convert("CMYK")
    if mode == "1":
        return Image.fromarray(rgb[..., 0]).convert("1")
    if mode == "I;16":
        y, x = np.mgrid[0:h, 0:w]
        values = (x * 2311 + y * 977 + 1234) % 65536  # not multiples of 257: true 16-bit data
        return Image.fromarray(values.astype(np.uint16))
    raise ValueError(mode)


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """make_image(name, mode='RGB', size=(24, 20), orientation=None, **save_options) -> path.

    ``orientation`` writes that EXIF Orientation tag (JPEG, PNG, WebP).
    """

    def make(name: str, mode: str = "RGB", size: tuple[int, int] = (24, 20), *,
             orientation: int | None = None, **options) -> Path:
        path = tmp_path / name
        im = build_image(mode, size)
        if orientation is not None:
            exif = Image.Exif()
            exif[ORIENTATION] = orientation
            options["exif"] = exif.tobytes()
        if mode == "P-transparent":
            options.setdefault("transparency", 0)
        im.save(path, **options)
        return path

    return make


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner: CliRunner) -> Callable:
    """invoke(*args) -> click Result of ``sirenup ARGS`` (str() applied to each argument)."""
    from sirenup.cli.app import app

    def run(*args):
        return runner.invoke(app, [str(a) for a in args])

    return run
