"""Shared fixtures: small test images written to tmp_path, and a CLI runner."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from pathlib import Path

# One torch thread per test process: the suite runs on 2 shared cores, where two torch threads
# per test fight each other (a tiler test took 15-29 s so, 0.4 s with one). The environment
# variable, set before torch and numpy load, carries the same to the CLI and torchrun
# subprocesses the tests start, unless the caller chose otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402  (after the thread setting: the math libraries read it once)
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from sirenup import files  # noqa: E402

torch.set_num_threads(1)

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


def write_png16(path: Path, array: np.ndarray, *, exif: bytes | None = None) -> Path:
    """Write (H, W, 3|4) uint16 as a 16-bit RGB/RGBA PNG, cycling through the five PNG row
    filters (None, Sub, Up, Average, Paeth): Pillow cannot write 16-bit colour itself."""
    import struct
    import zlib

    height, width, channels = array.shape
    raw = array.astype(">u2").reshape(height, -1).view(np.uint8).astype(np.int32)
    bpp = 2 * channels
    rows = []
    for y in range(height):
        cur = raw[y]
        up = raw[y - 1] if y else np.zeros_like(cur)
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        kind = y % 5
        if kind == 0:
            pred = np.zeros_like(cur)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = up
        elif kind == 3:
            pred = (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        rows.append(bytes([kind]) + ((cur - pred) % 256).astype(np.uint8).tobytes())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    colour = {3: 2, 4: 6}[channels]
    data = (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0))
            + (chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif") else exif) if exif else b"")
            + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))
    path.write_bytes(data)
    return path


def deep_pattern(width: int, height: int, channels: int = 3) -> np.ndarray:
    """(H, W, C) uint16 with values that are not multiples of 257 (true 16-bit data)."""
    y, x = np.mgrid[0:height, 0:width]
    planes = [(x * 2311 + y * 977 + 1234 + c * 7919) % 65536 for c in range(channels)]
    return np.stack(planes, axis=-1).astype(np.uint16)


def png_bit_depth(path: Path) -> int:
    """The bit depth in a PNG's IHDR (Pillow reports 16-bit colour as 8-bit RGB)."""
    return Path(path).read_bytes()[24]


def build_corpus(root: Path) -> dict:
    """The batch test corpus under ``root``: -> {'done': {relative output: (size, mode)},
    'failed': {input name: reason fragment}, 'not_images': [names]}. Inputs are 24x20 (the
    bomb 64x48: run with --max-input-pixels 2000), outputs at --scale 2."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub" / "nested").mkdir(parents=True)
    build_image("RGB").save(root / "photo.png")
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    build_image("RGB").save(root / "rotated.jpg", exif=exif.tobytes(), quality=95)
    build_image("I;16").save(root / "deep.png")
    write_png16(root / "deep_rgb.png", deep_pattern(24, 20))
    build_image("RGBA").save(root / "rgba.png")
    build_image("LA").save(root / "la.png")
    build_image("P-transparent").save(root / "palette.png", transparency=0)
    build_image("CMYK").save(root / "cmyk.jpg", quality=95)
    build_image("RGB", (1, 1)).save(root / "tiny.png")
    build_image("RGB", (64, 48)).save(root / "bomb.png")
    build_image("L").save(root / "sub" / "nested" / "inner.png")
    (root / "empty.png").write_bytes(b"")
    buffer = io.BytesIO()
    build_image("RGB", (40, 30)).save(buffer, "PNG")
    (root / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    buffer = io.BytesIO()
    build_image("RGB", (40, 30)).save(buffer, "JPEG", quality=95)
    (root / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "notes.png").write_text("this is not a picture\n")
    (root / "Thumbs.db").write_bytes(bytes.fromhex("D0CF11E0A1B11AE1") + bytes(500))
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(200))
    (root / "sub" / "readme.txt").write_text("hello\n")
    return {
        "done": {
            "photo.png": ((48, 40), "RGB"),
            "rotated.jpg": ((40, 48), "RGB"),
            "deep.png": ((48, 40), "I;16"),
            "deep_rgb.png": ((48, 40), "RGB"),  # 16-bit: see png_bit_depth
            "rgba.png": ((48, 40), "RGBA"),
            "la.png": ((48, 40), "LA"),
            "palette.png": ((48, 40), "RGBA"),
            "cmyk.jpg": ((48, 40), "RGB"),
            "tiny.png": ((2, 2), "RGB"),
            "sub/nested/inner.png": ((48, 40), "L"),
        },
        "failed": {
            "empty.png": "empty",
            "truncated.png": "decode",
            "truncated.jpg": "decode",
            "notes.png": "not an image",
            "bomb.png": "--max-input-pixels",
        },
        "not_images": ["Thumbs.db", ".DS_Store", "sub/readme.txt"],
    }


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


@pytest.fixture
def no_accelerators(monkeypatch):
    """CUDA and MPS reported unavailable, so device tests hold on any machine."""
    import torch

    from sirenup.inference import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(devices, "mps_available", lambda: False)


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    """An empty model cache for this test (SIRENUP_CACHE_DIR), online, fast retries."""
    from sirenup.hub import download

    root = tmp_path / "cache"
    monkeypatch.setenv("SIRENUP_CACHE_DIR", str(root))
    monkeypatch.delenv("SIRENUP_OFFLINE", raising=False)
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)
    return root


@pytest.fixture
def disk_full(monkeypatch):
    """Every atomic write gets ``limit[0]`` bytes onto the disk, then ENOSPC (or, with
    ``mode[0] == 'short'``, writes of nothing, as some file systems report a full disk)."""
    limit, mode, written = [0], ["enospc"], [0]

    def full(fd, data):
        room = limit[0] - written[0]
        if room <= 0:
            if mode[0] == "short":
                return 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        count = os.write(fd, data[:room])
        written[0] += count
        return count

    monkeypatch.setattr(files, "_write", full)

    class Control:
        def set(self, nbytes: int, how: str = "enospc") -> None:
            limit[0], mode[0], written[0] = nbytes, how, 0

        def off(self) -> None:
            monkeypatch.setattr(files, "_write", lambda fd, data: os.write(fd, data))

    return Control()


@pytest.fixture(scope="session")
def gan_photos(tmp_path_factory) -> Path:
    """Three 100x90 photo-like images: big enough for --gan windows at scales 2-3."""
    from tests.test_training import photo

    root = tmp_path_factory.mktemp("gan_photos")
    for i in range(3):
        photo(i, 100, 90).save(root / f"photo{i}.png")
    return root
