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
        # what _box_sums leaves the box multiplied by: 1 at fractional scales (interpolated
        # taps), the step at odd ones, twice the step at even ones (pair sums)
        self.box_divisor = tuple(1 if v != int(v) else int(v) * (2 - int(v) % 2)
                                 for v in self.scale)
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
        # clamped into a plain (channels-first) copy: decoded bands come channels-last, and
        # the passes below run along rows (2x faster on a 32-row x4 band than in place)
        decoded = torch.clamp(decoded, 0, 1, out=torch.empty(
            decoded.shape, dtype=decoded.dtype, device=decoded.device))
        b, c, r, _ = decoded.shape
        width = decoded.shape[-1] - 2 * self.halo + 2 * self.comb_radius[1]
        out = decoded.new_empty(b, 2 * c, r, width)  # written in place: no concatenation
        out[:, :c] = _crop_axis(decoded, width, -1)
        reach = width + self.box[1].numel() - 1
        self._box_sums(_crop_axis(decoded, reach, -1), axis=1, out=out[:, c:])
        return out

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """The vertical pass and the last horizontal one: (B, 2C, H + 2h, W + 2 rc) from
        ``rows`` -> (B, C, H, W)."""
        height = rows.shape[-2] - 2 * self.halo
        width = rows.shape[-1] - 2 * self.comb_radius[1]
        y, boxed_x = rows.chunk(2, dim=1)
        boxed = self._box_sums(boxed_x, axis=0)  # (B, C, H + 2h - 2 rb_y, ...)
        detail = torch.sub(_crop_axis(y, boxed.shape[-2], -2), boxed, out=boxed,
                           alpha=1 / (self.box_divisor[0] * self.box_divisor[1]))
        combed, divisor_y = self._comb(detail, axis=0)
        pattern, divisor_x = self._comb(_crop_axis(combed, height, -2), axis=1)
        # the combs' means divided once, in the subtraction
        return torch.sub(_crop_axis(_crop_axis(y, height, -2), width, -1), pattern,
                         alpha=1 / (divisor_y * divisor_x))

    def apply(self, decoded: torch.Tensor) -> torch.Tensor:
        """Both passes: (B, C, H + 2h, W + 2h) -> (B, C, H, W)."""
        return self(self.rows(decoded))

    def _box_sums(self, image: torch.Tensor, axis: int,
                  out: torch.Tensor | None = None) -> torch.Tensor:
        """The box along ``axis`` (0: rows, 1: columns), unpadded, times ``box_divisor``: at
        an integer scale sums of whole pixels (``_window_sums``: 3 passes at x4 where its 5
        taps take 5), else the interpolated taps."""
        spacing, dim = self.scale[axis], axis - 2
        if spacing != int(spacing):
            return _filter_axis(image, self.box[axis], dim, out=out)
        step = int(spacing)
        if step % 2:  # odd: the step pixels around the centre
            return _window_sums(image, step, dim, out=out)
        # even: step - 1 whole pixels and a half at each end, doubled: step pair sums
        pairs = image.narrow(dim, 0, image.shape[dim] - 1) + image.narrow(dim, 1,
                                                                          image.shape[dim] - 1)
        return _window_sums(pairs, step, dim, out=out)

    def _comb(self, image: torch.Tensor, axis: int) -> tuple[torch.Tensor, int]:
        """The comb along ``axis`` (0: rows, 1: columns), unpadded, as (sums, divisor): at an
        integer scale the sums of 2 * periods + 1 samples by running sums over whole LR pixels
        (a few passes, whatever the scale and periods), else the mean of the interpolated
        taps (divisor 1)."""
        spacing = self.scale[axis]
        if spacing != int(spacing):
            return _filter_axis(image, self.comb[axis], axis - 2), 1
        comb_sums = _comb_rows if axis == 0 else _comb_columns
        return comb_sums(image, int(spacing), self.periods), 2 * self.periods + 1


def _comb_rows(image: torch.Tensor, step: int, periods: int) -> torch.Tensor:
    """Sums of the 2 * periods + 1 rows ``step`` apart: (B, C, H, W) -> (B, C, H - 2 p step,
    W). Whole blocks of ``step`` rows are a moving sum over blocks, kept up to date block by
    block (the block before plus one, minus one: 2 passes over the image, where a sum of the
    2p + 1 shifted blocks takes 2p + 1); the rows of a last partial block, directly."""
    b, c, height, width = image.shape
    window, out_h = 2 * periods + 1, height - 2 * periods * step
    blocks = height // step
    image = image.contiguous() if image.stride(-1) != 1 or image.stride(-2) != width else image
    out = image.new_empty(b, c, out_h, width)
    whole = max(blocks - window + 1, 0)  # output blocks the moving sum gives
    if whole:
        src = image[:, :, :blocks * step].view(b, c, blocks, step * width)
        dst = out[:, :, :whole * step].view(b, c, whole, step * width)
        dst[:, :, 0] = src[:, :, :window].sum(dim=2)
        for i in range(1, whole):
            torch.add(dst[:, :, i - 1], src[:, :, i + window - 1], out=dst[:, :, i])
            dst[:, :, i].sub_(src[:, :, i - 1])
    for row in range(whole * step, out_h):
        out[:, :, row] = image[:, :, row:row + 2 * periods * step + 1:step].sum(dim=2)
    return out


def _comb_columns(image: torch.Tensor, step: int, periods: int) -> torch.Tensor:
    """Sums of the 2 * periods + 1 columns ``step`` apart: (B, C, H, W) -> (B, C, H,
    W - 2 p step), as differences of running sums along each phase's columns (gathered
    contiguous first, so the scan runs along memory)."""
    b, c, height, width = image.shape
    blocks, window = -(-width // step), 2 * periods + 1
    padded = F.pad(image, (step, blocks * step - width))  # a zero block: the sum before 0
    phases = padded.view(b, c, height, blocks + 1, step).transpose(-1, -2).contiguous()
    running = phases.cumsum(-1)  # (B, C, H, step, blocks + 1)
    sums = running[..., window:] - running[..., :blocks + 1 - window]
    out = sums.transpose(-1, -2).reshape(b, c, height, -1)
    return out[..., :width - 2 * periods * step]


def _filter_axis(image: torch.Tensor, taps: torch.Tensor, dim: int,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Unpadded filtering along ``dim`` as a sum of shifted slices, one per non-zero tap
    (a box has at most scale + 2 taps, a fractional comb 2 per sample), into ``out`` if
    given."""
    out_len = image.shape[dim] - taps.numel() + 1
    for n, i in enumerate(torch.nonzero(taps).flatten().tolist()):
        part = image.narrow(dim, i, out_len)
        if n == 0:
            out = torch.mul(part, float(taps[i]), out=out) if out is not None \
                else part * float(taps[i])
        else:
            out.add_(part, alpha=float(taps[i]))
    return out


def _window_sums(image: torch.Tensor, n: int, dim: int,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Sums of ``n`` consecutive samples along ``dim`` (length L - n + 1), by doubling: the
    sums of 2, 4, ... up to ``top`` samples (the largest power of two in n), plus those of
    n's other binary digits (n = 4: 2 passes, n = 3: 2, n = 6: 3), into ``out`` if given."""
    length, top = image.shape[dim] - n + 1, 1 << (n.bit_length() - 1)
    if n == 1:
        return image.clone() if out is None else out.copy_(image)
    terms, sums, width, offset = [], image, 1, 0
    while width < top:
        if n & width:
            terms.append(sums.narrow(dim, offset, length))
            offset += width
        size = sums.shape[dim] - width
        last = n == top and 2 * width == top  # the result itself: written to out
        sums = torch.add(sums.narrow(dim, 0, size), sums.narrow(dim, width, size),
                         out=out if last else None)
        width *= 2
    if n == top:
        return sums
    total = torch.add(terms[0], sums.narrow(dim, offset, length), out=out)
    for term in terms[1:]:
        total.add_(term)
    return total


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
