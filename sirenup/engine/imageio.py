"""Reading and writing images: float arrays for the model, metadata and bit depth kept.

``read_image`` decodes any image Pillow can open into a ``DecodedImage``: colour as float32
(H, W, 3) in [0, 1] (greyscale expanded to three channels, remembered as grey), alpha apart,
EXIF orientation applied, EXIF and ICC profile kept. ``write_image`` writes one atomically
(temporary file in the target folder, fsync, rename), in the format the extension names.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sirenup.errors import SirenupError, UsageError

# Pillow format name for each extension we write.
FORMATS = {
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "webp": "WEBP",
    "tif": "TIFF",
    "tiff": "TIFF",
    "bmp": "BMP",
}
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
LOSSY_FORMATS = {"JPEG", "WEBP"}
DEFAULT_QUALITY = 95
ORIENTATION = 0x0112  # EXIF tag
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"


@dataclass
class DecodedImage:
    """An image ready for the model, with what is needed to write the result back alike."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]; grey images hold Y in all three channels
    alpha: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    mode: str = "RGB"  # Pillow mode of the file as decoded (before conversion)
    grey: bool = False  # write back as greyscale
    bit_depth: int = 8  # 8, or 16 for 16-bit greyscale
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
# Reading


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> DecodedImage:
    """Decode ``path`` (first frame of an animation) -> DecodedImage, or SirenupError.

    ``max_pixels`` bounds width x height (default: Pillow's decompression-bomb limit).
    """
    path = Path(path)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    saved_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = limit
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return _decode(path, im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise SirenupError(f"{path}: too many pixels for the limit of {limit} pixels "
                           f"(decompression-bomb protection; {_first_line(error)})") from None
    except FileNotFoundError:
        raise SirenupError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SirenupError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise SirenupError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise SirenupError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except SirenupError:
        raise
    except Exception as error:  # Pillow's decoders raise OSError, SyntaxError, ValueError, ...
        raise SirenupError(f"{path}: cannot decode the image ({_first_line(error)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit


def probe_image(path: str | os.PathLike) -> dict | None:
    """Cheap check (header only): {'format', 'mode', 'size', 'alpha'} or None if Pillow does
    not recognise ``path`` as an image. A recognised file may still fail to decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                alpha = im.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
                    "transparency" in im.info)
                return {"format": im.format, "mode": im.mode, "size": im.size, "alpha": alpha}
    except Image.DecompressionBombError:
        return {"format": None, "mode": None, "size": None, "alpha": False}
    except Exception:
        return None


def _decode(path: Path, im: Image.Image) -> DecodedImage:
    found: list[str] = []
    frames = getattr(im, "n_frames", 1)
    if getattr(im, "is_animated", False) and frames > 1:
        found.append(f"{path}: animated image ({frames} frames): only the first frame is used")
    source_mode, source_format = im.mode, im.format
    exif = im.info.get("exif")
    icc = im.info.get("icc_profile")
    im.load()
    im = ImageOps.exif_transpose(im)

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

    if mode in {"I;16", "I;16L", "I;16B", "I;16N", "I"}:
        values = np.asarray(im).astype(np.float32)
        y = np.clip(values, 0, 65535) / 65535.0
        grey, bit_depth = True, 16
    elif mode == "F":
        y = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        grey, bit_depth = True, 16
    elif mode in {"L", "LA"}:
        array = np.asarray(im)
        y = (array if mode == "L" else array[..., 0]).astype(np.float32) / 255.0
        if mode == "LA":
            alpha = array[..., 1].astype(np.float32) / 255.0
        grey = True
    else:
        if mode not in {"RGB", "RGBA"}:
            im = im.convert("RGBA" if im.has_transparency_data else "RGB")
            mode = im.mode
        array = np.asarray(im)
        rgb = array[..., :3].astype(np.float32) / 255.0
        if mode == "RGBA":
            alpha = array[..., 3].astype(np.float32) / 255.0
    if grey:
        rgb = np.repeat(y.astype(np.float32)[..., None], 3, axis=2)
    return DecodedImage(rgb=np.ascontiguousarray(rgb, dtype=np.float32),
                        alpha=None if alpha is None else alpha.astype(np.float32),
                        mode=source_mode, grey=grey, bit_depth=bit_depth, exif=exif,
                        icc_profile=icc, format=source_format, warnings=found)


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


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# --------------------------------------------------------------------------------------------
# Writing


def output_format(path: str | os.PathLike, format: str | None = None) -> str:
    """Pillow format name for ``format`` (png, jpg, ...) or else the extension of ``path``."""
    if format:
        name = format.lower().lstrip(".")
        if name not in FORMATS:
            raise UsageError(f"--format {format}: expected one of {_known()}")
        return _available(FORMATS[name])
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        what = f"extension '.{suffix}'" if suffix else "no extension"
        raise UsageError(f"{path}: {what}: cannot tell the output format "
                         f"(use one of {_known()}, or --format)")
    return _available(FORMATS[suffix])


def check_writable(path: str | os.PathLike, image: DecodedImage,
                   format: str | None = None) -> str:
    """Raise SirenupError if ``image`` cannot be written to ``path``; -> Pillow format."""
    fmt = output_format(path, format)
    if image.alpha is not None and fmt not in ALPHA_FORMATS:
        raise SirenupError(f"{path}: {fmt} cannot store transparency and the image has an "
                           "alpha channel; write .png, .webp or .tif instead")
    return fmt


def write_image(path: str | os.PathLike, image: DecodedImage, *, format: str | None = None,
                quality: int | None = None) -> None:
    """Write ``image`` to ``path`` atomically, in ``format`` or the one its extension names."""
    path = Path(path)
    fmt = check_writable(path, image, format)
    if quality is not None and not 1 <= quality <= 100:
        raise UsageError(f"--quality {quality}: must be between 1 and 100")
    pil = to_pil(image, sixteen_bit=fmt in SIXTEEN_BIT_FORMATS)
    options = _save_options(fmt, image, pil.mode, quality)
    folder = path.parent
    if not folder.is_dir():
        raise SirenupError(f"{path}: the folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise SirenupError(f"{path}: cannot write ({_first_line(error)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            pil.save(f, format=fmt, **options)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise SirenupError(f"{path}: cannot write ({_first_line(error)})") from None
        raise
    _fsync_folder(folder)


def to_pil(image: DecodedImage, *, sixteen_bit: bool = True) -> Image.Image:
    """DecodedImage -> Pillow image: L / I;16 / LA for grey, RGB / RGBA for colour."""
    rgb = np.clip(np.asarray(image.rgb, dtype=np.float32), 0.0, 1.0)
    if image.grey:
        y = rgb @ LUMA if rgb.ndim == 3 else rgb
        if image.bit_depth == 16 and sixteen_bit and image.alpha is None:
            return Image.fromarray(np.round(y * 65535.0).astype(np.uint16))  # mode I;16
        pil = Image.fromarray(_to_uint8(y))  # mode L
        if image.alpha is not None:
            pil = Image.merge("LA", [pil, Image.fromarray(_to_uint8(image.alpha))])
        return pil
    pil = Image.fromarray(_to_uint8(rgb))  # mode RGB
    if image.alpha is not None:
        pil = Image.merge("RGBA", [*pil.split(), Image.fromarray(_to_uint8(image.alpha))])
    return pil


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def _save_options(fmt: str, image: DecodedImage, mode: str, quality: int | None) -> dict:
    options: dict = {}
    if fmt in LOSSY_FORMATS:
        options["quality"] = DEFAULT_QUALITY if quality is None else quality
        if fmt == "JPEG" and options["quality"] >= 90:
            options["subsampling"] = 0  # 4:4:4: keep the detail the upscale made
    if fmt == "TIFF":
        from PIL import features

        if features.check("libtiff"):
            options["compression"] = "tiff_deflate"
    if fmt == "BMP":
        return options
    # WebP stores RGB only: a grey profile would not describe it.
    if image.icc_profile and not (fmt == "WEBP" and mode in {"L", "LA", "I;16"}):
        options["icc_profile"] = image.icc_profile
    exif = _reset_orientation(image.exif)
    if exif is not None:
        options["exif"] = exif
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


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows it (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _available(fmt: str) -> str:
    if fmt == "WEBP":
        from PIL import features

        if not features.check("webp"):
            raise SirenupError("this Pillow build cannot write WebP")
    return fmt


def _known() -> str:
    return "png, jpg, webp, tif, bmp"
