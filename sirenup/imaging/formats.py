"""The output formats sirenup writes: one table, read by the writer (``imageio``), its error
messages, the CLI's help text and the shell completions. Adding a format is a row here (and
its tests). Standard library only: the CLI reads it at import time, before Pillow or torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sirenup.defaults import DEFAULT_QUALITY


@dataclass(frozen=True)
class OutputFormat:
    name: str  # Pillow's format name
    label: str  # as people write it (help text)
    extensions: tuple[str, ...]  # without the dot; the first is the one sirenup writes
    alpha: bool  # stores transparency
    sixteen_bit: bool  # stores 16 bits per sample
    lossy: bool  # takes --quality
    max_side: int  # largest side its encoder takes (Pillow refuses more, after the work)
    metadata: bool = True  # ICC profile and EXIF are written
    grey_icc: bool = True  # a grey ICC profile describes it (WebP stores RGB only)
    max_exif: int | None = None  # bytes of EXIF it holds (None: no limit)
    needs_feature: str | None = None  # Pillow feature without which it cannot be written
    # encoder options from the quality (None: DEFAULT_QUALITY) and the PNG zlib level
    options: Callable[[int, int], dict] = field(default=lambda quality, level: {})

    @property
    def extension(self) -> str:
        """The extension sirenup gives the files it names, with its dot."""
        return f".{self.extensions[0]}"


def _jpeg_options(quality: int, level: int) -> dict:
    if quality >= 90:  # 4:4:4: keep the detail the upscale made
        return {"quality": quality, "subsampling": 0}
    return {"quality": quality}


def _tiff_options(quality: int, level: int) -> dict:
    from PIL import features  # only when a TIFF is written

    return {"compression": "tiff_deflate"} if features.check("libtiff") else {}


_ANY_SIDE = (1 << 31) - 1
TABLE = (
    OutputFormat("PNG", "PNG", ("png",), alpha=True, sixteen_bit=True, lossy=False,
                 max_side=_ANY_SIDE, options=lambda quality, level: {"compress_level": level}),
    OutputFormat("JPEG", "JPEG", ("jpg", "jpeg"), alpha=False, sixteen_bit=False, lossy=True,
                 max_side=65500, max_exif=65533,  # an APP1 marker, "Exif\0\0" included
                 options=_jpeg_options),
    OutputFormat("WEBP", "WebP", ("webp",), alpha=True, sixteen_bit=False, lossy=True,
                 max_side=16383, grey_icc=False, needs_feature="webp",
                 options=lambda quality, level: {"quality": quality}),
    OutputFormat("TIFF", "TIFF", ("tif", "tiff"), alpha=True, sixteen_bit=True, lossy=False,
                 max_side=(1 << 32) - 1, options=_tiff_options),
    OutputFormat("BMP", "BMP", ("bmp",), alpha=False, sixteen_bit=False, lossy=False,
                 max_side=_ANY_SIDE, metadata=False),
)
BY_NAME = {fmt.name: fmt for fmt in TABLE}
# Pillow format name for each extension sirenup writes.
FORMATS = {ext: fmt.name for fmt in TABLE for ext in fmt.extensions}
EXTENSIONS = {fmt.name: fmt.extension for fmt in TABLE}
ALPHA_FORMATS = {fmt.name for fmt in TABLE if fmt.alpha}
SIXTEEN_BIT_FORMATS = {fmt.name for fmt in TABLE if fmt.sixteen_bit}
LOSSY_FORMATS = {fmt.name for fmt in TABLE if fmt.lossy}
MAX_SIDES = {fmt.name: fmt.max_side for fmt in TABLE}
NAMES = [fmt.extensions[0] for fmt in TABLE]  # what --format is given: png, jpg, ...


def listed(items: list[str], last: str | None = "or") -> str:
    """'a, b or c' (``last`` None: 'a, b, c')."""
    if last is None or len(items) < 2:
        return ", ".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def encoder_options(name: str, quality: int | None, level: int) -> dict:
    """Pillow's save options for format ``name`` (metadata aside)."""
    return BY_NAME[name].options(DEFAULT_QUALITY if quality is None else quality, level)


def without_alpha() -> list[str]:
    """--format names of the formats that cannot store transparency."""
    return [fmt.extensions[0] for fmt in TABLE if not fmt.alpha]


def alpha_extensions() -> list[str]:
    """Extensions (with the dot) of the formats that store transparency."""
    return [fmt.extension for fmt in TABLE if fmt.alpha]


def larger_extensions(name: str) -> list[str]:
    """Extensions of the lossless formats with alpha that store larger sides than ``name``
    (what an output too large for ``name`` can be written as)."""
    limit = BY_NAME[name].max_side
    return [fmt.extension for fmt in TABLE
            if fmt.alpha and not fmt.lossy and fmt.max_side > limit]


def lossy_labels() -> str:
    """'JPEG/WebP': the formats --quality applies to."""
    return "/".join(fmt.label for fmt in TABLE if fmt.lossy)
