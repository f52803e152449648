"""The anti-imaging notch: takes out of an upscaled image what repeats with the LR pixel grid.

An upscaler whose output depends on where a pixel lies inside its LR pixel paints a pattern
of period ``s`` (the scale) output pixels: stripes, dots or cross-hatch, a peak at every
LR-grid harmonic (ky/s, kx/s) of the spectrum (``evaluation.metrics.grid_lock``). The LR image
holds no information at those frequencies (they alias onto its own low frequencies), which is
why classic upsampling removes them with an anti-imaging filter. A learned decoder is not
bound by that, and losses only push its pattern down on average (issue 17's ablation in
docs/models.md): this filter removes it, whatever the content.

It estimates the local pattern and subtracts it. For every output pixel, the mean of the
pixels at the same position in their LR pixels over the ``periods`` LR pixels on each side
(a comb: 2 * periods + 1 samples ``s`` apart along each axis), less the local mean of all
positions, is the pattern there. As a filter, y' = y - comb(y - box(y)) (separable; ``box``
averages one LR pixel), whose response is exactly 0 at every harmonic but DC and 1 away from
them: a notch (2 * periods + 1) LR pixels narrow around each harmonic, ~1/(2 * periods + 1)^2
of the spectrum above the LR Nyquist frequency, where a photo has little energy left.

Non-integer scales (x3.7) get combs whose samples are linearly interpolated; an axis of scale
below 2 has its first harmonic inside the LR image's own band (aliased), so the notch is off
below x2. Unpadded: an output of H x W needs its input decoded ``halo`` pixels further on
every side, so tiles and bands give exactly the untiled result (``inference.tiler``). It
filters the displayable values (clamped to [0, 1]), what the output's 8 or 16 bits keep.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sirenup.models.coords import scale_of

DEFAULT_PERIODS = 8  # LR pixels each side: narrow (keeps detail), long (averages content out)
MIN_SCALE = 2.0  # below, the first harmonic falls inside the LR image's band


def comb_kernel(spacing: float, periods: int) -> torch.Tensor:
    """(2r + 1,) taps: the mean of the 2 * periods + 1 samples ``spacing`` pixels apart around
    the centre, each linearly interpolated between its two nearest pixels."""
    radius = math.ceil(periods * spacing)
    taps = torch.zeros(2 * radius + 1, dtype=torch.float64)
    for j in range(-periods, periods + 1):
        position = j * spacing
        low = math.floor(position)
        t = position - low
        taps[low + radius] += (1 - t) / (2 * periods + 1)
        if t > 0:
            taps[low + 1 + radius] += t / (2 * periods + 1)
    return taps


def box_kernel(spacing: float) -> torch.Tensor:
    """(2r + 1,) taps: the mean over one LR pixel (``spacing`` output pixels wide, centred),
    each tap weighted by how much of its pixel lies inside. Zero response at every k/spacing
    but k = 0."""
    radius = math.ceil(spacing / 2 - 0.5)  # pixels whose extent reaches into the box
    n = torch.arange(-radius, radius + 1, dtype=torch.float64)
    half = spacing / 2
    overlap = (torch.clamp(n + 0.5, max=half) - torch.clamp(n - 0.5, min=-half)).clamp(min=0)
    return overlap / spacing


class GridNotch:
    """The notch for one output size: (B, C, H + 2h, W + 2h) -> (B, C, H, W), h = ``halo``.

    y' = y - comb_x(comb_y(y - box_y(box_x(y)))): the filters commute, so it runs in two
    passes that a stream of bands can split, each row filtered once: ``rows`` (horizontal,
    on a band's new rows alone) then ``__call__`` (vertical, on rows with ``halo`` more above
    and below; the last horizontal comb runs on the finished rows only). ``apply``: both.

    A sharp edge has real energy at the harmonics too: beside one, in a flat area, the notch
    leaves a faint lattice of its own (black-on-white text at x4: up to 5 levels, under one
    on average; docs/models.md). Weighting the estimate against edges (tried) removed it, but
    also most of what the notch removes from textures, where decoders paint their patterns.
    """

    def __init__(self, *, scale_y: float, scale_x: float, periods: int):
        self.scale = (scale_y, scale_x)
        self.periods = periods
        self.box = (box_kernel(scale_y), box_kernel(scale_x))
        self.comb = (comb_kernel(scale_y, periods), comb_kernel(scale_x, periods))
        self.box_radius = tuple((len(taps) - 1) // 2 for taps in self.box)
        self.comb_radius = tuple((len(taps) - 1) // 2 for taps in self.comb)
        self.halo = max(rb + rc for rb, rc in zip(self.box_radius, self.comb_radius,
                                                  strict=True))

    def rows(self, decoded: torch.Tensor) -> torch.Tensor:
        """The horizontal pass: (B, C, r, W + 2h) -> (B, 2C, r, W + 2 rc) = [y, box_x(y)],
        centred (rc: the horizontal comb's radius, applied last).

        On the values an image can show: clamped to [0, 1] first. A decoder may paint a
        strong pattern beyond white or black that the output's clipping hides; estimated
        from unclipped values, it would be subtracted from the visible pixels beside it."""
        decoded = decoded.clamp(0, 1)
        width = decoded.shape[-1] - 2 * self.halo + 2 * self.comb_radius[1]
        boxed = _filter_axis(decoded, self.box[1], -1)
        return torch.cat([_crop_axis(decoded, width, -1), _crop_axis(boxed, width, -1)], dim=1)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """The vertical pass and the last horizontal one: (B, 2C, H + 2h, W + 2 rc) from
        ``rows`` -> (B, C, H, W)."""
        height = rows.shape[-2] - 2 * self.halo
        width = rows.shape[-1] - 2 * self.comb_radius[1]
        y, boxed_x = rows.chunk(2, dim=1)
        boxed = _filter_axis(boxed_x, self.box[0], -2)  # (B, C, H + 2h - 2 rb_y, ...)
        detail = _crop_axis(y, boxed.shape[-2], -2) - boxed
        pattern = self._comb(_crop_axis(self._comb(detail, axis=0), height, -2), axis=1)
        return _crop_axis(_crop_axis(y, height, -2), width, -1) - pattern

    def apply(self, decoded: torch.Tensor) -> torch.Tensor:
        """Both passes: (B, C, H + 2h, W + 2h) -> (B, C, H, W)."""
        return self(self.rows(decoded))

    def _comb(self, image: torch.Tensor, axis: int) -> torch.Tensor:
        """The comb along ``axis`` (0: rows, 1: columns), unpadded: at an integer scale a
        moving average over whole LR pixels (a few passes, whatever the scale and periods),
        else a sum of the interpolated taps."""
        spacing = self.scale[axis]
        if spacing != int(spacing):
            return _filter_axis(image, self.comb[axis], axis - 2)
        if axis == 0:
            return _comb_rows(image, int(spacing), self.periods)
        return _comb_columns(image, int(spacing), self.periods)


def _comb_rows(image: torch.Tensor, step: int, periods: int) -> torch.Tensor:
    """Mean of the 2 * periods + 1 rows ``step`` apart: (B, C, H, W) -> (B, C, H - 2 p step,
    W). The rows, padded to whole steps, are viewed as blocks of ``step`` rows: the comb is a
    moving sum over blocks, kept up to date block by block (add one, drop one): 2 passes over
    the image, where a sum of the 2p + 1 shifted blocks takes 2p + 1."""
    b, c, height, width = image.shape
    blocks, window = -(-height // step), 2 * periods + 1
    padded = F.pad(image, (0, 0, 0, blocks * step - height)).view(b, c, blocks, step * width)
    out = padded.new_empty(b, c, blocks - window + 1, step * width)
    running = padded[:, :, :window].sum(dim=2)
    out[:, :, 0] = running
    for i in range(1, blocks - window + 1):
        out[:, :, i] = running.add_(padded[:, :, i + window - 1]).sub_(padded[:, :, i - 1])
    return out.div_(window).view(b, c, -1, width)[:, :, :height - 2 * periods * step]


def _comb_columns(image: torch.Tensor, step: int, periods: int) -> torch.Tensor:
    """Mean of the 2 * periods + 1 columns ``step`` apart: (B, C, H, W) -> (B, C, H,
    W - 2 p step), as differences of running sums along each phase's columns (gathered
    contiguous first, so the scan runs along memory)."""
    b, c, height, width = image.shape
    blocks, window = -(-width // step), 2 * periods + 1
    padded = F.pad(image, (step, blocks * step - width))  # a zero block: the sum before 0
    phases = padded.view(b, c, height, blocks + 1, step).transpose(-1, -2).contiguous()
    running = phases.cumsum(-1)  # (B, C, H, step, blocks + 1)
    sums = running[..., window:] - running[..., :blocks + 1 - window]
    out = sums.transpose(-1, -2).reshape(b, c, height, -1)
    return out[..., :width - 2 * periods * step].div_(window)


def _filter_axis(image: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
    """Unpadded filtering along ``dim`` as a sum of shifted slices, one per non-zero tap
    (a box has at most scale + 2 taps, a fractional comb 2 per sample)."""
    out_len = image.shape[dim] - taps.numel() + 1
    out = None
    for i in torch.nonzero(taps).flatten().tolist():
        part = image.narrow(dim, i, out_len)
        out = part * float(taps[i]) if out is None else out.add_(part, alpha=float(taps[i]))
    return out


def _crop_axis(image: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """The centre ``size`` of ``dim``: kernels are symmetric, so is what an axis with a
    shorter one keeps beyond the other's."""
    return image.narrow(dim, (image.shape[dim] - size) // 2, size)


def grid_notch(out_hw: tuple[int, int], in_hw: tuple[int, int],
               periods: int) -> GridNotch | None:
    """The notch for upscaling (in_h, in_w) to (out_h, out_w), or None: ``periods`` 0 (off),
    or an axis scaled by less than ``MIN_SCALE``."""
    scale_y, scale_x = scale_of(in_hw, out_hw)
    if periods <= 0 or min(scale_y, scale_x) < MIN_SCALE:
        return None
    return GridNotch(scale_y=scale_y, scale_x=scale_x, periods=periods)
