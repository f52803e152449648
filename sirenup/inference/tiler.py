"""Tiled inference: bounded memory, no seams.

The LR image is cut into tiles. Each tile is read with ``receptive_radius`` pixels of extra
context, so the features under its output region are exactly those of the whole image; each
tile's output region extends ``overlap`` LR pixels past its core, and neighbouring regions are
blended with raised-cosine weights that sum to one (as demucs' ``apply_model`` does for audio).
On an out-of-memory error the tile is halved and the image retried (chaiNNer's auto-split).
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from sirenup.defaults import DEFAULT_OVERLAP, DEFAULT_TILE, MIN_TILE
from sirenup.inference.devices import DecodeSizes, decode_sizes
from sirenup.models.coords import (
    cell_of,
    cell_size,
    edge_coords,
    first_output_at,
    pixel_centres,
    scale_of,
)
from sirenup.models.patch_siren import LiifSiren


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in LR pixels: core [start, stop), read [read0, read1)."""

    start: int
    stop: int
    read0: int
    read1: int
    ext0: int  # output region, extended by the overlap, LR edge coordinates
    ext1: int


def split_axis(length: int, tile: int, overlap: int, context: int) -> list[Span]:
    """Cover [0, length) with tiles of ``tile`` pixels (the last may be shorter)."""
    spans = []
    for start in range(0, length, tile):
        stop = min(start + tile, length)
        ext0, ext1 = max(start - overlap, 0), min(stop + overlap, length)
        spans.append(Span(start, stop, max(ext0 - context, 0), min(ext1 + context, length),
                          ext0, ext1))
    return spans


def output_range(lr_lo: float, lr_hi: float, lr_len: int, out_len: int) -> tuple[int, int]:
    """Output pixels whose centres fall in LR edge coordinates [lr_lo, lr_hi)."""
    return first_output_at(lr_lo, lr_len, out_len), first_output_at(lr_hi, lr_len, out_len)


def blend_weights(span: Span, length: int, overlap: int, lr_len: int, out_len: int,
                  out0: int, out1: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1-D weights over output pixels [out0, out1): 1 in the core, raised-cosine ramps across
    each overlap shared with a neighbour, so that neighbouring weights sum to one."""
    centres = edge_coords(torch.arange(out0, out1, dtype=torch.float64), lr_len, out_len)
    w = torch.ones_like(centres)
    if overlap > 0:
        if span.start > 0:  # ramp up across [start - overlap, start + overlap)
            t = ((centres - (span.start - overlap)) / (2 * overlap)).clamp(0, 1)
            w = w * torch.sin(t * math.pi / 2) ** 2
        if span.stop < length:  # ramp down across [stop - overlap, stop + overlap)
            t = ((centres - (span.stop - overlap)) / (2 * overlap)).clamp(0, 1)
            w = w * torch.cos(t * math.pi / 2) ** 2
    return w.to(dtype)


@dataclass(frozen=True)
class AxisTile:
    """One tile along one axis, with its output pixels: region [out0, out1) (the core plus the
    overlap), of which [done0, done1) is complete once this tile is added (the rest,
    [done1, out1), is shared with the next tile); ``weights`` over the region, normalised so
    the tiles' weights sum to one at every output pixel."""

    span: Span
    out0: int
    out1: int
    done0: int
    done1: int
    weights: torch.Tensor


def plan_axis(length: int, out_len: int, tile: int, overlap: int,
              context: int) -> list[AxisTile]:
    """The tiles along one axis of ``length`` LR pixels (``out_len`` output pixels).

    ``overlap`` is capped at half the tile, so an output pixel is shared by at most two tiles
    along an axis: what lets ``stream_tiles`` finish pixels as it goes."""
    overlap = min(overlap, tile // 2)
    spans = [(span, *output_range(span.ext0, span.ext1, length, out_len))
             for span in split_axis(length, tile, overlap, context)]
    spans = [(span, o0, o1) for span, o0, o1 in spans if o1 > o0]
    raw = [blend_weights(span, length, overlap, length, out_len, o0, o1, dtype=torch.float64)
           for span, o0, o1 in spans]
    total = torch.zeros(out_len, dtype=torch.float64)
    for (_, o0, o1), w in zip(spans, raw, strict=True):
        total[o0:o1] += w
    tiles, done = [], 0
    for i, ((span, o0, o1), w) in enumerate(zip(spans, raw, strict=True)):
        done1 = spans[i + 1][1] if i + 1 < len(spans) else out_len
        tiles.append(AxisTile(span, o0, o1, done, done1, (w / total[o0:o1]).float()))
        done = done1
    return tiles


Progress = Callable[[int, int], None]
"""progress(done, total): output pixels decoded so far (overlaps counted per tile), called
after each band; a retry after out-of-memory starts again from 0."""

Sink = Callable[[int, int, int, int, torch.Tensor], None]
"""sink(y0, y1, x0, x1, values): finished output pixels rows [y0, y1) x cols [x0, x1), values
(y1 - y0, x1 - x0, 3) float32 on the model's device, not clamped. Called once per pixel per
pass, top to bottom; a retry after out-of-memory calls it again for the same pixels."""


class Stage(NamedTuple):
    """A step on decoded output: ``run(values, top, left)`` maps (B, C, rows, cols) output
    pixels whose first row and column are ``top``/``left`` to (B, C', rows - 2 * halo,
    cols - 2 * halo). ``prepare`` (if any) is the row-wise part of it, applied once to each
    band's new rows before they join the rows kept from the band above."""

    halo: int
    run: Callable[[torch.Tensor, int, int], torch.Tensor]
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
    min_rows: int = 1  # output rows per run, at least (more: fewer passes over kept rows)


def output_stages(model: LiifSiren, out_hw: tuple[int, int], image_hw: tuple[int, int],
                  levels: int = 255) -> list[Stage]:
    """What runs on decoded output before it is final, in order: the HR-space refiner
    (decoder version 2), then the anti-imaging notch (``notch_periods`` > 0, x2 and above),
    then the dither (``dither``), of half a level of the output's integers (``levels``: 255
    for 8 bits, 65535 for 16). Each needs ``halo`` more output pixels of its input on every
    side."""
    stages = []
    if model.halo:
        stages.append(Stage(model.halo, lambda values, top, left: model.refine(
            values, torch.arange(top, top + values.shape[2]),
            torch.arange(left, left + values.shape[3]))))
    notch = model.grid_notch(out_hw, image_hw)
    if notch is not None:
        # its vertical pass re-reads the 2 * halo rows kept from the band above: in runs of
        # at least as many new rows, that costs at most as much again
        stages.append(Stage(notch.halo, lambda rows, top, left: notch(rows), notch.rows,
                            min_rows=2 * notch.halo))
    if model.config.dither:
        stages.append(Stage(0, lambda values, top, left: model.dither_output(
            values, top, left, levels)))
    return stages


def output_halo(model: LiifSiren, out_hw: tuple[int, int], image_hw: tuple[int, int]) -> int:
    """Output pixels decoded beyond a region on every side for its final values."""
    return sum(stage.halo for stage in output_stages(model, out_hw, image_hw))


def run_stage(bands: Iterator[tuple[int, torch.Tensor]], stage: Stage,
              left: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Apply a stage to consecutive bands of rows (top, (B, C, rows, cols)) starting at column
    ``left``: each band with the last 2 * halo rows of the ones before it above it (kept, so
    no row is computed twice), -> (top, band) of the stage's output, 2 * halo fewer rows in
    all and halo fewer on each side. Bands are gathered until ``stage.min_rows`` output rows
    are ready (the last one takes what is left)."""
    halo = stage.halo
    held, held_top = None, 0  # rows received and not yet consumed beyond the 2 * halo kept
    for top, band in bands:
        if stage.prepare is not None:
            band = stage.prepare(band)
        if held is not None:
            band, top = torch.cat([held, band], dim=2), held_top
        held, held_top = band, top
        if band.shape[2] - 2 * halo >= stage.min_rows:
            yield top + halo, stage.run(band, top, left)
            kept = band.shape[2] - 2 * halo
            # nothing to keep without a halo: no empty tensor for the next band to copy onto
            held, held_top = (band[:, :, kept:], top + kept) if halo else (None, 0)
    if held is not None and held.shape[2] > 2 * halo:
        yield held_top + halo, stage.run(held, held_top, left)


@torch.no_grad()
def decode_bands(model: LiifSiren, pre: torch.Tensor, lr: torch.Tensor, out_hw: tuple[int, int],
                 image_hw: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int],
                 origin: tuple[int, int], sizes: DecodeSizes, levels: int = 255
                 ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Decode output rows x cols of the whole image from a tile's encoding, in bands of rows:
    -> (top, bottom, (bottom - top, cols, 3)) per band.

    ``lr``/``pre`` cover the tile read from ``origin`` (x, y) of the image of ``image_hw``;
    ``levels``: the output's integer range (``output_stages``).

    A model with output stages (``output_stages``: the refiner, the notch) decodes their halo
    of output pixels more on every side (beyond the image too: the decoder is defined there,
    so a pixel's context never depends on where a tile or band ends), and runs the stages on
    each band in turn; each keeps the rows below a band it still needs for the next one, so
    no output row is decoded or refined twice.
    """
    out_h, out_w = out_hw
    in_h, in_w = image_hw
    (y0, y1), (x0, x1) = rows, cols
    stages = output_stages(model, out_hw, image_hw, levels)
    halo = sum(stage.halo for stage in stages)
    cell = cell_size(out_h, out_w, in_h, in_w, device=lr.device)
    band_rows = sizes.band_rows(x1 - x0, y1 - y0)
    xs = output_axis(out_w, in_w, x0 - halo, x1 + halo, origin[0], device=lr.device)

    def decoded() -> Iterator[tuple[int, torch.Tensor]]:
        # the first band with every halo above it, so that it comes out band_rows tall
        top, bottom = y0 - halo, min(y0 + band_rows, y1) + halo
        while top < y1 + halo:
            ys = output_axis(out_h, in_h, top, bottom, origin[1], device=lr.device)
            yield top, model.decode_grid(pre, lr, xs, ys, cell,
                                         block_queries=sizes.block_queries)
            top, bottom = bottom, min(bottom + band_rows, y1 + halo)

    bands, left = decoded(), x0 - halo
    for stage in stages:
        bands = run_stage(bands, stage, left)
        left += stage.halo
    for top, band in bands:
        yield top, top + band.shape[2], band[0].permute(1, 2, 0)  # a view: channels-last


def output_axis(out_len: int, in_len: int, start: int, stop: int, origin: int,
                device=None) -> torch.Tensor:
    """LR coordinates of output pixels [start, stop) along one axis, relative to ``origin``:
    ``coords.pixel_centres`` as float32."""
    return pixel_centres(start, stop, in_len, out_len, float(origin), device=device).float()


def model_context(model: LiifSiren, image_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """LR pixels of context a tile needs on each side: the model's receptive radius, plus the
    output stages' halo of output pixels in LR pixels (none without stages)."""
    lr_per_output = max(cell_of(image_hw, out_hw))  # the axis of the largest cell
    halo = output_halo(model, out_hw, image_hw)
    return model.receptive_radius + math.ceil(halo * lr_per_output)


def float_tile(pixels: torch.Tensor) -> torch.Tensor:
    """A (B, 3, h, w) tile of the LR image -> a float copy in [0, 1], channels-last: integer
    samples (uint8, uint16) divided by their maximum (exactly as ``imageio.as_float`` does),
    so the whole image can stay in its file's integers and only one tile is float at a time.

    Always a fresh channels-last tensor, whatever the input: a tile that is a view of the
    image's (h, w, 3) array keeps that array's batch stride, which torch does not count as
    channels-last, so when the view spanned the image's full width ``LiifSiren.encode`` used
    it as it was and the convolutions ran channels-first (1.5x slower, other rounding)."""
    tile = torch.empty_like(pixels, dtype=torch.float32, memory_format=torch.channels_last)
    tile.copy_(pixels)
    if not pixels.is_floating_point():
        tile.div_(255.0 if pixels.dtype == torch.uint8 else 65535.0)
    return tile


# On the CPU the encoder runs over a tile in slabs of rows of at most this many LR pixels (each
# with the receptive field's context above and below): its ~4 live 32-channel maps are then
# those of a slab, not of the whole tile (a 512 tile: ~150 MiB -> ~80 MiB), for ~5 % more
# encoder work. GPUs encode whole tiles (their tile size already counts the maps).
CPU_ENCODE_SLAB_PIXELS = 1 << 18


def encode_tile(model: LiifSiren, tile: torch.Tensor) -> torch.Tensor:
    """``model.encode(tile)`` as float32 (under autocast too: coordinates sample it), on the CPU
    computed in slabs of rows (``CPU_ENCODE_SLAB_PIXELS``). Each slab is read with
    ``receptive_radius`` rows of context, so its map is the whole tile's: value for value at
    the slab sizes this budget gives (tests; the bar runs' outputs are identical), while slabs
    of a few rows can round a last bit differently (oneDNN picks its kernels by shape)."""
    height, width = tile.shape[-2:]
    slabs = math.ceil(height * width / CPU_ENCODE_SLAB_PIXELS) if tile.device.type == "cpu" \
        else 1
    if slabs <= 1:
        return model.encode(tile).float()
    rows, context = math.ceil(height / slabs), model.receptive_radius
    pre = None
    for y0 in range(0, height, rows):
        y1 = min(y0 + rows, height)
        r0, r1 = max(y0 - context, 0), min(y1 + context, height)
        part = model.encode(tile[..., r0:r1, :]).float()
        if pre is None:
            pre = torch.empty(part.shape[0], part.shape[1], height, width, dtype=part.dtype,
                              device=part.device, memory_format=torch.channels_last)
        pre[..., y0:y1, :] = part[..., y0 - r0:y1 - r0, :]
        del part  # before the next slab's maps are made
    return pre


def release_freed_memory() -> None:
    """Give the heap memory freed by a finished tile back to the system (glibc's
    ``malloc_trim``; nothing elsewhere).

    glibc keeps freed heap blocks resident, and after the first tiles it serves the encoder's
    10-40 MiB maps from the heap (its mmap threshold grows to the largest block freed): without
    a trim, up to 64 MiB of the previous tile's maps stay resident under the next tile's peak.
    Once per tile, not per allocation: a fixed mmap threshold instead (tried) freed as much but
    page-faulted every map anew: 1.28x the wall time of a whole x4 upscale."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, looked up once; None off Linux or without glibc (musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


@torch.no_grad()
def stream_tiles(model: LiifSiren, lr: torch.Tensor, out_hw: tuple[int, int], sink: Sink, *,
                 tile: int, overlap: int, progress: Progress | None = None,
                 levels: int = 255) -> None:
    """Upscale (1, 3, h, w) (float in [0, 1], or uint8/uint16 samples: ``float_tile``) to
    out_hw, tile by tile in raster order, handing each output pixel to ``sink`` as soon as
    every tile that covers it is done. ``levels``: the integer range the sink stores (255 or
    65535; the dither's step).

    Memory does not grow with the image: besides one band of one tile, only the pixels still
    waiting for a neighbour are held, in float: the overlap strip below the current row of
    tiles and the one right of the current tile. One tile covering the image (tile >= its
    sides) is the untiled case: every band goes straight to the sink.
    """
    in_h, in_w = lr.shape[-2:]
    out_h, out_w = out_hw
    context = model_context(model, (in_h, in_w), out_hw)
    sizes = decode_sizes(lr.device, scale_of((in_h, in_w), out_hw)[0])  # bands are rows
    tile_rows = plan_axis(in_h, out_h, tile, overlap, context)
    tile_cols = plan_axis(in_w, out_w, tile, overlap, context)
    total = sum(t.out1 - t.out0 for t in tile_rows) * sum(t.out1 - t.out0 for t in tile_cols)
    done = 0

    def strip(rows: int, cols: int) -> torch.Tensor:  # waiting pixels: float32, as bands are
        return torch.empty(rows, cols, 3, dtype=torch.float32, device=lr.device)

    below = None  # the previous row of tiles' sums over rows [ty.out0, previous out1)
    for ty in tile_rows:
        wy = ty.weights.to(lr.device)
        below_next = strip(ty.out1 - ty.done1, out_w)
        beside = None  # the previous tile's sums over cols [tx.out0, previous out1)
        for tx in tile_cols:
            wx = tx.weights.to(lr.device)
            crop = float_tile(lr[..., ty.span.read0:ty.span.read1, tx.span.read0:tx.span.read1])
            pre = encode_tile(model, crop)
            beside_next = strip(ty.out1 - ty.out0, tx.out1 - tx.done1)
            for top, bottom, band in decode_bands(
                    model, pre, crop, out_hw, (in_h, in_w), (ty.out0, ty.out1),
                    (tx.out0, tx.out1), (tx.span.read0, ty.span.read0), sizes, levels):
                r0, r1 = top - ty.out0, bottom - ty.out0  # band rows within the tile
                band = band.float() * (wy[r0:r1, None, None] * wx[None, :, None])
                if beside is not None:
                    band[:, :beside.shape[1]] += beside[r0:r1]
                if below is not None and top < ty.out0 + below.shape[0]:
                    rows = slice(r0, min(r1, below.shape[0]))
                    band[:rows.stop - r0, :tx.done1 - tx.out0] += \
                        below[rows, tx.out0:tx.done1]
                beside_next[r0:r1] = band[:, tx.done1 - tx.out0:]
                split = min(max(ty.done1 - top, 0), bottom - top)  # rows [top, top+split) done
                if split:
                    sink(top, top + split, tx.out0, tx.done1, band[:split, :tx.done1 - tx.out0])
                if split < bottom - top:
                    below_next[top + split - ty.done1:bottom - ty.done1, tx.out0:tx.done1] = \
                        band[split:, :tx.done1 - tx.out0]
                if progress is not None:
                    done += (bottom - top) * (tx.out1 - tx.out0)
                    progress(done, total)
            beside = beside_next
            if lr.device.type == "cpu":
                del pre, crop
                release_freed_memory()
        below = below_next


class TensorSink:
    """Collects the output into one (H, W, 3) float32 tensor, clamped to [0, 1]."""

    def __init__(self, out_hw: tuple[int, int], device: torch.device):
        self.canvas = torch.empty(*out_hw, 3, dtype=torch.float32, device=device)

    def __call__(self, y0: int, y1: int, x0: int, x1: int, values: torch.Tensor) -> None:
        torch.clamp(values, 0, 1, out=self.canvas[y0:y1, x0:x1])


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def upscale_into(model: LiifSiren, lr: torch.Tensor, out_hw: tuple[int, int], sink: Sink, *,
                 tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                 progress: Progress | None = None, levels: int = 255) -> int:
    """``stream_tiles`` with out-of-memory retries: the tile is halved (down to MIN_TILE) and
    the image redone (the sink sees the same pixels again); a failure at the smallest tile is
    re-raised. ``tile=0``: the whole image as one tile first. -> the tile that worked."""
    in_h, in_w = lr.shape[-2:]
    tile = max(in_h, in_w) if tile == 0 else tile
    while True:
        try:
            stream_tiles(model, lr, out_hw, sink, tile=tile, overlap=overlap,
                         progress=progress, levels=levels)
            return tile
        except (RuntimeError, torch.OutOfMemoryError) as error:
            if not is_out_of_memory(error) or tile <= MIN_TILE:
                raise
            tile = max(MIN_TILE, min(tile, max(in_h, in_w)) // 2)
            _release_memory(lr.device)


def upscale_tensor(model: LiifSiren, lr: torch.Tensor, out_hw: tuple[int, int], *,
                   tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> torch.Tensor:
    """(1, 3, h, w) in [0, 1] -> (1, 3, H, W) in [0, 1], a view of a channels-last tensor.

    ``tile=0`` decodes the whole image at once; out-of-memory halves the tile (``upscale_into``).
    """
    sink = TensorSink(out_hw, lr.device)
    upscale_into(model, lr, out_hw, sink, tile=tile, overlap=overlap)
    return sink.canvas.permute(2, 0, 1).unsqueeze(0)


def _release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
