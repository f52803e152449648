"""Everything ``upscale`` can know before a model is loaded, checked first (torch-free).

``plan_upscale`` checks the options (scale, size, format, quality, tiling), the output path
(a regular file or nothing; a folder that exists and is writable; not the input; by default
not a file of the user's that is not an image, unless ``overwrite``), reads the input (its size from
the header first, against --max-input-pixels and --max-output-pixels), and checks that the
output format can hold the result (alpha, WebP's and JPEG's largest side; EXIF that JPEG
cannot hold is dropped with a warning). Only then does the CLI import torch and load a model:
a mistake costs a fraction of a second, not a model load, and never the computation.

The per-image pipeline that ``upscale`` and ``batch`` share starts here: ``OutputSpec`` (the
options, checked once), ``prepare_job`` (read with the size check, aspect warning, writable
check) -> an ``ImageJob``, which ``upscaler.process`` upscales and writes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sirenup.defaults import MIN_TILE
from sirenup.errors import SirenupError, UsageError, mention
from sirenup.files import check_folder_writable, check_output_path
from sirenup.imaging.imageio import (
    EXTENSIONS,
    DecodedImage,
    check_output_size,
    check_png_compression,
    check_quality,
    check_writable,
    drop_unfit_metadata,
    input_limit,
    output_format,
    parse_color,
    probe_image,
    read_image,
)
from sirenup.inference.sizing import aspect_warning, scale_label, target_size


@dataclass(frozen=True)
class OutputSpec:
    """How every output of a run is sized and written: the options ``upscale`` and ``batch``
    share, checked once by ``OutputSpec.checked`` before any file is read."""

    scale: float | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    quality: int | None = None
    png_compression: int | None = None  # None: DEFAULT_PNG_COMPRESSION
    background: tuple[int, int, int] | None = None  # parsed --background
    max_input_pixels: int | None = None  # None: Pillow's limit; 0: none
    max_output_pixels: int | None = None  # None: 400 MP; 0: none

    @classmethod
    def checked(cls, *, scale: float | None = None, width: int | None = None,
                height: int | None = None, format: str | None = None,
                quality: int | None = None, png_compression: int | None = None,
                background: str | None = None, max_input_pixels: int | None = None,
                max_output_pixels: int | None = None) -> OutputSpec:
        """The options as given (``background``: the colour's text) -> a spec, or UsageError.
        The format is the caller's to check: whether it fits depends on the output's name."""
        check_quality(quality)
        check_png_compression(png_compression)
        input_limit(max_input_pixels)
        check_output_size((1, 1), max_output_pixels)
        color = parse_color(background) if background is not None else None
        check_sizing(scale, width, height)
        return cls(scale=scale, width=width, height=height, format=format, quality=quality,
                   png_compression=png_compression, background=color,
                   max_input_pixels=max_input_pixels, max_output_pixels=max_output_pixels)

    def output_size(self, in_size: tuple[int, int], dst: Path | None) -> tuple[int, int]:
        """(W, H) of the output of an input of ``in_size``, within --max-output-pixels."""
        size = target_size(in_size[0], in_size[1], scale=self.scale, out_width=self.width,
                           out_height=self.height)
        check_output_size(size, self.max_output_pixels, dst)
        return size


@dataclass
class ImageJob:
    """One image's way through the pipeline: read and checked (``prepare_job``), then
    upscaled and written (``upscaler.process``). ``image`` is the input as the file's
    integers; it is dropped once the output holds the result."""

    src: Path
    dst: Path
    spec: OutputSpec
    image: DecodedImage | None
    size: tuple[int, int]  # (W, H) of the output
    warnings: list[str] = field(default_factory=list)


def prepare_job(src: Path, dst: Path | None, spec: OutputSpec, *,
                choose_output: Callable[[DecodedImage, tuple[int, int]], Path] | None = None
                ) -> ImageJob:
    """Read ``src`` (its size checked from the header, before the pixels take memory), warn of
    a stretched aspect ratio, check that the output format holds the result (dropping
    metadata it cannot hold, with a warning) -> the job. ``choose_output(image, size)``: the
    output's path once the input is read (``dst`` None: the default name), and its checks."""
    image = read_image(src, max_pixels=spec.max_input_pixels,
                       check_size=lambda in_size: spec.output_size(in_size, dst),
                       integers=True)  # uint8/uint16 samples: converted to float per tile
    size = spec.output_size(image.size, dst)
    aspect = aspect_warning(image.size, size, spec.width, spec.height)
    if aspect:
        image.warnings.append(f"{src}: {aspect}")
    if choose_output is not None:
        dst = choose_output(image, size)
    fmt = check_writable(dst, image, spec.format, spec.background, size=size)
    image.warnings += drop_unfit_metadata(dst, image, fmt)
    return ImageJob(src=src, dst=dst, spec=spec, image=image, size=size,
                    warnings=list(image.warnings))


def check_tiling(tile: int | None, overlap: int | None) -> None:
    """--tile and --overlap as given (None: not given, the defaults)."""
    if tile is not None and tile != 0 and tile < MIN_TILE:
        raise UsageError(f"{tile}: must be 0 (whole image) or at least {MIN_TILE}", option="tile")
    if overlap is not None and overlap < 0:
        raise UsageError(f"{overlap}: must be 0 or more", option="overlap")


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
PRECISION_NAMES = ("auto", "fp32", "fp16", "bf16", "float32", "float", "float16", "half",
                   "bfloat16")  # devices.PRECISIONS and their aliases


def check_device_spelling(device: str | None, precision: str | None = None) -> None:
    """--device and --precision that no machine accepts (a typo): refused before torch is
    imported; whether the device exists is ``devices.resolve_device``'s to say."""
    spec = (device or "auto").strip().lower()
    if not _DEVICE.fullmatch(spec):
        raise UsageError(f"{device}: expected auto, cpu, cuda, cuda:N or mps", option="device")
    if precision is not None and (precision or "auto").strip().lower() not in PRECISION_NAMES:
        raise UsageError(f"{precision}: expected auto, fp32, fp16 or bf16",
                         option="precision")


def check_sizing(scale: float | None, width: int | None, height: int | None) -> None:
    """--scale / --width / --height that no input could satisfy (a scale below 1, both
    given): refused before any file is read."""
    target_size(1, 1, scale=scale, out_width=width, out_height=height)


def default_output(src: Path, in_size: tuple[int, int], size: tuple[int, int],
                   format: str | None = None) -> Path:
    """``<stem>_x<S>.png`` beside the input (photo_x4.png, photo_x1920x1080.png); the extension
    follows ``format`` when one is given."""
    ext = EXTENSIONS[output_format(src, format)] if format else ".png"
    return src.with_name(f"{src.stem}_x{scale_label(in_size[0], in_size[1], size)}{ext}")


def same_file(a: Path, b: Path) -> bool:
    try:
        if b.exists() and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (Python < 3.13)
        return False


def check_output_folder(dst: Path) -> None:
    """The folder of ``dst`` must exist (a usage error: the path is mistyped) and be
    writable."""
    folder = dst.parent
    if not folder.is_dir():
        raise UsageError(f"{dst}: the folder {folder} does not exist")
    check_folder_writable(folder)


def check_replaceable(dst: Path, overwrite: bool) -> None:
    """An existing file at the default output ``dst`` is replaced only when it is an image
    (an earlier output) or with ``overwrite``: a file of the user's that is not an image is
    never lost to a name sirenup chose."""
    check_output_path(dst)
    if overwrite or not os.path.lexists(dst) or not os.path.exists(dst):
        return
    if probe_image(dst) is None:
        raise SirenupError(f"{dst}: exists and is not an image; not replaced (use "
                           f"{mention('overwrite')} to replace it, or choose another output)")


def plan_upscale(src: str | os.PathLike, dst: str | os.PathLike | None = None, *,
                 scale: float | None = None, width: int | None = None,
                 height: int | None = None, format: str | None = None,
                 quality: int | None = None, png_compression: int | None = None,
                 background: str | None = None, max_input_pixels: int | None = None,
                 max_output_pixels: int | None = None, overwrite_input: bool = False,
                 overwrite: bool = False,
                 on_warning: Callable[[str], None] | None = None) -> ImageJob:
    """Check everything about one upscale that does not need the model -> the job (the
    input decoded); UsageError (exit 2) or SirenupError (exit 1) otherwise."""
    src = Path(src)
    if src.is_dir():
        raise SirenupError(f"{src}: is a folder, not an image; sirenup batch {src} OUTPUT_DIR "
                           "upscales every image in it")
    spec = OutputSpec.checked(scale=scale, width=width, height=height, format=format,
                              quality=quality, png_compression=png_compression,
                              background=background, max_input_pixels=max_input_pixels,
                              max_output_pixels=max_output_pixels)
    if dst is not None:
        dst = Path(dst)
        check_output_path(dst)  # a device, FIFO or folder: said first
        output_format(dst, format)  # an unknown or contradicting extension: before any work
        check_output_folder(dst)  # (a file named by -o is the user's choice to replace)
    elif format:
        output_format(None, format)

    def choose_output(image: DecodedImage, size: tuple[int, int]) -> Path:
        chosen = dst
        if chosen is None:
            chosen = default_output(src, image.size, size, format)
            check_replaceable(chosen, overwrite)
            check_output_folder(chosen)
        if not overwrite_input and same_file(src, chosen):
            raise SirenupError(f"{chosen}: is the input file; choose another output")
        return chosen

    job = prepare_job(src, dst, spec, choose_output=choose_output)
    for message in job.warnings:
        if on_warning is not None:
            on_warning(message)
    return job
