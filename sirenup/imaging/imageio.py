"""Reading and writing images: float arrays for the model, metadata and bit depth kept.

``read_image`` decodes any image Pillow can open into a ``DecodedImage``: colour as float32
(H, W, 3) in [0, 1], or on request as the file's integers (uint8/uint16: what the upscaler
reads, a quarter of the memory), greyscale expanded to three channels (remembered as grey),
alpha apart, EXIF orientation applied, EXIF and ICC profile kept, CMYK converted to RGB, the
first frame of an animation (with a warning); only regular files (a FIFO would block).
Float images (32-bit float TIFF) are read as 0-1 intensities: NaN -> 0, infinities and values
outside clipped, with one warning. ``write_image`` encodes one in memory and writes it atomically
(``sirenup.files.atomic_write``: complete and fsynced, or absent), in the format the extension
(or ``format``) names; an encoder's error is one line. What each output format holds
(alpha, 16 bits, quality, largest side, metadata) is ``formats.TABLE``'s.

Bit depth: 16-bit greyscale PNG/TIFF and 16-bit RGB/RGBA PNG/TIFF are decoded without rounding
to 8 bits and written back with 16 bits when the output is PNG or TIFF. Pillow itself holds
colour at 8 bits per channel, so 16-bit colour is read by decoding the file twice (high and low
bytes) and written by ``_encode_png16`` (PNG) or tifffile (TIFF; EXIF is not carried there).
16-bit grey+alpha PNG stays grey+alpha at 16 bits (one decode of its raw bytes). Limits:
16-bit colour PNG with a tRNS colour key is read at 8 bits; formats other than PNG/TIFF give
8-bit output.

Colour: an ICC profile that does not describe the output (a Lab or CMYK profile once the
pixels are RGB) is dropped with a warning; a PNG text or ICC chunk over Pillow's 1 MB limit
costs the chunk, not the image (warning); 32-bit integer samples outside 0..65535 are clipped
with a warning.

Limits on size: ``max_pixels`` of ``read_image`` (the CLI's --max-input-pixels, default Pillow's
decompression-bomb limit) and ``check_output_size`` (--max-output-pixels, default 400 MP).
"""

from __future__ import annotations

import functools
import io
import os
import stat
import struct
import sys
import threading
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sirenup.defaults import (
    DEFAULT_MAX_INPUT_PIXELS,
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_PNG_COMPRESSION,
)
from sirenup.errors import SirenupError, UsageError, mention
from sirenup.files import (  # noqa: F401 (is_temp_of: part of this module's API)
    atomic_write,
    atomic_write_bytes,
    check_regular_file,
    first_line,
    is_temp_of,
    os_reason,
)
from sirenup.imaging.formats import (  # noqa: F401 (EXTENSIONS, FORMATS: this module's API)
    ALPHA_FORMATS,
    BY_NAME,
    EXTENSIONS,
    FORMATS,
    MAX_SIDES,
    NAMES,
    SIXTEEN_BIT_FORMATS,
    alpha_extensions,
    encoder_options,
    larger_extensions,
    listed,
)
from sirenup.text import plural

ORIENTATION = 0x0112  # EXIF tag
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"

# Pillow's pixel limit is a global and warnings filters are process-wide: every open goes
# through this lock, which sets the global off and applies sirenup's own limit instead.
_OPEN_LOCK = threading.RLock()


@dataclass
class DecodedImage:
    """An image ready for the model, with what is needed to write the result back alike."""

    # (H, W, 3) float32 in [0, 1], or integers (uint8, or uint16 when 16-bit: what
    # read_image(integers=True) gives); grey images hold Y in all three channels. An upscaled
    # result holds integers (grey: (H, W) luminance).
    rgb: np.ndarray
    alpha: np.ndarray | None = None  # (H, W) float32 in [0, 1], or integers like rgb
    mode: str = "RGB"  # Pillow mode of the file as decoded (before conversion)
    grey: bool = False  # write back as greyscale
    bit_depth: int = 8  # 8, or 16 (grey, RGB or RGBA read from a 16-bit PNG/TIFF)
    exif: bytes | None = None
    icc_profile: bytes | None = None
    format: str | None = None  # Pillow format of the source file ("PNG", "JPEG", ...)
    warnings: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(W, H), as Pillow gives sizes."""
        return self.width, self.height


# --------------------------------------------------------------------------------------------
# Limits and options


def input_limit(max_pixels: int | None) -> int | None:
    """--max-input-pixels value -> limit in pixels (None: no limit). None -> Pillow's default,
    0 -> no limit."""
    if max_pixels is None:
        return DEFAULT_MAX_INPUT_PIXELS
    if max_pixels < 0:
        raise UsageError(f"{max_pixels}: must be 0 (no limit) or more",
                         option="max_input_pixels")
    return max_pixels or None


def check_output_size(size: tuple[int, int], max_pixels: int | None = None,
                      path: str | os.PathLike | None = None) -> None:
    """Refuse an output of ``size`` = (W, H) over ``max_pixels`` (None: 400 MP, 0: no limit)."""
    limit = DEFAULT_MAX_OUTPUT_PIXELS if max_pixels is None else max_pixels
    if limit < 0:
        raise UsageError(f"{limit}: must be 0 (no limit) or more", option="max_output_pixels")
    pixels = size[0] * size[1]
    if limit and pixels > limit:
        where = f"{path}: " if path is not None else ""
        raise SirenupError(f"{where}output {size[0]}x{size[1]} = {_mp(pixels)} is over "
                           f"{mention('max_output_pixels')} {limit} ({_mp(limit)}); raise "
                           "the option "
                           "or choose a smaller size")


def parse_color(text: str) -> tuple[int, int, int]:
    """--background COLOR (a name, #rgb, #rrggbb, rgb(...)) -> (r, g, b) 0..255."""
    from PIL import ImageColor

    try:
        color = ImageColor.getrgb(text.strip())
    except (ValueError, AttributeError):
        raise UsageError(f"{text}: not a colour (try white, black, #rrggbb)",
                         option="background") \
            from None
    return int(color[0]), int(color[1]), int(color[2])


def check_quality(quality: int | None) -> None:
    if quality is not None and not 1 <= quality <= 100:
        raise UsageError(f"{quality}: must be between 1 and 100", option="quality")


def check_png_compression(level: int | None) -> None:
    if level is not None and not 0 <= level <= 9:
        raise UsageError(f"{level}: must be between 0 and 9", option="png_compression")


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{pixels} pixels"


# --------------------------------------------------------------------------------------------
# Reading


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None,
               check_size: Callable[[tuple[int, int]], object] | None = None,
               integers: bool = False) -> DecodedImage:
    """Decode ``path`` (first frame of an animation) -> DecodedImage, or SirenupError.

    Colour and alpha come as float32 in [0, 1], or with ``integers`` as the file's own
    samples: uint8, uint16 for 16-bit images (a float TIFF stays float32). The upscaler takes
    either and converts one tile at a time, so an integer image is 1/4 (8-bit) or 1/2 (16-bit)
    of the float one's memory for as long as the upscale lasts.

    ``max_pixels`` bounds width x height (None: Pillow's decompression-bomb limit; 0: none);
    the size is checked from the header, before any pixel is decoded. So is
    ``check_size((W, H))`` (the size as decoded, EXIF orientation applied), which raises to
    refuse the image: the output size limit is checked before the memory is spent. Only
    regular files are read (a FIFO would block forever).
    """
    path = Path(path)
    try:
        return _read_image(path, max_pixels, check_size, integers)
    except _OversizedChunk:  # a text or ICC chunk over Pillow's 1 MB: the chunk goes, not
        with _large_png_chunks():  # the image
            image = _read_image(path, max_pixels, check_size, integers)
        image.warnings.append(f"{path}: a text or ICC chunk is over Pillow's limit of "
                              f"{_mp_bytes(_SAFE_CHUNK)}: ignored")
        if image.icc_profile is not None and len(image.icc_profile) > _SAFE_CHUNK:
            image.icc_profile = None
            image.warnings.append(f"{path}: the ICC profile is dropped (over "
                                  f"{_mp_bytes(_SAFE_CHUNK)})")
        return image


class _OversizedChunk(Exception):
    """Pillow refused a PNG text or ICC chunk for its size (not the pixels)."""


_SAFE_CHUNK = 1 << 20  # Pillow's MAX_TEXT_CHUNK
_LARGE_CHUNK = 64 << 20  # what a second try allows a text or ICC chunk to decompress to


class _large_png_chunks:
    """Raise Pillow's PNG text and ICC chunk limits for one decode (under the open lock, which
    read_image holds: the limits are module globals)."""

    def __enter__(self):
        from PIL import PngImagePlugin

        _OPEN_LOCK.acquire()
        self.saved = PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY
        PngImagePlugin.MAX_TEXT_CHUNK = _LARGE_CHUNK
        PngImagePlugin.MAX_TEXT_MEMORY = 2 * _LARGE_CHUNK

    def __exit__(self, *exc):
        from PIL import PngImagePlugin

        PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY = self.saved
        _OPEN_LOCK.release()
        return False


def _mp_bytes(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def _oversized_chunk(error: Exception) -> bool:
    from PIL import PngImagePlugin

    text = str(error)
    return isinstance(error, ValueError) and ("MAX_TEXT_CHUNK" in text or "MAX_TEXT_MEMORY"
                                              in text) \
        and PngImagePlugin.MAX_TEXT_CHUNK < _LARGE_CHUNK


def _read_image(path: Path, max_pixels: int | None,
                check_size: Callable[[tuple[int, int]], object] | None,
                integers: bool) -> DecodedImage:
    limit = input_limit(max_pixels)
    _refuse_special_file(path)
    try:
        with _pillow_unlimited(), open_image(path) as im:
            pixels = im.size[0] * im.size[1]
            if limit is not None and pixels > limit:
                raise SirenupError(
                    f"{path}: {im.size[0]}x{im.size[1]} = {_mp(pixels)} is over "
                    f"{mention('max_input_pixels')} {limit} (decompression-bomb protection; "
                    "raise the "
                    "option if you trust the file)")
            if check_size is not None:
                swap = _header_orientation(im) in {5, 6, 7, 8}
                check_size((im.size[1], im.size[0]) if swap else im.size)
            return _decode(path, im, integers)
    except FileNotFoundError:
        raise SirenupError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SirenupError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise SirenupError(f"{path}: permission denied") from None
    except ExternalDecoderRefused as error:
        raise SirenupError(f"{path}: {error}") from None
    except UnidentifiedImageError:
        what = "empty file" if _is_empty(path) else \
            "not an image (or a format Pillow cannot read)"
        raise SirenupError(f"{path}: {what}") from None
    except SirenupError:
        raise
    except MemoryError:
        raise SirenupError(f"{path}: out of memory while decoding") from None
    except Exception as error:  # Pillow's decoders raise OSError, SyntaxError, ValueError, ...
        if _oversized_chunk(error):
            raise _OversizedChunk() from None
        if isinstance(error, OSError) and error.errno is not None:  # the file system's: a
            raise SirenupError(f"{path}: cannot read ({os_reason(error)})") from None  # loop
        raise SirenupError(f"{path}: cannot decode the image ({first_line(error)})") from None


def probe_image(path: str | os.PathLike) -> dict | None:
    """Cheap check (header only): {'format', 'mode', 'size', 'alpha'} or None if Pillow does
    not recognise the content of ``path`` as an image. A recognised file may still fail to
    decode (truncated, too big)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with _pillow_unlimited(), open_image(path) as im:
            alpha = im.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in im.info
            return {"format": im.format, "mode": im.mode, "size": im.size, "alpha": alpha}
    except Exception:
        return None


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with


def is_complete_image(path: str | os.PathLike, max_pixels: int | None = None) -> bool:
    """Whether ``path`` decodes to its last pixel (see ``completeness``); False when it does
    not or when that could not be checked."""
    return completeness(path, max_pixels) is True


class CheckFailed(Exception):
    """The completeness of a file could not be checked (too big, no memory, unreadable):
    nothing is known about it, least of all that it is truncated."""


def completeness(path: str | os.PathLike, max_pixels: int | None = None) -> bool | str:
    """Whether ``path`` decodes to its last pixel: batch's skip-if-exists counts an output as
    done only then, so a truncated file (a full disk under an older version, another tool)
    is redone. Costs one decode of the output, within ``max_pixels`` (None: the default
    output limit; 0: none). -> True (complete), False (does not decode to its end: damaged,
    truncated, not an image), or a reason why it could not be checked (over the pixel
    limit, out of memory, unreadable): never taken for "truncated"."""
    path = Path(path)
    limit = DEFAULT_MAX_OUTPUT_PIXELS if max_pixels is None else (max_pixels or None)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        if path.suffix.lower() in {".tif", ".tiff"}:
            _check_complete_tiff(path, limit)
            return True
        with _pillow_unlimited(), open_image(path) as im:
            _check_pixels(im.size, limit)
            _check_complete(path, im)
        return True
    except CheckFailed as why:
        return str(why)
    except MemoryError:
        return "out of memory while decoding it"
    except OSError as error:
        if error.errno is not None:  # the file system's: permission denied, I/O error
            return f"cannot read it ({os_reason(error)})"
        return False
    except Exception:
        return False


def _check_pixels(size: tuple[int, ...], limit: int | None) -> None:
    pixels = int(np.prod([int(n) for n in size])) if size else 0
    if limit is not None and pixels > limit:
        raise CheckFailed(f"{_mp(pixels)} is over the limit of {_mp(limit)} for checking it")


def _check_complete_tiff(path: Path, limit: int | None = None) -> None:
    """Through tifffile, not Pillow: libtiff would print its own lines about a short strip.
    The first image's directory, its tag values and its strips must lie inside the file, and
    the image must decode."""
    import logging

    import tifffile

    size = path.stat().st_size
    log = logging.getLogger("tifffile")
    quiet, log.disabled = log.disabled, True  # it logs what this check finds out
    try:
        with tifffile.TiffFile(path) as tif:
            page, layout = tif.pages.first, tif.tiff
            tif.filehandle.seek(page.offset)
            (entries,) = struct.unpack(layout.tagnoformat,  # byte order included
                                       tif.filehandle.read(layout.tagnosize))
            if entries != len(page.tags):  # tifffile drops the tags it cannot read
                raise ValueError("unreadable tags")
            end = page.offset + layout.tagnosize + entries * layout.tagsize + layout.offsetsize
            for tag in page.tags.values():
                item = struct.calcsize("<" + tag.dataformat[-1])
                end = max(end, tag.valueoffset + tag.count * item)
            for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
                end = max(end, offset + count)
            if end > size:
                raise ValueError("the file ends before its data")
            _check_pixels(page.shape[:2] if len(page.shape) >= 2 else page.shape, limit)
            page.asarray()
    finally:
        log.disabled = quiet


def _check_complete(path: Path, im: Image.Image) -> None:
    """Raise unless ``im`` (open on ``path``) decodes to its end."""
    if im.format == "PNG":  # Pillow decodes a PNG cut just before its IEND without a word
        with open(path, "rb") as f:
            f.seek(-len(PNG_END), os.SEEK_END)
            if f.read() != PNG_END:
                raise ValueError("PNG without its IEND chunk")
    im.load()


# Formats Pillow decodes by running another program: EPS runs Ghostscript, whose PostScript
# interpreter has had exploits through crafted files. A file is never decoded that way here.
EXTERNAL_DECODER_FORMATS = frozenset({"EPS"})
_POSTSCRIPT_MAGIC = (b"%!PS", b"\xc5\xd0\xd3\xc6")  # plain and DOS-binary EPS


class ExternalDecoderRefused(UnidentifiedImageError):
    """A file only another program would decode (PostScript): its message says so."""


def open_image(path: str | os.PathLike) -> Image.Image:
    """``Image.open`` limited to the formats Pillow decodes itself; a PostScript file raises
    ExternalDecoderRefused (every image sirenup reads comes through here)."""
    try:
        try:  # the common formats first: no import of Pillow's every plugin (start-up)
            return Image.open(path, formats=_preinit_formats())
        except UnidentifiedImageError:
            return Image.open(path, formats=_own_decoder_formats())
    except UnidentifiedImageError:
        if _starts_with(path, _POSTSCRIPT_MAGIC):
            raise ExternalDecoderRefused(
                "PostScript/EPS is not read: decoding it would run Ghostscript, an external "
                "program (convert it to PNG first)") from None
        raise


@functools.cache
def _preinit_formats() -> tuple[str, ...]:
    """The formats Pillow registers before it loads all its plugins (``Image.preinit``: PNG,
    JPEG, BMP, GIF, PPM): opening one of these does not run ``Image.init``, which imports some
    40 plugin modules (tens of milliseconds of every ``sirenup upscale``)."""
    Image.preinit()
    return tuple(name for name in Image.OPEN if name not in EXTERNAL_DECODER_FORMATS)


@functools.cache
def _own_decoder_formats() -> tuple[str, ...]:
    """Every format Pillow can open, less those it decodes with another program."""
    Image.init()
    return tuple(name for name in Image.OPEN if name not in EXTERNAL_DECODER_FORMATS)


def _starts_with(path: str | os.PathLike, prefixes: tuple[bytes, ...]) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8).startswith(prefixes)
    except OSError:
        return False


@functools.cache
def image_extensions() -> frozenset[str]:
    """Lower-case extensions ('.png', ...) Pillow associates with image formats: a file with
    one of these that does not decode "claims to be an image" and is a failure, not a skip."""
    return frozenset({ext.lower() for ext in Image.registered_extensions()}
                     | {".heic", ".heif", ".avif", ".jxl"})


class _pillow_unlimited:
    """Hold the open lock with Pillow's own pixel limit off (sirenup checks its own) and its
    warnings silenced: what they say about a broken file ("Corrupt EXIF data", "Truncated File
    Read") comes back as sirenup's one-line error, not as extra lines with source code."""

    def __enter__(self):
        _OPEN_LOCK.acquire()
        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        self.quiet = warnings.catch_warnings()
        self.quiet.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self.quiet.__exit__(*exc)
        Image.MAX_IMAGE_PIXELS = self.saved
        _OPEN_LOCK.release()
        return False


def _refuse_special_file(path: Path) -> None:
    """A FIFO, device or socket is refused before opening it (opening a FIFO blocks until a
    writer comes); a missing file or a folder is left to the open's own error."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        check_regular_file(path)


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _decode(path: Path, im: Image.Image, integers: bool = False) -> DecodedImage:
    found: list[str] = []
    frames = getattr(im, "n_frames", 1)
    if getattr(im, "is_animated", False) and frames > 1:
        found.append(f"{path}: animated image ({frames} frames): only the first frame is used")
    source_mode, source_format = im.mode, im.format
    exif = im.info.get("exif")
    icc = im.info.get("icc_profile")

    deep = _read_16_bit_colour(path, im, found)
    if deep is not None:
        deep = _orient(deep, _orientation(im))
        grey = deep.shape[2] == 2  # 16-bit grey+alpha
        if grey:
            rgb, alpha = np.repeat(deep[..., :1], 3, axis=2), deep[..., 1]
        else:
            rgb, alpha = deep[..., :3], deep[..., 3] if deep.shape[2] == 4 else None
        return DecodedImage(
            rgb=_samples(rgb, integers), alpha=None if alpha is None else _samples(alpha, integers),
            mode=source_mode, grey=grey, bit_depth=16, exif=exif,
            icc_profile=_fitting_profile(icc, grey, path, found),
            format=source_format, warnings=found)

    im.load()
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # EXIF is metadata: a corrupt block does not make the pixels unusable
        found.append(f"{path}: unreadable EXIF data ignored (orientation not applied)")
        exif = None

    alpha = None
    grey, bit_depth = False, 8
    mode = im.mode
    if mode == "P" or mode == "PA":
        transparent = mode == "PA" or "transparency" in im.info or (
            im.palette is not None and im.palette.mode == "RGBA")
        im = im.convert("RGBA" if transparent else "RGB")
        mode = im.mode
    if mode == "1":
        im, mode = im.convert("L"), "L"
    elif mode == "La":
        im, mode = im.convert("LA"), "LA"
    elif mode in {"RGBa", "RGBX"}:
        im = im.convert("RGBA" if mode == "RGBa" else "RGB")
        mode = im.mode
    elif mode == "CMYK":
        im, icc = _cmyk_to_rgb(im, icc), None  # a CMYK profile does not describe the RGB output
        mode = "RGB"
    elif mode in {"L", "RGB"} and im.info.get("transparency") is not None:
        im = im.convert("LA" if mode == "L" else "RGBA")  # a tRNS colour key becomes alpha
        mode = im.mode

    # The samples stay the file's integers here (uint8, uint16; float TIFF: float32 in [0, 1]).
    if mode in {"I;16", "I;16L", "I;16B", "I;16N", "I"}:
        values = np.asarray(im)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            found.append(f"{path}: 32-bit integer image with values {values.min()}.."
                         f"{values.max()}: clipped to 0..65535 (16 bits)")
        y = np.clip(values, 0, 65535).astype(np.uint16)
        grey, bit_depth = True, 16
    elif mode == "F":
        y = _float_plane(np.asarray(im, dtype=np.float32), path, found)
        grey, bit_depth = True, 16
    elif mode in {"L", "LA"}:
        array = np.asarray(im)
        y = array if mode == "L" else array[..., 0]
        if mode == "LA":
            alpha = array[..., 1]
        grey = True
    else:
        if mode not in {"RGB", "RGBA"}:
            im = im.convert("RGBA" if im.has_transparency_data else "RGB")
            mode = im.mode
        array = np.asarray(im)
        rgb = array[..., :3]
        if mode == "RGBA":
            alpha = array[..., 3]
    if grey:
        rgb = np.repeat(y[..., None], 3, axis=2)
    return DecodedImage(rgb=_samples(rgb, integers),
                        alpha=None if alpha is None else _samples(alpha, integers),
                        mode=source_mode, grey=grey, bit_depth=bit_depth, exif=exif,
                        icc_profile=_fitting_profile(icc, grey, path, found),
                        format=source_format, warnings=found)


_PROFILE_SPACES = {b"GRAY": "grey", b"RGB ": "RGB", b"Lab ": "Lab", b"CMYK": "CMYK",
                   b"XYZ ": "XYZ", b"YCbr": "YCbCr"}


def _fitting_profile(icc: bytes | None, grey: bool, path: Path,
                     found: list[str]) -> bytes | None:
    """``icc`` when it describes what the output holds (a grey profile for grey, an RGB one
    for colour), else None and a warning: a Lab TIFF's profile on its RGB output would make
    every viewer misread the colours."""
    if not icc:
        return icc
    space = bytes(icc[16:20])
    wanted = b"GRAY" if grey else b"RGB "
    if space == wanted:
        return icc
    name = _PROFILE_SPACES.get(space, repr(space.decode("latin-1")))
    found.append(f"{path}: the ICC profile ({name}) does not describe the "
                 f"{'grey' if grey else 'RGB'} output: dropped")
    return None


def _samples(values: np.ndarray, integers: bool) -> np.ndarray:
    """Decoded samples as ``read_image`` hands them out: the file's integers when asked for
    (float samples stay float32), else float32 in [0, 1] (integers divided by their maximum).
    Contiguous and writable either way (numpy's view of a Pillow image is read-only, which
    torch.from_numpy warns about)."""
    if not integers:
        values = as_float(values)
    return np.require(values, requirements=["C_CONTIGUOUS", "WRITEABLE"])


def _float_plane(values: np.ndarray, path: Path, found: list[str]) -> np.ndarray:
    """Float samples (32-bit float TIFF) -> [0, 1], by this rule: values are intensities on
    the 0-1 scale; NaN becomes 0, +inf 1 and -inf 0; values outside [0, 1] are clipped. Any
    of these gets one warning line saying what was found."""
    finite = np.isfinite(values)
    nonfinite = int(values.size - np.count_nonzero(finite))
    low, high = (float(values[finite].min()), float(values[finite].max())) \
        if nonfinite < values.size else (0.0, 0.0)
    notes = []
    if nonfinite:
        notes.append(f"{plural(nonfinite, 'NaN/inf sample')} set to 0 (NaN, -inf) or 1 (+inf)")
    if low < 0.0 or high > 1.0:
        notes.append(f"values {low:g}..{high:g} clipped to 0..1")
    if notes:
        found.append(f"{path}: floating-point image: {'; '.join(notes)}")
    values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(values, 0.0, 1.0)


_DEEP_RAWMODES = {"RGB;16B", "RGB;16L", "RGB;16N", "RGBA;16B", "RGBA;16L", "RGBA;16N"}


def _read_16_bit_colour(path: Path, im: Image.Image, found: list[str]) -> np.ndarray | None:
    """(H, W, 3|4) uint16 for a 16-bit RGB/RGBA PNG or TIFF, else None (8-bit path).

    Pillow unpacks 16-bit colour to 8 bits with the rawmode of the file's tile ('RGB;16B':
    keep the high byte of each big-endian sample). Decoding the same tile again with the
    opposite byte order keeps the low bytes instead; high * 256 + low is the exact value.
    """
    if im.format not in {"PNG", "TIFF"} or im.mode not in {"RGB", "RGBA"} or not im.tile:
        return None
    rawmodes = {_rawmode(tile) for tile in im.tile}
    if rawmodes == {"LA;16B"} and im.mode == "RGBA":
        return _read_16_bit_grey_alpha(path, found)
    if len(rawmodes) != 1 or not rawmodes <= _DEEP_RAWMODES:
        return None
    if im.info.get("transparency") is not None:
        found.append(f"{path}: 16-bit colour with a transparent colour key: read at 8 bits")
        return None
    rawmode = rawmodes.pop()
    native = "16L" if sys.byteorder == "little" else "16B"
    order = rawmode.split(";")[1].replace("16N", native)
    swapped = f"{im.mode};{'16L' if order == '16B' else '16B'}"
    try:
        im.load()
        high = np.asarray(im)
        with open_image(path) as again:
            again.tile = [_with_rawmode(tile, swapped) for tile in again.tile]
            again.load()
            low = np.asarray(again)
        if low.shape != high.shape:
            raise ValueError("shape mismatch")
    except Exception:
        found.append(f"{path}: 16-bit colour could not be read at 16 bits: read at 8 bits")
        return None
    return high.astype(np.uint16) * 256 + low.astype(np.uint16)


def _read_16_bit_grey_alpha(path: Path, found: list[str]) -> np.ndarray | None:
    """(H, W, 2) uint16 of a 16-bit grey+alpha PNG (Pillow opens it as 8-bit RGBA): the
    same tile decoded with rawmode 'RGBA' gives the four bytes of each pixel as they are
    (grey high, grey low, alpha high, alpha low)."""
    try:
        with open_image(path) as again:
            again.tile = [_with_rawmode(tile, "RGBA") for tile in again.tile]
            again.load()
            raw = np.asarray(again).astype(np.uint16)
    except Exception:
        found.append(f"{path}: 16-bit grey+alpha could not be read at 16 bits: read at 8 bits")
        return None
    return np.dstack([raw[..., 0] * 256 + raw[..., 1], raw[..., 2] * 256 + raw[..., 3]])


def _rawmode(tile) -> str | None:
    args = tile.args if hasattr(tile, "args") else tile[3]
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _with_rawmode(tile, rawmode: str):
    args = tile.args
    return tile._replace(args=rawmode if isinstance(args, str) else (rawmode, *args[1:]))


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(ORIENTATION, 1))
    except Exception:
        return 1


def _header_orientation(im: Image.Image) -> int:
    """EXIF orientation from what the header gave, without decoding (Pillow's getexif()
    loads a PNG's pixels to find an eXIf chunk after them; that one counts as 1 here)."""
    exif = im.info.get("exif")
    if not exif:
        return 1
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        return int(parsed.get(ORIENTATION, 1))
    except Exception:
        return 1


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF ``orientation`` to an (H, W, ...) array, as ImageOps.exif_transpose does."""
    if orientation == 2:
        array = array[:, ::-1]
    elif orientation == 3:
        array = array[::-1, ::-1]
    elif orientation == 4:
        array = array[::-1]
    elif orientation == 5:
        array = array.swapaxes(0, 1)
    elif orientation == 6:
        array = np.rot90(array, -1)
    elif orientation == 7:
        array = array[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        array = np.rot90(array, 1)
    return np.ascontiguousarray(array)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """CMYK -> sRGB through the embedded profile when there is one, else Pillow's formula."""
    if icc:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"),
                                             outputMode="RGB")
        except Exception:
            pass
    return im.convert("RGB")


# --------------------------------------------------------------------------------------------
# Writing


def output_format(path: str | os.PathLike | None, format: str | None = None) -> str:
    """Pillow format name for ``format`` (png, jpg, ...) or else the extension of ``path``."""
    suffix = Path(path).suffix.lower().lstrip(".") if path is not None else ""
    if format:
        name = format.lower().lstrip(".")
        if name not in FORMATS:
            raise UsageError(f"{format}: expected one of {_known()}", option="format")
        if suffix in FORMATS and FORMATS[suffix] != FORMATS[name]:
            raise UsageError(f"{path}: the extension '.{suffix}' says {FORMATS[suffix]}, "
                             f"{mention('format')} {format} says {FORMATS[name]}: give a "
                             f"matching extension, or leave out {mention('format')}")
        return _available(FORMATS[name])
    if suffix not in FORMATS:
        what = f"extension '.{suffix}'" if suffix else "no extension"
        raise UsageError(f"{path}: {what}: cannot tell the output format "
                         f"(use one of {_known()}, or {mention('format')})")
    return _available(FORMATS[suffix])


JPEG_MAX_EXIF = BY_NAME["JPEG"].max_exif


def check_writable(path: str | os.PathLike, image: DecodedImage, format: str | None = None,
                   background: tuple[int, int, int] | None = None,
                   size: tuple[int, int] | None = None) -> str:
    """Raise SirenupError if ``image``, at ``size`` (W, H; default its own), cannot be
    written to ``path``: alpha into a format without it, a side over the format's limit.
    -> Pillow format."""
    fmt = output_format(path, format)
    if image.alpha is not None and fmt not in ALPHA_FORMATS and background is None:
        raise SirenupError(f"{path}: {fmt} cannot store transparency and the image has an "
                           f"alpha channel; write {listed(alpha_extensions())}, or flatten it "
                           f"with {mention('background')} COLOR")
    width, height = size if size is not None else image.size
    if max(width, height) > MAX_SIDES[fmt]:
        raise SirenupError(f"{path}: {fmt} stores at most {MAX_SIDES[fmt]} pixels on a side; "
                           f"the output is {width}x{height} (write "
                           f"{listed(larger_extensions(fmt))}, or choose a smaller size)")
    return fmt


def drop_unfit_metadata(path: str | os.PathLike, image: DecodedImage, fmt: str) -> list[str]:
    """Drop from ``image`` the metadata ``fmt`` cannot hold (EXIF over a JPEG marker's 64 KB)
    -> a warning for each, so that the image is still written, with what fits."""
    if fmt != "JPEG" or not image.exif:
        return []
    exif = _exif_bytes(image.exif)
    if exif is None or len(exif) <= JPEG_MAX_EXIF:
        return []
    image.exif = None
    return [f"{path}: the EXIF data ({len(exif)} bytes) is too long for JPEG (at most "
            f"{JPEG_MAX_EXIF}); written without EXIF"]


def flatten(image: DecodedImage, background: tuple[int, int, int]) -> DecodedImage:
    """Composite ``image`` over an opaque ``background`` colour -> image without alpha (grey
    stays grey when the colour is grey)."""
    if image.alpha is None:
        return image
    bg = np.asarray(background, dtype=np.float32) / 255.0
    a = np.clip(as_float(image.alpha), 0.0, 1.0)[..., None]
    rgb = as_float(image.rgb)
    rgb = (rgb if rgb.ndim == 3 else rgb[..., None]) * a + bg * (1.0 - a)
    grey = image.grey and background[0] == background[1] == background[2]
    return replace(image, rgb=np.ascontiguousarray(rgb, dtype=np.float32), alpha=None,
                   grey=grey)


def write_image(path: str | os.PathLike, image: DecodedImage, *, format: str | None = None,
                quality: int | None = None,
                background: tuple[int, int, int] | None = None,
                png_compression: int | None = None) -> None:
    """Write ``image`` to ``path`` atomically, in ``format`` or the one its extension names.

    Alpha into a format without alpha: an error unless ``background`` flattens it.
    ``png_compression``: zlib level 0-9 of PNG outputs (None: DEFAULT_PNG_COMPRESSION).
    """
    prepare_write(path, image, format=format, quality=quality, background=background,
                  png_compression=png_compression)()


def prepare_write(path: str | os.PathLike, image: DecodedImage, *, format: str | None = None,
                  quality: int | None = None,
                  background: tuple[int, int, int] | None = None,
                  png_compression: int | None = None) -> Callable[[], None]:
    """``write_image`` in two steps: checks and conversions now -> a function that encodes and
    writes the file. That function holds the encoder's own copy of the pixels (Pillow's, for
    8-bit output), not ``image``: a caller that drops ``image`` before calling it frees the
    pixel array while the file is encoded (at 96 MP of RGB: 275 MiB less at the peak)."""
    path = Path(path)
    fmt = check_writable(path, image, format, background)
    check_quality(quality)
    check_png_compression(png_compression)
    level = DEFAULT_PNG_COMPRESSION if png_compression is None else png_compression
    if image.alpha is not None and fmt not in ALPHA_FORMATS:
        image = flatten(image, background)
    if image.bit_depth == 16 and fmt in SIXTEEN_BIT_FORMATS and \
            (not image.grey or image.alpha is not None):  # colour, or grey+alpha
        deep, icc = _to_uint16(image), image.icc_profile
        if fmt == "PNG":
            exif = _exif_bytes(image.exif)
            return lambda: atomic_write_bytes(
                path, _encode_png16(deep, icc=icc, exif=exif, level=level))
        return lambda: atomic_write(path, lambda f: _write_tiff16(f, deep, icc))
    pil = to_pil(image, sixteen_bit=fmt in SIXTEEN_BIT_FORMATS)
    options = _save_options(fmt, image, pil.mode, quality, level)
    return lambda: atomic_write(path, lambda f: pil.save(f, format=fmt, **options))


def save_pil(path: str | os.PathLike, pil: Image.Image, format: str | None = None) -> None:
    """Write a Pillow image atomically (montages and other pictures sirenup draws)."""
    fmt = output_format(path, format)
    options = {"compress_level": DEFAULT_PNG_COMPRESSION} if fmt == "PNG" else {}
    atomic_write(path, lambda f: pil.save(f, format=fmt, **options))


def to_pil(image: DecodedImage, *, sixteen_bit: bool = True) -> Image.Image:
    """DecodedImage -> Pillow image: L / I;16 / LA for grey, RGB / RGBA for colour (8-bit)."""
    rgb = image.rgb
    if image.grey:
        y = np.clip(as_float(rgb), 0.0, 1.0) @ LUMA if rgb.ndim == 3 else rgb
        if image.bit_depth == 16 and sixteen_bit and image.alpha is None:
            return Image.fromarray(_as_uint16(y))  # mode I;16
        pil = Image.fromarray(_as_uint8(y))  # mode L
        if image.alpha is not None:
            pil = Image.merge("LA", [pil, Image.fromarray(_as_uint8(image.alpha))])
        return pil
    if image.alpha is not None:  # one RGBA array that Pillow uses in place, not a merge
        return Image.fromarray(np.dstack([_as_uint8(rgb), _as_uint8(image.alpha)]), "RGBA")
    return Image.fromarray(_as_uint8(rgb))  # mode RGB


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8, rounded; one temporary, updated in place (large outputs)."""
    scaled = np.multiply(values, 255.0, dtype=np.float32)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.uint8)


def _as_uint8(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1], uint8 or uint16 -> uint8 (integers already 8-bit are not copied)."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.uint16:
        return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return _to_uint8(values)


def _as_uint16(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1], uint8 or uint16 -> uint16 (uint16 is not copied)."""
    if values.dtype == np.uint16:
        return values
    if values.dtype == np.uint8:
        return values.astype(np.uint16) * 257
    return np.round(np.clip(values, 0.0, 1.0) * 65535.0).astype(np.uint16)


def as_float(values: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / floats -> float32 in [0, 1]."""
    if values.dtype in (np.uint8, np.uint16):
        return values.astype(np.float32) / float(np.iinfo(values.dtype).max)
    return np.asarray(values, dtype=np.float32)


def _to_uint16(image: DecodedImage) -> np.ndarray:
    """(H, W, 3|4) uint16 of a colour image, (H, W, 1|2) of a grey one (alpha last)."""
    if image.grey:
        rgb = image.rgb
        y = rgb if rgb.ndim == 2 else np.clip(as_float(rgb), 0.0, 1.0) @ LUMA
        planes = _as_uint16(y)[..., None]
    else:
        planes = _as_uint16(image.rgb)
    if image.alpha is not None:
        planes = np.dstack([planes, _as_uint16(image.alpha)])
    return planes


def _encode_png16(array: np.ndarray, *, icc: bytes | None = None, exif: bytes | None = None,
                  level: int = DEFAULT_PNG_COMPRESSION) -> bytes:
    """(H, W, 3|4) uint16 -> a 16-bit RGB/RGBA PNG file (filter 'Up' on every row), pixel
    data compressed at zlib ``level``.

    Why by hand: Pillow holds colour at 8 bits per channel and cannot write 16-bit RGB PNG;
    pypng can, but filters row by row in pure Python (far slower on the tens of megapixels an
    upscale makes) and would be one more dependency; tifffile writes TIFF only. The format
    part is a few chunks, and tests read the files back with Pillow at 16 bits."""
    height, width, channels = array.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    parts = [b"\x89PNG\r\n\x1a\n",
             chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))]
    if icc:
        parts.append(chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif:
        parts.append(chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    # one IDAT chunk per piece of the zlib stream (PNG joins consecutive IDATs), so no chunk
    # nears PNG's 2 GiB length limit and the pieces are never concatenated but once, below
    parts += [chunk(b"IDAT", piece) for piece in _deflate_up_filtered(array, level)]
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


PNG16_ROWS_PER_BLOCK = 64  # rows filtered and compressed at a time: no full-size copies


def _deflate_up_filtered(array: np.ndarray, level: int) -> list[bytes]:
    """(H, W, C) uint16 -> the zlib stream of its PNG scanlines (big-endian samples, filter
    'Up': each byte minus the byte above it), as pieces, made a block of rows at a time so
    that no full-size copy of the image exists besides the compressed output."""
    height, width, channels = array.shape
    compressor = zlib.compressobj(level)
    pieces, above = [], None
    for r0 in range(0, height, PNG16_ROWS_PER_BLOCK):
        block = array[r0:r0 + PNG16_ROWS_PER_BLOCK].astype(">u2")
        rows = block.reshape(block.shape[0], width * channels).view(np.uint8)
        filtered = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
        filtered[:, 0] = 2  # the filter type byte of each scanline
        filtered[0, 1:] = rows[0] if above is None else rows[0] - above
        filtered[1:, 1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps modulo 256
        above = rows[-1].copy()
        pieces.append(compressor.compress(filtered))
    pieces.append(compressor.flush())
    return [piece for piece in pieces if piece]


def _write_tiff16(f: BinaryIO, array: np.ndarray, icc: bytes | None) -> None:
    import tifffile  # a dependency of scikit-image

    channels = array.shape[2]
    extra = ["unassalpha"] if channels in (2, 4) else None
    photometric = "rgb" if channels >= 3 else "minisblack"
    tifffile.imwrite(f, array if channels != 1 else array[..., 0], photometric=photometric,
                     extrasamples=extra, compression="zlib", iccprofile=icc, metadata=None)


def _exif_bytes(exif: bytes | None) -> bytes | None:
    parsed = _reset_orientation(exif)
    return parsed.tobytes() if parsed is not None else None


def _save_options(fmt: str, image: DecodedImage, mode: str, quality: int | None,
                  png_compression: int = DEFAULT_PNG_COMPRESSION) -> dict:
    spec = BY_NAME[fmt]
    options = encoder_options(fmt, quality, png_compression)
    if not spec.metadata:
        return options
    if image.icc_profile and (spec.grey_icc or mode not in {"L", "LA", "I;16"}):
        options["icc_profile"] = image.icc_profile
    exif = _reset_orientation(image.exif)
    if exif is not None and not (spec.max_exif and len(exif.tobytes()) > spec.max_exif):
        options["exif"] = exif  # (too long for JPEG: dropped; drop_unfit_metadata warns)
    return options


def _reset_orientation(exif: bytes | None) -> Image.Exif | None:
    """EXIF with Orientation = 1 (the pixels are already upright), or None."""
    if not exif:
        return None
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        if ORIENTATION in parsed:
            parsed[ORIENTATION] = 1
        return parsed
    except Exception:
        return None  # unparsable EXIF is dropped rather than copied blindly


def _available(fmt: str) -> str:
    feature = BY_NAME[fmt].needs_feature
    if feature is not None:
        from PIL import features

        if not features.check(feature):
            raise SirenupError(f"this Pillow build cannot write {BY_NAME[fmt].label}")
    return fmt


def _known() -> str:
    return listed(NAMES, last=None)
