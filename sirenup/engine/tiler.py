"""Tiled inference: bounded memory, no seams.

The LR image is cut into tiles. Each tile is read with ``receptive_radius`` pixels of extra
context, so the features under its output region are exactly those of the whole image; each
tile's output region extends ``overlap`` LR pixels past its core, and neighbouring regions are
blended with raised-cosine weights that sum to one (as demucs' ``apply_model`` does for audio).
On an out-of-memory error the tile is halved and the image retried (chaiNNer's auto-split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sirenup.defaults import DEFAULT_OVERLAP, DEFAULT_TILE
from sirenup.models.patch_siren import LiifSiren, cell_size, output_coords

MIN_TILE = 32
# Output rows per decode_grid call: enough that each band's x interpolation serves many rows,
# few enough that its row-blending product stays cheap (about 10 LR rows per band).
MIN_BAND_ROWS, MAX_BAND_ROWS = 8, 32


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
    ratio = out_len / lr_len
    return math.ceil(lr_lo * ratio - 0.5), math.ceil(lr_hi * ratio - 0.5)


def blend_weights(span: Span, length: int, overlap: int, lr_len: int, out_len: int,
                  out0: int, out1: int) -> torch.Tensor:
    """1-D weights over output pixels [out0, out1): 1 in the core, raised-cosine ramps across
    each overlap shared with a neighbour, so that neighbouring weights sum to one."""
    centres = (torch.arange(out0, out1, dtype=torch.float64) + 0.5) * (lr_len / out_len)
    w = torch.ones_like(centres)
    if overlap > 0:
        if span.start > 0:  # ramp up across [start - overlap, start + overlap)
            t = ((centres - (span.start - overlap)) / (2 * overlap)).clamp(0, 1)
            w = w * torch.sin(t * math.pi / 2) ** 2
        if span.stop < length:  # ramp down across [stop - overlap, stop + overlap)
            t = ((centres - (span.stop - overlap)) / (2 * overlap)).clamp(0, 1)
            w = w * torch.cos(t * math.pi / 2) ** 2
    return w.float()


@torch.no_grad()
def decode_region(model: LiifSiren, pre: torch.Tensor, lr: torch.Tensor, out_hw: tuple[int, int],
                  image_hw: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int],
                  origin: tuple[int, int]) -> torch.Tensor:
    """Decode output rows x cols of the whole image from a tile's encoding -> (h, w, 3).

    ``lr``/``pre`` cover the tile read from ``origin`` (x, y) of the image of ``image_hw``.
    """
    out_h, out_w = out_hw
    in_h, in_w = image_hw
    (y0, y1), (x0, x1) = rows, cols
    cell = cell_size(out_h, out_w, in_h, in_w, device=lr.device)
    band_rows = min(MAX_BAND_ROWS, max(MIN_BAND_ROWS, round(8 * out_h / in_h)))
    xs = output_axis(out_w, in_w, x0, x1, origin[0], device=lr.device)
    out = lr.new_empty(y1 - y0, x1 - x0, 3)
    for top in range(y0, y1, band_rows):
        bottom = min(top + band_rows, y1)
        ys = output_axis(out_h, in_h, top, bottom, origin[1], device=lr.device)
        out[top - y0:bottom - y0] = model.decode_grid(pre, lr, xs, ys, cell)[0].permute(1, 2, 0)
    return out


def output_axis(out_len: int, in_len: int, start: int, stop: int, origin: int,
                device=None) -> torch.Tensor:
    """LR coordinates of output pixels [start, stop) along one axis, relative to ``origin``:
    x = (X + 0.5) * in / out - 0.5 - origin (the convention of ``output_coords``)."""
    grid = output_coords(out_len, 1, in_len, 1, y0=start, y1=stop, origin=(0.0, float(origin)),
                         device=device)
    return grid[0, :, 1]


@torch.no_grad()
def upscale_whole(model: LiifSiren, lr: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Untiled: (1, 3, h, w) -> (1, 3, H, W), unclamped."""
    in_h, in_w = lr.shape[-2:]
    pre = model.encode(lr).float()  # fp32 under autocast too: coordinates sample it
    out = decode_region(model, pre, lr, out_hw, (in_h, in_w), (0, out_hw[0]), (0, out_hw[1]),
                        (0, 0))
    return out.permute(2, 0, 1).unsqueeze(0)  # a view: channels-last underneath


@torch.no_grad()
def upscale_tiled(model: LiifSiren, lr: torch.Tensor, out_hw: tuple[int, int], *, tile: int,
                  overlap: int) -> torch.Tensor:
    """Tiled: (1, 3, h, w) -> (1, 3, H, W), unclamped. Peak memory follows the tile size."""
    in_h, in_w = lr.shape[-2:]
    out_h, out_w = out_hw
    context = model.receptive_radius
    canvas = torch.zeros(out_h, out_w, 3, dtype=torch.float32, device=lr.device)
    weight = torch.zeros(out_h, out_w, 1, dtype=torch.float32, device=lr.device)
    for sy in split_axis(in_h, tile, overlap, context):
        y0, y1 = output_range(sy.ext0, sy.ext1, in_h, out_h)
        if y1 <= y0:
            continue
        wy = blend_weights(sy, in_h, overlap, in_h, out_h, y0, y1).to(lr.device)
        for sx in split_axis(in_w, tile, overlap, context):
            x0, x1 = output_range(sx.ext0, sx.ext1, in_w, out_w)
            if x1 <= x0:
                continue
            wx = blend_weights(sx, in_w, overlap, in_w, out_w, x0, x1).to(lr.device)
            crop = lr[..., sy.read0:sy.read1, sx.read0:sx.read1]
            pre = model.encode(crop).float()  # fp32 under autocast too
            rgb = decode_region(model, pre, crop, out_hw, (in_h, in_w), (y0, y1), (x0, x1),
                                (sx.read0, sy.read0))
            w = (wy[:, None] * wx[None, :]).unsqueeze(-1)  # (h, w, 1)
            canvas[y0:y1, x0:x1] += rgb.float() * w
            weight[y0:y1, x0:x1] += w
    canvas /= weight.clamp_min(1e-12)
    return canvas.permute(2, 0, 1).unsqueeze(0)  # a view: channels-last underneath


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def upscale_tensor(model: LiifSiren, lr: torch.Tensor, out_hw: tuple[int, int], *,
                   tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> torch.Tensor:
    """(1, 3, h, w) in [0, 1] -> (1, 3, H, W) in [0, 1].

    ``tile=0`` decodes the whole image at once. On out-of-memory, the tile is halved (down to
    MIN_TILE) and the image retried; a failure at the smallest tile is re-raised.
    """
    in_h, in_w = lr.shape[-2:]
    if tile == 0 or tile >= max(in_h, in_w):
        try:
            return upscale_whole(model, lr, out_hw).clamp_(0, 1)
        except (RuntimeError, torch.OutOfMemoryError) as error:
            if not is_out_of_memory(error):
                raise
            tile = max(MIN_TILE, max(in_h, in_w) // 2)
            _release_memory(lr.device)
    while True:
        try:
            return upscale_tiled(model, lr, out_hw, tile=tile, overlap=overlap).clamp_(0, 1)
        except (RuntimeError, torch.OutOfMemoryError) as error:
            if not is_out_of_memory(error) or tile <= MIN_TILE:
                raise
            tile = max(MIN_TILE, tile // 2)
            _release_memory(lr.device)


def _release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
