"""LIIF-style continuous upscaler: a CNN encoder and a patch-conditioned SIREN decoder.

An image is treated as a continuous function. The encoder turns the low-res (LR) image into a
feature map; the decoder maps any continuous output coordinate to RGB, conditioned on

- the 3x3 patch of LR features around the query,
- the query's offset from the nearest LR pixel centre (in LR pixels),
- the output cell size (the size of one output pixel, in LR pixels),

and predicts a residual over bicubic interpolation of the LR image.

Coordinates: a query point is ``(x, y)`` in LR *pixel index* units, pixel centres at integers
(the align_corners=False convention); the rule, cells and offsets are in ``models/coords.py``.

Speed: everything that depends only on the LR features is computed once at LR resolution. The
feature part of the decoder's first layer is a 3x3 convolution of the feature map (that is
exactly "a linear layer over the 3x3 patch"); each query bilinearly samples that pre-activation
map and adds its own offset and cell terms, so a query costs one gather and a few narrow layers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sirenup.models.coords import offset_from_centre, to_grid
from sirenup.models.grid_notch import GridNotch, grid_notch
from sirenup.models.siren import SineLayer, siren_init_

OFFSET_FEATURES = 4  # sin/cos of 2*pi*offset, for x and y
CELL_FEATURES = 2  # cell height and width, in LR pixels
OUT_ROWS_MULTIPLE = 16  # version 2's decode_grid pads the output layer's rows to this (_out_layer)
QUERIES_PER_BLOCK = 16384  # decode_grid's block: (16384, 64) fp32 activations, 4 MB, stay in cache


@dataclass
class LiifSirenConfig:
    channels: int = 32  # width of the encoder's feature map
    n_blocks: int = 4  # residual blocks in the encoder
    res_scale: float = 0.2  # residual branch scale: keeps encoder activations bounded
    hidden: int = 64  # width of the decoder's sine layers
    n_hidden: int = 1  # sine layers after the first one
    w0_first: float = 30.0  # SIREN frequency of the first (patch-conditioned) layer
    w0_hidden: float = 1.0  # frequency of the hidden sine layers (init scaled to match)
    max_cell_scale: float = 4.0  # cells of larger scales are clamped to this (trained range)
    # Decoder version. 1: each output pixel is a function of its own query alone (every file
    # made before version 2 is read as 1, and computes exactly what it always did). 2: the
    # decoder also emits ``refine_features`` channels, and an HR-space refiner (two 3x3 convs
    # on the output grid, ``refine_hidden`` wide) adds a residual: its 5x5 support straddles LR
    # pixels, so detail need not repeat with the LR grid.
    version: int = 1
    refine_features: int = 9  # version 2: decoder outputs besides RGB, the refiner's input
    refine_hidden: int = 16  # version 2: the refiner's hidden width
    refine_noise: int = 0  # version 2: 1 = the refiner also reads per-pixel noise (GAN grain)
    # LR pixels on each side over which inference estimates, and removes, what repeats with the
    # LR grid (``models.grid_notch``; 0 = off, what every file made before it reads as).
    notch_periods: int = 0
    # Content-adaptive frequencies (LTE-style): K frequency pairs and amplitudes per LR pixel
    # whose waves, centred on the 4 nearest LR pixels and area-blended, join the first layer's
    # input (``AdaptiveFrequencies``; 0 = off, what every file made before it reads as).
    adaptive_freqs: int = 0
    # 1: inference adds a dither of +-half an 8-bit level to its final output, a hash of the
    # pixel (``dither_output``), so that rounding to 8 bits does not put the contour steps of a
    # smooth gradient on the LR pixel edges (0 = off, what every file made before it reads as).
    dither: int = 0

    # What a weights file may ask for, inclusive (``models.architectures``). Generous (the
    # bundled models are 32 channels, 4 blocks, 64 hidden), but no header can ask for a model
    # that takes minutes and gigabytes to build.
    BOUNDS: ClassVar[dict[str, tuple[float, float]]] = {
        "channels": (1, 1024), "n_blocks": (0, 256), "res_scale": (0.0, 10.0),
        "hidden": (1, 1024), "n_hidden": (0, 32), "w0_first": (1e-3, 1000.0),
        "w0_hidden": (1e-3, 1000.0), "max_cell_scale": (1.0, 1000.0), "version": (1, 2),
        "refine_features": (0, 256), "refine_hidden": (1, 1024), "refine_noise": (0, 1),
        "notch_periods": (0, 64), "adaptive_freqs": (0, 64), "dither": (0, 1),
    }

    @classmethod
    def from_dict(cls, values: dict) -> LiifSirenConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


class ResBlock(nn.Module):
    def __init__(self, *, channels: int, res_scale: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w)
        # In-place ReLU and a fused scaled add: two fewer passes over the feature map.
        return torch.add(x, self.conv2(F.relu(self.conv1(x), inplace=True)), alpha=self.res_scale)


class Encoder(nn.Module):
    """EDSR-style feature extractor without normalisation layers or upsampling."""

    def __init__(self, *, channels: int, n_blocks: int, res_scale: float):
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(
            *[ResBlock(channels=channels, res_scale=res_scale) for _ in range(n_blocks)]
        )
        self.tail = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:  # (B, 3, h, w) in [0, 1]
        x = self.head(lr - 0.5)
        return x + self.tail(self.blocks(x))  # (B, C, h, w)


def _sin(x: torch.Tensor) -> torch.Tensor:
    """sin, in place when no gradient is needed (inference): one less pass over memory."""
    return torch.sin(x) if torch.is_grad_enabled() else x.sin_()


def offset_encoding(coords: torch.Tensor) -> torch.Tensor:
    """Periodic encoding of each query's offset from its nearest LR pixel centre.

    sin/cos of 2*pi*offset are continuous where the nearest pixel changes (offset +-0.5), so
    the decoded image has no seams at LR pixel borders.
    """
    phase = (2.0 * math.pi) * offset_from_centre(coords)  # (B, N, 2), offset in [-0.5, 0.5]
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)  # (B, N, 4)


def sample(image: torch.Tensor, coords: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample (B, C, h, w) at continuous coords (B, N, 2) -> (B, C, N), edges replicated.

    Training's path (random points); inference samples grids with ``SeparableSampler``.
    """
    grid = to_grid(coords, image.shape[-2], image.shape[-1])
    out = F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=False)
    return out.squeeze(2)  # (B, C, N)


def linear_taps(coords: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear taps along one axis of ``size`` pixels, as grid_sample's "border" padding
    takes them (the coordinate is clamped first): coords (N,) -> indices, weights (N, 2)."""
    c = coords.clamp(0, size - 1)
    lo = c.floor()
    t = c - lo
    lo = lo.long()
    return torch.stack([lo, (lo + 1).clamp(max=size - 1)], 1), torch.stack([1 - t, t], 1)


def cubic_taps(coords: torch.Tensor, size: int,
               a: float = -0.75) -> tuple[torch.Tensor, torch.Tensor]:
    """Bicubic taps (Keys' kernel with grid_sample's a = -0.75) along one axis, as grid_sample's
    "border" padding takes them (each tap index is clamped): coords (N,) -> (N, 4) each."""
    lo = coords.floor()
    t = (coords - lo)[:, None]
    lo = lo.long()[:, None]
    d = torch.cat([t + 1, t, 1 - t, 2 - t], 1)  # distance to each tap, (N, 4)
    near = ((a + 2) * d - (a + 3)) * d * d + 1  # |d| <= 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # 1 < |d| < 2
    weights = torch.where(d <= 1, near, far)
    index = (lo + torch.arange(-1, 3, device=coords.device)).clamp(0, size - 1)
    return index, weights


class SeparableSampler:
    """Samples of a (B, C, h, w) map on the grid ys x xs (LR coords), in two separable passes.

    Same values as ``sample`` (bilinear or bicubic, edges replicated) at every (x, y) of the
    grid, but much faster than grid_sample's per-point gathers. The x pass runs once, at LR
    height, over the LR rows the grid touches: ``rows`` (B, h', W, C), channels-last so each
    gather copies whole C-vectors (a free view when the map is in torch.channels_last
    format). The y pass, per block of columns, is one (H, h') @ (h', cols*C) product whose
    matrix ``blend`` has 2 (or 4) non-zeros per row: a GEMM that writes its output once,
    where gathering rows and blending them would take several passes.

    ``extra`` = (weights (H, k), values (B, k, W, C')) appends k rows to ``rows`` and k columns
    to ``blend``: the y pass then also adds ``weights @ values`` per output row, inside the
    same GEMM (no pass over its result, no copy of a per-row term into it). ``values`` may
    have more channels than the map (C' >= C); the map's rows are zero in the extra ones.
    """

    def __init__(self, image: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, taps=linear_taps,
                 extra: tuple[torch.Tensor, torch.Tensor] | None = None):
        x_index, x_weight = taps(xs, image.shape[-1])  # (W, T)
        y_index, y_weight = taps(ys, image.shape[-2])  # (H, T)
        x_weight, y_weight = x_weight.to(image.dtype), y_weight.to(image.dtype)
        top, bottom = int(y_index.min()), int(y_index.max()) + 1
        n_lr, n_extra = bottom - top, 0 if extra is None else extra[0].shape[1]
        band = image[..., top:bottom, :].permute(0, 2, 3, 1)  # (B, h', w, C)
        b, c = image.shape[0], image.shape[1]
        c_all = c if extra is None else extra[1].shape[-1]
        self.rows = image.new_empty(b, n_lr + n_extra, xs.numel(), c_all)  # (B, h'+k, W, C')
        self.lr_rows = self.rows[:, :n_lr, :, :c]  # the x pass of the map's rows
        self.rows[:, :n_lr, :, c:] = 0
        torch.mul(band.index_select(2, x_index[:, 0]), x_weight[:, :1], out=self.lr_rows)
        for t in range(1, x_index.shape[1]):
            self.lr_rows.addcmul_(band.index_select(2, x_index[:, t]), x_weight[:, t:t + 1])
        out_rows = torch.arange(ys.numel(), device=image.device)[:, None].expand_as(y_index)
        self.blend = image.new_zeros(ys.numel(), n_lr + n_extra)  # (H, h' + k)
        self.blend.index_put_((out_rows, y_index - top), y_weight, accumulate=True)
        if extra is not None:
            self.blend[:, n_lr:] = extra[0]
            self.rows[:, n_lr:] = extra[1]

    def columns(self, x0: int, x1: int) -> torch.Tensor:
        """Samples of grid columns [x0, x1) -> (B, H, x1 - x0, C)."""
        b, _, _, c = self.rows.shape
        block = self.rows[:, :, x0:x1].flatten(2)  # (B, h' + k, cols*C), a strided view
        return torch.matmul(self.blend, block).view(b, -1, x1 - x0, c)


def offset_encoding_1d(coords: torch.Tensor) -> torch.Tensor:
    """``offset_encoding`` of one axis: (N,) -> (2, N) = (sin, cos) of 2*pi*offset."""
    phase = (2.0 * math.pi) * offset_from_centre(coords)
    return torch.stack([torch.sin(phase), torch.cos(phase)])


class AdaptiveFrequencies(nn.Module):
    """Content-adaptive frequencies (after LTE, Lee & Jin 2022), an addition to the decoder's
    first layer.

    A 3x3 convolution of the LR features predicts, per LR pixel, K frequency pairs F_k =
    (fx, fy) and 2K amplitudes. A query at offset delta (LR pixels) from one of its 4 nearest
    LR centres sees that pixel's waves [a_cos * cos(pi F.delta), a_sin * sin(pi F.delta)];
    the four are blended with their area (bilinear) weights, so nothing jumps where the
    nearest centre changes, and a linear layer maps the 2K results into the first layer's
    input. Each pixel's waves run across its neighbours' cells at that pixel's own frequency
    and orientation, so fine detail need not repeat cell by cell. The amplitudes start at
    zero: added to a trained model, it computes exactly what it did until training moves them.
    """

    def __init__(self, *, feat_channels: int, pairs: int, hidden: int, fan_in: int, w0: float):
        super().__init__()
        self.pairs = pairs
        # output channels: fx (K), fy (K), cosine amplitudes (K), sine amplitudes (K)
        self.conv = nn.Conv2d(feat_channels, 4 * pairs, 3, padding=1)
        with torch.no_grad():
            self.conv.weight[2 * pairs:].zero_()
            self.conv.bias[2 * pairs:].zero_()
        self.proj = nn.Linear(2 * pairs, hidden, bias=False)
        siren_init_(self.proj.weight, fan_in=fan_in, w0=w0, is_first=True)

    def waves(self, maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """(B, 4K, h, w) map of ``conv``, (B, N, 2) coords -> blended waves (B, N, 2K)."""
        b, c, h, w = maps.shape
        k = self.pairs
        flat = maps.flatten(2)  # (B, 4K, h*w)
        x, y = coords[..., 0], coords[..., 1]  # (B, N)
        x0, y0 = x.floor(), y.floor()
        blended = None
        for cy in (y0, y0 + 1):
            iy = cy.clamp(0, h - 1)
            for cx in (x0, x0 + 1):
                ix = cx.clamp(0, w - 1)
                area = (1 - (x - cx).abs()) * (1 - (y - cy).abs())  # (B, N), sum 1 over four
                index = (iy * w + ix).long()[:, None].expand(-1, c, -1)
                v = flat.gather(2, index)  # (B, 4K, N), the centre's frequencies, amplitudes
                dx, dy = (x - ix)[:, None], (y - iy)[:, None]  # offset from that centre
                phase = math.pi * (v[:, :k] * dx + v[:, k:2 * k] * dy)  # (B, K, N)
                wave = torch.cat([v[:, 2 * k:3 * k] * torch.cos(phase),
                                  v[:, 3 * k:] * torch.sin(phase)], 1) * area[:, None]
                blended = wave if blended is None else blended + wave
        return blended.transpose(1, 2)  # (B, N, 2K)

    def forward(self, maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """First-layer input term, before w0: (B, N, D)."""
        return self.proj(self.waves(maps, coords))


class PatchConditionedSiren(nn.Module):
    """Decoder: (3x3 LR feature patch, offset, cell) -> RGB residual, through sine layers.

    Works channels-first on queries: activations are (B, D, N).
    """

    def __init__(self, *, feat_channels: int, hidden: int, n_hidden: int, w0_first: float,
                 w0_hidden: float, extra_out: int = 0, adaptive_freqs: int = 0):
        super().__init__()
        self.w0_first = w0_first
        self.hidden = hidden
        fan_in = 9 * feat_channels + OFFSET_FEATURES + CELL_FEATURES + 2 * adaptive_freqs
        # First layer, split by input: the feature part as a conv at LR resolution, the rest
        # per query. Together they are one SIREN first layer over the concatenated input.
        self.patch_proj = nn.Conv2d(feat_channels, hidden, 3, padding=1)
        self.offset_proj = nn.Linear(OFFSET_FEATURES, hidden, bias=False)
        self.cell_proj = nn.Linear(CELL_FEATURES, hidden)
        for weight in (self.patch_proj.weight, self.patch_proj.bias, self.offset_proj.weight,
                       self.cell_proj.weight, self.cell_proj.bias):
            siren_init_(weight, fan_in=fan_in, w0=w0_first, is_first=True)
        self.adaptive = AdaptiveFrequencies(
            feat_channels=feat_channels, pairs=adaptive_freqs, hidden=hidden, fan_in=fan_in,
            w0=w0_first) if adaptive_freqs else None
        self.hidden_layers = nn.ModuleList(
            [SineLayer(hidden, hidden, w0=w0_hidden) for _ in range(n_hidden)]
        )
        self.out = nn.Linear(hidden, 3 + extra_out)  # RGB residual, then the refiner's features
        # Start as plain bicubic: a near-zero residual, so early training refines instead of
        # first unlearning a random image. (The refiner's features keep Linear's own init: its
        # last layer starts at zero, so they change nothing until training uses them.)
        nn.init.uniform_(self.out.weight[:3], -1e-3, 1e-3)
        nn.init.zeros_(self.out.bias[:3])

    def precompute(self, feats: torch.Tensor) -> torch.Tensor:
        """Feature part of the first layer, times w0, once per LR pixel.

        (B, C, h, w) -> (B, D, h, w); with adaptive frequencies (B, D + 4K, h, w), their
        ``AdaptiveFrequencies.conv`` map after the D channels. Folding w0 in here saves a pass
        over every query; without gradients it is applied in place (no second map of a tile's
        size at the encoder's peak).
        """
        pre = self.patch_proj(feats)
        pre = pre.mul_(self.w0_first) if not torch.is_grad_enabled() else self.w0_first * pre
        if self.adaptive is None:
            return pre
        return torch.cat([pre, self.adaptive.conv(feats)], dim=1)

    def adaptive_term(self, pre: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """The adaptive frequencies' part of the first layer's input, w0 included: (B, N, D)."""
        return self.w0_first * self.adaptive(pre[:, self.hidden:], coords)

    def first_layer_input(self, pre: torch.Tensor, coords: torch.Tensor,
                          cell: torch.Tensor) -> torch.Tensor:
        """Pre-activation of the first sine layer, w0 included: (B, D, N)."""
        w0 = self.w0_first
        bias = w0 * self.cell_proj(cell).unsqueeze(-1)  # (B, D, 1), cell: (B, 2)
        offset_weight = w0 * self.offset_proj.weight  # (D, 4)
        z = sample(pre[:, :self.hidden], coords, "bilinear")  # (B, D, N)
        offsets = offset_encoding(coords).transpose(1, 2)  # (B, 4, N)
        if self.adaptive is not None:
            bias = bias + self.adaptive_term(pre, coords).transpose(1, 2)  # (B, D, N)
        if torch.is_grad_enabled():
            return torch.baddbmm(z + bias, offset_weight.expand(z.shape[0], -1, -1), offsets)
        return z.add_(bias).baddbmm_(offset_weight.expand(z.shape[0], -1, -1), offsets)

    def first_layer_grid(self, pre: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor,
                         cell: torch.Tensor) -> SeparableSampler:
        """``first_layer_input`` on the grid ys x xs, as an interpolator whose
        ``columns(x0, x1)`` is the pre-activation of those columns (B, H, cols, D + 1) (no
        grad). Channel D is pi/2 everywhere: after the sine it is 1, which carries the next
        layer's bias inside its product (``tail_after_ones``) instead of a pass of its own.

        The offset encoding is separable (sin/cos of the x offset and of the y offset), so its
        term is a per-column plus a per-row table instead of a product per query. The
        per-column one is added to the interpolator's LR-height rows, before the y pass (whose
        weights sum to one): cheaper than adding it to every output row. The per-row one
        (sin y, cos y and the constant cell term, three rows of weights) rides in the y pass's
        GEMM as three extra rows (``SeparableSampler``'s ``extra``).
        """
        w0, weight = self.w0_first, self.offset_proj.weight  # (D, 4): sin x, sin y, cos x, cos y
        row_weights = torch.cat([offset_encoding_1d(ys).T, ys.new_ones(ys.numel(), 1)], 1)
        width, b = xs.numel(), pre.shape[0]
        pre = pre[:, :self.hidden]  # the adaptive frequencies' maps are not interpolated
        row_values = pre.new_zeros(b, 3, self.hidden + 1)  # (B, 3, D + 1): sin y, cos y, cell
        row_values[:, 0, :-1] = w0 * weight[:, 1]
        row_values[:, 1, :-1] = w0 * weight[:, 3]
        row_values[:, 2, :-1] = w0 * self.cell_proj(cell)
        row_values[:, 2, -1] = math.pi / 2  # channel D: sin(pi/2) = 1, the next layer's bias
        extra = (row_weights.to(pre.dtype), row_values[:, :, None, :].expand(-1, -1, width, -1))
        interp = SeparableSampler(pre, xs, ys, extra=extra)
        interp.lr_rows += offset_encoding_1d(xs).T @ (w0 * weight[:, 0::2]).T  # (W, D)
        return interp

    def forward(self, pre: torch.Tensor, coords: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) map, (B, N, 2) coords, (B, 2) cells -> RGB residual (B, N, 3 + k)."""
        return self.tail(_sin(self.first_layer_input(pre, coords, cell)).transpose(1, 2))

    def tail_after_ones(self, h: torch.Tensor, pad_to: int = 1) -> torch.Tensor:
        """``tail`` of activations (..., D + 1) whose last channel is 1 (``decode_grid``'s):
        the first layer's bias is a column of its weight, so its product needs no bias copied
        in first. -> (..., P), the output layer's rows padded with zeros to a multiple of
        ``pad_to``, of which the first 3 + k count (``OUT_ROWS_MULTIPLE``)."""
        if not self.hidden_layers:
            weight, bias = self._out_layer(pad_to)
            return F.linear(h, torch.cat([weight, bias[:, None]], dim=1))
        first, *rest = self.hidden_layers
        weight = first.w0 * torch.cat([first.linear.weight, first.linear.bias[:, None]], dim=1)
        return self._sines_then_out(_sin(F.linear(h, weight)), rest, pad_to)

    def tail(self, h: torch.Tensor) -> torch.Tensor:
        """First-layer activations (..., D) -> RGB residual (..., 3).

        Channels-last: (N, D) @ (D, D) products run about twice as fast on CPU as the
        channels-first (D, D) @ (D, N) ones.
        """
        return self._sines_then_out(h, self.hidden_layers)

    def _sines_then_out(self, h: torch.Tensor, layers, pad_to: int = 1) -> torch.Tensor:
        """``layers`` (hidden sine layers) then the linear output layer: (..., D) -> (..., 3 + k),
        or (..., P) with its rows padded to a multiple of ``pad_to``."""
        for layer in layers:
            w0, linear = layer.w0, layer.linear
            h = _sin(F.linear(h, w0 * linear.weight, w0 * linear.bias))
        return F.linear(h, *self._out_layer(pad_to))

    def _out_layer(self, pad_to: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The output layer's (weight, bias), rows padded with zeros to a multiple of
        ``pad_to``: MKL's (N, 64) @ (64, 16) product runs in 0.6x the time of its (N, 64) @
        (64, 7) one. Another kernel, so the last bit can round otherwise: version-1 files keep
        1 (they compute exactly what they always did)."""
        pad = -self.out.weight.shape[0] % pad_to
        if not pad:
            return self.out.weight, self.out.bias
        return F.pad(self.out.weight, (0, 0, 0, pad)), F.pad(self.out.bias, (0, pad))


NOISE_SEED = 0x5EED
DITHER_SEED = 0xD17E  # the output dither's own hash: not the refiner's noise


def pixel_noise(rows: torch.Tensor, cols: torch.Tensor, seed: int = NOISE_SEED) -> torch.Tensor:
    """Deterministic noise of unit variance (uniform) at output pixels rows x cols: (H, W).

    A hash of the absolute pixel indices (integers, any sign) and ``seed``: the same pixel
    gets the same value whichever tile or band computes it. 32-bit integer mixing (a
    murmur3-style finaliser) carried in int64 so nothing overflows.
    """
    mask = 0xFFFFFFFF
    h = ((rows.long()[:, None] * 0x9E3779B1) ^ (cols.long()[None, :] * 0x85EBCA77)
         ^ (seed * 0xC2B2AE3D)) & mask
    for multiplier in (0x85EBCA6B, 0xC2B2AE35):
        h = ((h ^ (h >> 16)) * multiplier) & mask
    h = h ^ (h >> 16)
    return ((h & 0xFFFFFF).double() / (1 << 24) - 0.5).float() * 12 ** 0.5


def _with_channel(decoded: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) and (B, 1, H, W) -> (B, C + 1, H, W). Without gradients, channels-last (as
    ``decode_grid``'s bands are): the refiner's small convolutions run 2.5x faster on it
    than on the channels-first tensor ``torch.cat`` makes."""
    if torch.is_grad_enabled():
        return torch.cat([decoded, channel], dim=1)
    b, c, height, width = decoded.shape
    out = torch.empty((b, c + 1, height, width), dtype=decoded.dtype, device=decoded.device,
                      memory_format=torch.channels_last)
    out[:, :c] = decoded
    out[:, c:] = channel
    return out


class HrRefiner(nn.Module):
    """Version 2's HR-space refiner: (B, 3 + k, H + 4, W + 4) decoded output with a halo of
    ``HALO`` pixels on each side -> (B, 3, H, W) refined RGB.

    RGB + conv3x3(LeakyReLU(conv3x3([RGB, k features]))), unpadded convolutions (the halo is
    decoded, never padded: a pixel's result does not depend on where a tile or band ends). The
    last convolution starts at zero, so a refiner added to a trained model is the identity
    until training moves it.
    """

    HALO = 2  # output pixels of context on each side: two 3x3 convolutions

    def __init__(self, *, in_channels: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3)
        self.conv2 = nn.Conv2d(hidden, 3, 3)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, decoded: torch.Tensor) -> torch.Tensor:
        h = self.HALO
        rgb = decoded[:, :3, h:-h, h:-h]  # (B, 3, H, W)
        if torch.is_grad_enabled():
            return rgb + self.conv2(F.leaky_relu(self.conv1(decoded), 0.2))
        # inference: in place, two fewer passes over the band (a third of the refiner's time)
        return self.conv2(F.leaky_relu_(self.conv1(decoded), 0.2)).add_(rgb)


class LiifSiren(nn.Module):
    """Encoder + PatchConditionedSiren: ``decode(encode(lr), lr, coords, cell)`` -> RGB."""

    def __init__(self, *, config: LiifSirenConfig | None = None):
        super().__init__()
        self.config = config or LiifSirenConfig()
        c = self.config
        self.encoder = Encoder(channels=c.channels, n_blocks=c.n_blocks, res_scale=c.res_scale)
        self.decoder = PatchConditionedSiren(
            feat_channels=c.channels, hidden=c.hidden, n_hidden=c.n_hidden,
            w0_first=c.w0_first, w0_hidden=c.w0_hidden, extra_out=self.extra_out,
            adaptive_freqs=c.adaptive_freqs,
        )
        if c.version >= 2:
            self.refiner = HrRefiner(in_channels=3 + c.refine_features + c.refine_noise,
                                     hidden=c.refine_hidden)

    @property
    def extra_out(self) -> int:
        """Decoder outputs besides RGB: the refiner's features (version 2), else none."""
        return self.config.refine_features if self.config.version >= 2 else 0

    @property
    def halo(self) -> int:
        """Output pixels of decoded context the refiner needs on each side (0: no refiner)."""
        return HrRefiner.HALO if self.config.version >= 2 else 0

    def grid_notch(self, out_hw: tuple[int, int], in_hw: tuple[int, int]) -> GridNotch | None:
        """The anti-imaging notch inference applies after ``refine`` at this output size
        (None: off in the config, or a scale below x2)."""
        return grid_notch(out_hw, in_hw, self.config.notch_periods)

    @property
    def receptive_radius(self) -> int:
        """LR pixels of context a query needs on each side for an exact result.

        Encoder convs (head, 2 per block, tail), the decoder's 3x3 patch conv, and the 2-pixel
        reach of bicubic sampling (which also covers the bilinear gather).
        """
        return 1 + 2 * self.config.n_blocks + 1 + 1 + 2

    def encode(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) in [0, 1] -> first-layer pre-activation map (B, D, h, w).

        Computed in torch.channels_last memory format: oneDNN's CPU convolutions run about a
        third faster that way, and the decoder's gathers want whole feature vectors.
        """
        lr = lr.contiguous(memory_format=torch.channels_last)
        return self.decoder.precompute(self.encoder(lr))

    def cell_input(self, cell: torch.Tensor) -> torch.Tensor:
        """Clamp cells of scales beyond the trained range, scaled so inputs are ~O(1)."""
        min_cell = 1.0 / self.config.max_cell_scale
        return cell.clamp(min=min_cell) * self.config.max_cell_scale / 2.0

    def decode(self, pre: torch.Tensor, lr: torch.Tensor, coords: torch.Tensor,
               cell: torch.Tensor) -> torch.Tensor:
        """RGB at coords (B, N, 2) given cell (B, 2) in LR pixels -> (B, N, 3), not clamped;
        version 2: (B, N, 3 + k), the refiner's features after RGB (``refine``)."""
        base = sample(lr, coords, "bicubic").transpose(1, 2)  # (B, N, 3)
        out = self.decoder(pre, coords, self.cell_input(cell))
        if not self.extra_out:
            return base + out
        return torch.cat([out[..., :3] + base, out[..., 3:]], dim=-1)

    def refine(self, decoded: torch.Tensor, rows: torch.Tensor | None = None,
               cols: torch.Tensor | None = None) -> torch.Tensor:
        """Version 2: decoded output with its halo (B, 3 + k, H + 2h, W + 2h) -> RGB
        (B, 3, H, W). Version 1: the identity.

        With ``refine_noise``, the refiner also reads noise: ``pixel_noise`` of the absolute
        output pixel indices ``rows`` (H + 2h,) and ``cols`` (W + 2h,) (inference: the same
        image gives the same output, and tiles agree where they overlap), or fresh random
        noise of the same distribution when they are not given (training)."""
        if not self.halo:
            return decoded
        if self.config.refine_noise:
            b, _, height, width = decoded.shape
            if rows is None or cols is None:
                noise = (torch.rand(b, 1, height, width, device=decoded.device) - 0.5) * 12 ** 0.5
            else:
                noise = pixel_noise(rows, cols).to(decoded)[None, None].expand(b, 1, -1, -1)
            decoded = _with_channel(decoded, noise.to(decoded.dtype))
        return self.refiner(decoded)

    def dither_output(self, values: torch.Tensor, top: int, left: int,
                      levels: int = 255) -> torch.Tensor:
        """Final output (B, C, rows, cols) whose first pixel is (``top``, ``left``) of the
        whole output -> the same plus a dither, uniform in +-0.5 / ``levels`` (half a level of
        the output's integers: 255 for 8 bits, 65535 for 16), one value per pixel (all
        channels), a hash of its absolute position: the same image always gets the same
        dither, and tiles agree where they overlap. Rounded to 8 bits, a gradient's contour
        steps then fall where its values say, not all on the LR pixel edges where the LR's own
        rounding put its steps; a 16-bit output gets no more than its own half level."""
        rows = torch.arange(top, top + values.shape[2], device=values.device)
        cols = torch.arange(left, left + values.shape[3], device=values.device)
        dither = pixel_noise(rows, cols, DITHER_SEED).to(values.dtype) / (levels * 12 ** 0.5)
        return values + dither

    def forward_window(self, lr: torch.Tensor, coords: torch.Tensor, cell: torch.Tensor,
                       side: int) -> torch.Tensor:
        """RGB of a dense side x side window (B, 3, side, side): ``coords`` (B, N, 2) are the
        window's queries with the halo, (side + 2h)^2 of them, rows major."""
        full = side + 2 * self.halo
        decoded = self.decode(self.encode(lr), lr, coords, cell)  # (B, full*full, 3 + k)
        decoded = decoded.transpose(1, 2).reshape(decoded.shape[0], -1, full, full)
        return self.refine(decoded)

    @torch.no_grad()
    def decode_grid(self, pre: torch.Tensor, lr: torch.Tensor, xs: torch.Tensor,
                    ys: torch.Tensor, cell: torch.Tensor,
                    block_queries: int | None = QUERIES_PER_BLOCK) -> torch.Tensor:
        """Inference on the output grid ys x xs (LR coords (W,), (H,)) -> (B, 3 + k, H, W)
        (version 2: the refiner's features after RGB, before ``refine``).

        Same result as ``decode`` at those points, computed the faster separable way. Meant
        for a band of a few output rows (the x interpolation is shared by the whole band);
        the band is decoded in blocks of columns of about ``block_queries`` queries, whose
        activations stay in cache (None: the whole band at once, as on a GPU). The result is a
        view of a channels-last (B, H, W, 3) tensor.
        """
        first = self.decoder.first_layer_grid(pre, xs, ys, self.cell_input(cell))
        base = SeparableSampler(lr, xs, ys, cubic_taps)  # the bicubic upsampling
        height, width = ys.numel(), xs.numel()
        channels = 3 + self.extra_out
        pad_to = OUT_ROWS_MULTIPLE if self.config.version >= 2 else 1
        out = lr.new_empty(pre.shape[0], height, width, channels)
        step = width if block_queries is None else max(1, block_queries // height)
        for x0 in range(0, width, step):
            x1 = min(x0 + step, width)
            z = first.columns(x0, x1)  # (B, H, cols, D + 1)
            if self.decoder.adaptive is not None:
                self._add_adaptive(z, pre, xs[x0:x1], ys)
            residual = self.decoder.tail_after_ones(_sin(z), pad_to)[..., :channels]
            if self.extra_out:  # (B, H, cols, 3 + k)
                out[:, :, x0:x1, 3:] = residual[..., 3:]
                residual = residual[..., :3]
            torch.add(residual, base.columns(x0, x1), out=out[:, :, x0:x1, :3])
        return out.permute(0, 3, 1, 2)

    def _add_adaptive(self, z: torch.Tensor, pre: torch.Tensor, xs: torch.Tensor,
                      ys: torch.Tensor) -> None:
        """Add the adaptive frequencies' term of the grid ys x xs to the first-layer
        pre-activation z (B, H, cols, D + 1), in place: per query, as ``decode`` computes it."""
        b, height, cols, _ = z.shape
        coords = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), dim=-1)
        coords = coords.reshape(1, -1, 2).expand(b, -1, -1)  # (B, H*cols, 2), rows major
        term = self.decoder.adaptive_term(pre, coords)  # (B, H*cols, D)
        z[..., :self.decoder.hidden] += term.view(b, height, cols, -1)

    def forward(self, lr: torch.Tensor, coords: torch.Tensor, cell: torch.Tensor,
                window: int = 0) -> torch.Tensor:
        """Training's call: ``decode`` at random queries (window 0), or ``forward_window``."""
        if window:
            return self.forward_window(lr, coords, cell, window)
        return self.decode(self.encode(lr), lr, coords, cell)

