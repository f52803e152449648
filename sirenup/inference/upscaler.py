"""The Upscaler: one object per run that holds a loaded model on a device and upscales
RGB arrays with the tiler; ``process``, the per-image step that ``upscale`` and ``batch``
share (upscale a prepared job, free the arrays, hand back the write); ``upscale_file``, the
one-image operation of the Python API (folders: ``sirenup.inference.batch``)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from sirenup.defaults import DEFAULT_OVERLAP
from sirenup.errors import SirenupError, UsageError
from sirenup.hub.registry import DEFAULT_MODEL, cache_hint, resolve_model
from sirenup.imaging.imageio import LUMA, DecodedImage, as_float, prepare_write
from sirenup.imaging.stdio import STDIO, is_stdio, stdio_paths
from sirenup.inference.devices import auto_tile, autocast, resolve_device
from sirenup.inference.planning import (  # noqa: F401 (default_output, same_file: API)
    ImageJob,
    check_tiling,
    default_output,
    plan_upscale,
    same_file,
)
from sirenup.inference.sizing import target_size
from sirenup.inference.tiler import Progress, Sink, TensorSink, upscale_into
from sirenup.models.coords import scale_of
from sirenup.models.weights import WeightsError, load_weights
from sirenup.untrusted import shown


class Upscaler:
    """Load ``model`` (registry name or weights path) once; upscale many images.

    ``dither``: True / False dithers the output or rounds it plainly, whatever the weights
    file records (``LiifSirenConfig.dither``); None: as the file says."""

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "auto",
                 precision: str = "auto", tile: int | None = None,
                 overlap: int | None = None, dither: bool | None = None):
        from sirenup.inference.devices import resolve_precision

        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)  # fp32, fp16 or bf16
        self.model_name, self.model_path = resolve_model(model)  # name, path or URL (cached)
        self.model, self.metadata = load_weights(self.model_path, device=self.device)
        # the file's own name for itself: untrusted text, shown escaped and cut
        self.model_name = shown(self.metadata.get("name", self.model_name))
        if dither is not None:  # the user's choice over the file's (``LiifSiren.dither_output``)
            self.model.config.dither = int(dither)
        self.tile = tile  # None: not chosen (devices.auto_tile picks it per image)
        self.overlap = DEFAULT_OVERLAP if overlap is None else overlap

    def __call__(self, image, *, scale: float | None = None,
                 size: tuple[int, int] | None = None):
        """Upscale one image in memory (the Python API, e.g. inside a Ray Data or Dask map).

        ``image``: a PIL image (-> a PIL RGB image) or an (h, w, 3) array of uint8, uint16 or
        floats in [0, 1] (-> an array of the same dtype). ``scale`` (default 4) or ``size`` =
        (W, H), as the CLI's --scale / --width --height.
        """
        if isinstance(image, Image.Image):
            return Image.fromarray(self(np.asarray(image.convert("RGB")), scale=scale,
                                        size=size))
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise UsageError(f"expected an (h, w, 3) RGB array, got shape {array.shape}")
        width, height = size if size is not None else (None, None)
        out_size = target_size(array.shape[1], array.shape[0], scale=scale, out_width=width,
                               out_height=height)
        if array.dtype in (np.uint8, np.uint16):  # converted to float one tile at a time
            sink = QuantizedSink((out_size[1], out_size[0]), array.dtype.type)
            self.upscale_into(array, out_size, sink, levels=sink.levels)
            return sink.array
        return self.upscale_rgb(array.astype(np.float32, copy=False), out_size)

    def tile_for(self, lr_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
        """The tile to start with: ``self.tile`` when one was chosen, else the default (on the
        CPU the whole image when it is small enough), grown on CUDA/MPS to what free memory
        holds (``devices.auto_tile``)."""
        scale = max(scale_of(lr_hw, out_hw))  # the larger axis: the safe estimate
        return auto_tile(self.device, scale, self.tile, self.model, image_hw=tuple(lr_hw))

    @torch.inference_mode()
    def upscale_into(self, rgb: np.ndarray, size: tuple[int, int], sink: Sink,
                     progress: Progress | None = None, levels: int = 255) -> None:
        """Upscale (h, w, 3) float32 in [0, 1], or uint8/uint16 samples, to ``size`` = (W, H),
        handing the output to ``sink`` piece by piece (``tiler.stream_tiles``, which converts
        integers to float one tile at a time); ``progress(done, total)`` after each band;
        ``levels``: the integers the sink stores (255, or 65535 for 16 bits)."""
        lr = torch.from_numpy(_model_input(rgb, self.device))
        lr = lr.permute(2, 0, 1).unsqueeze(0).to(self.device)  # (1, 3, h, w)
        out_hw = (size[1], size[0])
        with autocast(self.device, self.precision):
            upscale_into(self.model, lr, out_hw, sink,
                         tile=self.tile_for(lr.shape[-2:], out_hw), overlap=self.overlap,
                         progress=progress, levels=levels)

    def upscale_rgb(self, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(h, w, 3) float32 in [0, 1] -> (H, W, 3) float32 in [0, 1], size = (W, H)."""
        sink = TensorSink((size[1], size[0]), self.device)
        self.upscale_into(rgb, size, sink)
        return sink.canvas.cpu().numpy()

    def upscale_image(self, image: DecodedImage, size: tuple[int, int],
                      progress: Progress | None = None) -> DecodedImage:
        """Upscale a decoded image to ``size`` = (W, H): colour through the model, alpha with
        Pillow's bicubic filter; grey stays grey (the model's RGB back to luminance).

        The result holds integers of the image's bit depth (uint8, or uint16 for 16-bit
        images), assembled as the model goes: no full-size float copy of the output is made,
        so memory is the output in its final form plus what one tile needs.
        """
        dtype = np.uint16 if image.bit_depth == 16 else np.uint8
        sink = QuantizedSink((size[1], size[0]), dtype, grey=image.grey)
        # float or integer samples alike
        self.upscale_into(image.rgb, size, sink, progress, levels=sink.levels)
        alpha = None if image.alpha is None else resize_alpha(image.alpha, size, dtype)
        return dataclasses.replace(image, rgb=sink.array, alpha=alpha,
                                   warnings=list(image.warnings))


class QuantizedSink:
    """Receives the tiler's output and stores it as ``dtype`` integers (uint8: 0-255, uint16:
    0-65535, rounded to nearest), (H, W, 3), or (H, W) luminance for a grey image."""

    def __init__(self, out_hw: tuple[int, int], dtype: type = np.uint8, *, grey: bool = False):
        self.array = np.empty(out_hw if grey else (*out_hw, 3), dtype=dtype)
        self.levels = int(np.iinfo(dtype).max)  # 255 or 65535 (also the dither's step)
        self.grey = grey

    def __call__(self, y0: int, y1: int, x0: int, x1: int, values: torch.Tensor) -> None:
        if not bool(torch.isfinite(values).all()):  # clamped, NaN would be written as black
            raise SirenupError("the model produced NaN or infinite values (weights that are "
                               "damaged or diverged?); nothing was written")
        values = values.clamp(0, 1)
        if self.grey:
            values = values @ torch.from_numpy(LUMA).to(values.device)
        values = values.mul_(self.levels).round_()
        kind = torch.uint8 if self.levels == 255 else torch.int32  # torch has no general uint16
        self.array[y0:y1, x0:x1] = values.to(kind).cpu().numpy()


def _model_input(rgb: np.ndarray, device: torch.device) -> np.ndarray:
    """The array the tiler gets: uint8 samples as they are (a quarter of float32's memory),
    uint16 too on the CPU (elsewhere as float32 in [0, 1], as before: torch's uint16 is not
    supported on every accelerator), anything else as float32. Contiguous and writable
    (torch.from_numpy warns about a read-only array, e.g. numpy's view of a PIL image)."""
    if rgb.dtype == np.uint16 and device.type != "cpu":
        rgb = as_float(rgb)
    dtype = rgb.dtype if rgb.dtype in (np.uint8, np.uint16) else np.float32
    return np.require(rgb, dtype, ["C_CONTIGUOUS", "WRITEABLE"])


def resize_alpha(alpha: np.ndarray, size: tuple[int, int], dtype: type) -> np.ndarray:
    """Alpha (h, w), float in [0, 1] or uint8/uint16 -> (H, W) ``dtype`` integers, Pillow's
    bicubic filter. 8-bit alpha is resized as an 8-bit plane (Pillow rounds and clips): no
    float plane of the output's size."""
    if dtype == np.uint8:
        plane = alpha if alpha.dtype == np.uint8 else \
            np.rint(np.clip(as_float(alpha), 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.asarray(Image.fromarray(plane).resize(size, Image.Resampling.BICUBIC))
    plane = Image.fromarray(np.ascontiguousarray(as_float(alpha)))  # mode "F"
    plane = np.asarray(plane.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    return np.rint(np.clip(plane, 0.0, 1.0) * 65535.0).astype(np.uint16)


def load_upscaler(model: str | os.PathLike | None = None, *, device: str = "auto",
                  precision: str = "auto", tile: int | None = None,
                  overlap: int | None = None, dither: bool | None = None) -> Upscaler:
    """Check the tiling options and load the model once (``tile``/``overlap`` None: not
    chosen, the defaults; ``dither`` None: as the weights file says); weights errors ->
    SirenupError."""
    check_tiling(tile, overlap)
    try:
        return Upscaler(str(model) if model else DEFAULT_MODEL, device=device,
                        precision=precision, tile=tile, overlap=overlap, dither=dither)
    except WeightsError as error:
        raise SirenupError(f"{error}{cache_hint(error.path)}") from None


def upscale_file(upscaler: Upscaler, src: str | os.PathLike, dst: str | os.PathLike | None = None,
                 *, scale: float | None = None, width: int | None = None,
                 height: int | None = None, format: str | None = None,
                 quality: int | None = None, png_compression: int | None = None,
                 background: str | None = None,
                 max_input_pixels: int | None = None, max_output_pixels: int | None = None,
                 overwrite_input: bool = False, overwrite: bool = False,
                 on_warning: Callable[[str], None] | None = None,
                 on_progress: Progress | None = None) -> dict:
    """Read ``src``, upscale it to the size the options give, write ``dst`` atomically.

    ``dst`` None: ``default_output`` beside the input. ``background``: a colour that flattens
    alpha into formats without it. ``png_compression``: zlib level 0-9 of a PNG output
    (None: the default, 4). ``max_input_pixels`` / ``max_output_pixels``: limits
    (None: defaults, 0: none). ``overwrite``: replace a file at ``dst`` that is not an
    image (else refused, see ``planning.check_replaceable``). ``src``/``dst`` ``-``: standard
    input/output (``imaging.stdio``). ``on_progress(done, total)``: the tiler's, after each
    band. -> report dict (input, output, in_size, out_size, bit_depth, seconds, model, device,
    warnings).
    """
    with stdio_paths(src, dst, format) as (path, out):
        report = _upscale_file(upscaler, path, out, scale=scale, width=width, height=height,
                               format=format, quality=quality, png_compression=png_compression,
                               background=background, max_input_pixels=max_input_pixels,
                               max_output_pixels=max_output_pixels,
                               overwrite_input=overwrite_input, overwrite=overwrite,
                               on_warning=on_warning, on_progress=on_progress)
    for key, given in (("input", src), ("output", dst)):
        if is_stdio(given):
            report[key] = STDIO
    return report


def _upscale_file(upscaler: Upscaler, src: os.PathLike, dst: os.PathLike | None, *,
                  on_progress: Progress | None, **options) -> dict:
    start = time.perf_counter()
    return run_plan(upscaler, plan_upscale(src, dst, **options), start, on_progress)


def run_plan(upscaler: Upscaler, job: ImageJob, start: float | None = None,
             on_progress: Progress | None = None) -> dict:
    """Upscale and write what ``planning.plan_upscale`` checked -> the report (see
    ``upscale_file``)."""
    start = time.perf_counter() if start is None else start
    facts, write = process(upscaler, job, on_progress)
    write()
    return {**facts, "model": upscaler.model_name, "device": str(upscaler.device),
            "warnings": list(job.warnings), "seconds": round(time.perf_counter() - start, 3)}


def process(upscaler: Upscaler, job: ImageJob, on_progress: Progress | None = None
            ) -> tuple[dict, Callable[[], None]]:
    """Upscale a prepared job (``planning.prepare_job``) -> (its facts: input, output,
    in_size, out_size, bit_depth; ``write``, which encodes and writes the output). The input's
    and the output's arrays are both freed before ``write`` is returned: the encoder holds
    its own copy, so the peak while encoding is that copy alone (upscale and batch alike)."""
    image, spec = job.image, job.spec
    job.image = None  # the input's pixels go as soon as the output holds the result
    result = upscaler.upscale_image(image, job.size, on_progress)
    facts = {"input": str(job.src), "output": str(job.dst), "in_size": list(image.size),
             "out_size": list(job.size), "bit_depth": image.bit_depth}
    del image
    write = prepare_write(job.dst, result, format=spec.format, quality=spec.quality,
                          background=spec.background, png_compression=spec.png_compression)
    return facts, write
