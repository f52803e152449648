"""The Upscaler: one object per run that holds a loaded model on a device and upscales
RGB arrays with the tiler; plus ``upscale_file``, the one-image operation the CLI calls
(folders: ``sirenup.engine.batch``)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sirenup.defaults import DEFAULT_OVERLAP, DEFAULT_TILE
from sirenup.engine.devices import autocast, resolve_device
from sirenup.engine.imageio import (
    EXTENSIONS,
    LUMA,
    DecodedImage,
    check_output_size,
    check_png_compression,
    check_quality,
    check_writable,
    output_format,
    parse_color,
    read_image,
    write_image,
)
from sirenup.engine.sizing import aspect_warning, scale_label, target_size
from sirenup.engine.tiler import MIN_TILE, upscale_tensor
from sirenup.errors import SirenupError, UsageError
from sirenup.hub.registry import DEFAULT_MODEL, cache_hint, resolve_model
from sirenup.models.weights import WeightsError, load_weights


class Upscaler:
    """Load ``model`` (registry name or weights path) once; upscale many images."""

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "auto",
                 precision: str = "auto", tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP):
        from sirenup.engine.devices import resolve_precision

        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)  # fp32, fp16 or bf16
        self.model_name, self.model_path = resolve_model(model)  # name, path or URL (cached)
        self.model, self.metadata = load_weights(self.model_path, device=self.device)
        self.model_name = self.metadata.get("name", self.model_name)
        self.tile, self.overlap = tile, overlap

    @torch.inference_mode()
    def upscale_rgb(self, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(h, w, 3) float32 in [0, 1] -> (H, W, 3) float32 in [0, 1], size = (W, H)."""
        lr = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
        lr = lr.permute(2, 0, 1).unsqueeze(0).to(self.device)  # (1, 3, h, w)
        with autocast(self.device, self.precision):
            out = upscale_tensor(self.model, lr, (size[1], size[0]), tile=self.tile,
                                 overlap=self.overlap)
        # The tiler's canvas is channels-last: this permute is a view, not a copy.
        return out[0].permute(1, 2, 0).float().cpu().numpy()  # (H, W, 3)

    def upscale_image(self, image: DecodedImage, size: tuple[int, int]) -> DecodedImage:
        """Upscale a decoded image to ``size`` = (W, H): colour through the model, alpha with
        Pillow's bicubic filter; grey stays grey (the model's RGB back to luminance)."""
        rgb = self.upscale_rgb(image.rgb, size)
        if image.grey:
            rgb = np.repeat((rgb @ LUMA)[..., None], 3, axis=2)
        alpha = None
        if image.alpha is not None:
            plane = Image.fromarray(np.ascontiguousarray(image.alpha, dtype=np.float32))  # "F"
            plane = plane.resize(size, Image.Resampling.BICUBIC)
            alpha = np.clip(np.asarray(plane, dtype=np.float32), 0.0, 1.0)
        return dataclasses.replace(image, rgb=np.ascontiguousarray(rgb, dtype=np.float32),
                                   alpha=alpha, warnings=list(image.warnings))


def check_tiling(tile: int, overlap: int) -> None:
    if tile != 0 and tile < MIN_TILE:
        raise UsageError(f"--tile {tile}: must be 0 (whole image) or at least {MIN_TILE}")
    if overlap < 0:
        raise UsageError(f"--overlap {overlap}: must be 0 or more")


def load_upscaler(model: str | os.PathLike | None = None, *, device: str = "auto",
                  precision: str = "auto", tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP) -> Upscaler:
    """Check the tiling options and load the model once; weights errors -> SirenupError."""
    check_tiling(tile, overlap)
    try:
        return Upscaler(str(model) if model else DEFAULT_MODEL, device=device,
                        precision=precision, tile=tile, overlap=overlap)
    except WeightsError as error:
        raise SirenupError(f"{error}{cache_hint(error.path)}") from None


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
    return a.resolve() == b.resolve()


def upscale_file(upscaler: Upscaler, src: str | os.PathLike, dst: str | os.PathLike | None = None,
                 *, scale: float | None = None, width: int | None = None,
                 height: int | None = None, format: str | None = None,
                 quality: int | None = None, png_compression: int | None = None,
                 background: str | None = None,
                 max_input_pixels: int | None = None, max_output_pixels: int | None = None,
                 overwrite_input: bool = False,
                 on_warning: Callable[[str], None] | None = None) -> dict:
    """Read ``src``, upscale it to the size the options give, write ``dst`` atomically.

    ``dst`` None: ``default_output`` beside the input. ``background``: a colour that flattens
    alpha into formats without it. ``png_compression``: zlib level 0-9 of a PNG output
    (None: the default, 4). ``max_input_pixels`` / ``max_output_pixels``: limits
    (None: defaults, 0: none). -> report dict (input, output, in_size, out_size, bit_depth,
    seconds, model, device, warnings).
    """
    start = time.perf_counter()
    src = Path(src)
    check_quality(quality)
    check_png_compression(png_compression)
    color = parse_color(background) if background is not None else None
    if dst is not None:
        dst = Path(dst)
        output_format(dst, format)  # an unknown extension fails before any work
    elif format:
        output_format(None, format)

    def output_size(in_size: tuple[int, int]) -> tuple[int, int]:
        size = target_size(in_size[0], in_size[1], scale=scale, out_width=width,
                           out_height=height)
        check_output_size(size, max_output_pixels, dst)
        return size

    # The output size is checked from the header, before the pixels take memory.
    image = read_image(src, max_pixels=max_input_pixels, check_size=output_size)
    size = output_size(image.size)
    aspect = aspect_warning(image.size, size, width, height)
    if aspect:
        image.warnings.append(f"{src}: {aspect}")
    for message in image.warnings:
        if on_warning is not None:
            on_warning(message)
    if dst is None:
        dst = default_output(src, image.size, size, format)
    if not overwrite_input and same_file(src, dst):
        raise SirenupError(f"{dst}: is the input file; choose another output")
    check_writable(dst, image, format, color)
    result = upscaler.upscale_image(image, size)
    write_image(dst, result, format=format, quality=quality, background=color,
                png_compression=png_compression)
    return {
        "input": str(src),
        "output": str(dst),
        "in_size": list(image.size),
        "out_size": list(size),
        "bit_depth": image.bit_depth,
        "seconds": round(time.perf_counter() - start, 3),
        "model": upscaler.model_name,
        "device": str(upscaler.device),
        "warnings": list(image.warnings),
    }
