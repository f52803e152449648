"""Where output pixels fall on the LR grid: the one coordinate rule of model, tiler and training.

Coordinates are LR *pixel index* units, pixel centres at integers (align_corners=False):
output pixel X of an output ``out`` pixels long maps to ``x = (X + 0.5) * in / out - 0.5``
(``centre_coords``). The tiler also works in LR *edge* coordinates, where LR pixel i spans
[i, i + 1): the same point is ``(X + 0.5) * in / out`` (``edge_coords``), and the output pixels
whose centres fall in an edge range start at ``first_output_at``. A cell is one output pixel's
size in LR pixels (``in / out`` per axis); a query's offset from its nearest LR pixel centre is
in [-0.5, 0.5] (``offset_from_centre``, what the decoder encodes), its phase inside that pixel
the same shifted to [0, 1] (``phase_in_pixel``, what the GAN's grid losses bin).

Every function keeps the order of operations its callers always had (float64 for the grid of
inference, cast to float32 at the end; training's float32 for its integer HR indices), so
outputs are unchanged bit for bit.

Sizes: the models and the tiler (``models/``, ``inference/tiler.py``, ``training/``) take
(H, W) as ``*_hw`` tuples or ``out_h, out_w, in_h, in_w``, and coordinates as (x, y) pairs in
(B, N, 2), cells as (height, width). Image files and the API edge above the tiler
(``Upscaler``'s ``size``, ``sizing.target_size``, PIL) use (W, H); ``Upscaler.upscale_into``
is where (W, H) becomes (H, W).

The scale of a target size is used in four senses, on purpose (``scale_of`` gives the
per-axis scales, ``cell_of`` their LR-per-output counterparts, each computed as a division
once, never as a reciprocal of the other):
- ``grid_notch``: per axis (the notch of each axis at its own period);
- ``Upscaler.tile_for``: the larger of the two scales (output pixels per LR pixel on the axis
  that makes a tile's output biggest: the tile memory estimate errs on the safe side);
- ``tiler.model_context``: the larger cell (the axis where one output pixel spans the most LR
  pixels: an output halo converted to LR context must cover that axis);
- ``tiler.stream_tiles``' ``decode_sizes``: the height scale alone (output rows per LR row:
  bands are rows).
``evaluation/compare.py`` labels and shaves at the mean of the two scales of its (W, H) sizes.
"""

from __future__ import annotations

import math

import torch


def scale_of(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[float, float]:
    """Output pixels per LR pixel, per axis: (out_h / in_h, out_w / in_w)."""
    return out_hw[0] / in_hw[0], out_hw[1] / in_hw[1]


def cell_of(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[float, float]:
    """One output pixel's size in LR pixels, per axis: (in_h / out_h, in_w / out_w)."""
    return in_hw[0] / out_hw[0], in_hw[1] / out_hw[1]


def cell_size(out_h: int, out_w: int, in_h: int, in_w: int, *, device=None) -> torch.Tensor:
    """``cell_of`` as the model takes it: (1, 2) = (height, width) float32."""
    return torch.tensor([cell_of((in_h, in_w), (out_h, out_w))], device=device,
                        dtype=torch.float32)


def edge_coords(index: torch.Tensor, in_len: int, out_len: int) -> torch.Tensor:
    """LR edge coordinates (pixel i spans [i, i + 1)) of output pixel centres ``index``:
    (X + 0.5) * in / out, in ``index``'s floating dtype (float32 for integer indices)."""
    return (index + 0.5) * (in_len / out_len)


def centre_coords(index: torch.Tensor, in_len: int, out_len: int) -> torch.Tensor:
    """LR pixel index coordinates (centres at integers) of output pixel centres ``index``:
    x = (X + 0.5) * in / out - 0.5, the align_corners=False rule."""
    return edge_coords(index, in_len, out_len) - 0.5


def pixel_centres(start: int, stop: int, in_len: int, out_len: int, origin: float = 0.0,
                  device=None) -> torch.Tensor:
    """``centre_coords`` of output pixels [start, stop) along one axis, less ``origin`` (to be
    relative to a tile), float64 (the caller casts)."""
    index = torch.arange(start, stop, device=device, dtype=torch.float64)
    return centre_coords(index, in_len, out_len) - origin


def first_output_at(lr_edge: float, in_len: int, out_len: int) -> int:
    """The first output pixel whose centre lies at or after LR edge coordinate ``lr_edge``
    (``edge_coords`` inverted): ceil(lr_edge * out / in - 0.5)."""
    return math.ceil(lr_edge * (out_len / in_len) - 0.5)


def output_coords(out_h: int, out_w: int, in_h: int, in_w: int, *, y0: int = 0,
                  y1: int | None = None, x0: int = 0, x1: int | None = None,
                  origin: tuple[float, float] = (0.0, 0.0), device=None) -> torch.Tensor:
    """LR coordinates of the centres of output pixels rows [y0, y1) x cols [x0, x1).

    The output is (out_h, out_w) pixels covering an (in_h, in_w) LR image; ``origin`` (x, y)
    is subtracted so coordinates can be relative to a tile. Returns (1, N, 2) float32 as
    (x, y), rows major.
    """
    y1 = out_h if y1 is None else y1
    x1 = out_w if x1 is None else x1
    ys = pixel_centres(y0, y1, in_h, out_h, origin[1], device=device)
    xs = pixel_centres(x0, x1, in_w, out_w, origin[0], device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(1, -1, 2).float()


def offset_from_centre(coords: torch.Tensor) -> torch.Tensor:
    """Each coordinate's offset from its nearest LR pixel centre, in [-0.5, 0.5]."""
    return coords - torch.round(coords)


def phase_in_pixel(coords: torch.Tensor) -> torch.Tensor:
    """Where each coordinate lies inside its nearest LR pixel, in [0, 1] (0: its left or top
    edge): ``offset_from_centre`` + 0.5."""
    return offset_from_centre(coords) + 0.5


def to_grid(coords: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """LR pixel coordinates (B, N, 2) as (x, y) -> grid_sample's normalised grid (B, 1, N, 2)
    (align_corners=False: -1 and 1 are the image's outer edges)."""
    size = coords.new_tensor([width, height])
    return ((coords + 0.5) / size * 2.0 - 1.0).unsqueeze(1)
