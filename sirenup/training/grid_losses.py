"""Losses against patterns that repeat with the low-res pixel grid (``metrics.grid_lock``).

A decoder whose error depends on where an output pixel lies inside its LR pixel paints the same
faint pattern in every LR pixel: half an 8-bit level, too faint for L1 to notice, but coherent
over the whole image, so it shows as stripes, dots or cross-hatch and as peaks at the LR grid's
harmonics. Both losses work on any scale (the harmonics of scale s sit at k/s cycles per output
pixel, wherever that falls between the window's frequency bins).
"""

from __future__ import annotations

import math

import torch

from sirenup.training.gan import GRID_PHASE_BINS, grid_phase_bins


def phase_bias_loss(pred: torch.Tensor, target: torch.Tensor, coords: torch.Tensor,
                    bins: int = GRID_PHASE_BINS, per_window: bool = False) -> torch.Tensor:
    """Mean |error| of the batch's mean signed error per LR-grid phase: (B, N, 3) values at
    (B, N, 2) LR coordinates. ``per_window``: of each crop's own mean error per phase, less
    the crop's mean error (a pattern whose sign follows the content, which pools to nothing
    over a batch, still counts; a crop's overall offset does not).

    An upscaler whose error depends on where a pixel lies in its LR pixel paints the same
    faint pattern in every LR pixel of every image: too faint for L1 to notice (half an 8-bit
    level), but coherent over the whole image, so it stands out as stripes, dots or
    cross-hatch and as peaks at the LR grid's harmonics (``metrics.grid_lock``). Pooled over
    the batch, real detail averages out of each phase's mean error and the pattern does not.
    """
    phase = grid_phase_bins(coords, bins)  # (B, N)
    error = pred - target  # (B, N, 3)
    groups = bins * bins
    if per_window:
        error = error - error.mean(dim=1, keepdim=True)
        phase = phase + groups * torch.arange(phase.shape[0], device=phase.device)[:, None]
        groups *= phase.shape[0]
    phase, error = phase.flatten(), error.reshape(-1, error.shape[-1])  # (B*N,), (B*N, 3)
    sums = error.new_zeros(groups, error.shape[1]).index_add_(0, phase, error)
    counts = torch.bincount(phase, minlength=groups).to(error.dtype)[:, None]
    used = counts[:, 0] > 0
    return (sums[used] / counts[used]).abs().mean()


def harmonic_loss(pred: torch.Tensor, target: torch.Tensor, scale: float,
                  width: float = 1.5) -> torch.Tensor:
    """RMS of the error's spectrum near the LR grid's harmonics: (B, 3, w, w) windows at
    ``scale`` output pixels per LR pixel.

    The error (channel mean, Hann-windowed, orthonormal FFT) is weighted by Gaussians of
    ``width`` bins around every harmonic (ky/s, kx/s) (frequencies wrapped into the window's
    range), so the error of a pattern locked to the LR grid counts, also where the image's
    content modulates it (a phase-dependent gain on edges, which pools to zero in
    ``phase_bias_loss``): a fidelity loss, re-weighted towards what ``grid_lock`` sees.
    """
    size = pred.shape[-1]
    hann = torch.hann_window(size, periodic=False, device=pred.device, dtype=pred.dtype)
    error = (pred - target).mean(dim=1) * (hann[:, None] * hann[None, :])  # (B, w, w)
    power = torch.fft.fft2(error, norm="ortho").abs().square()  # (B, w, w)
    mask = harmonic_mask(size, scale, width, pred.device)
    if not mask.sum() > 0:  # scale 1: the LR grid is the output grid, no harmonic to see
        return (pred - target).sum() * 0  # zero, still a part of the graph
    return torch.sqrt((power * mask).sum() / (pred.shape[0] * mask.sum()) + 1e-12)


def harmonic_mask(size: int, scale: float, width: float, device=None) -> torch.Tensor:
    """(size, size) weights over fft2 bins: Gaussians of ``width`` bins around the harmonics
    k/scale (0 <= ky, kx < ceil(scale), not both 0) of the LR grid, wrapped."""
    freq = torch.fft.fftfreq(size, device=device, dtype=torch.float64)  # cycles per pixel
    count = math.ceil(scale - 1e-9)
    mask = torch.zeros(size, size, device=device, dtype=torch.float64)
    sigma = width / size
    for ky in range(count):
        for kx in range(count):
            if ky == kx == 0:
                continue
            dy = _wrapped(freq - ky / scale)[:, None]
            dx = _wrapped(freq - kx / scale)[None, :]
            mask += torch.exp(-(dy * dy + dx * dx) / (2 * sigma * sigma))
    return mask.float()


def _wrapped(delta: torch.Tensor) -> torch.Tensor:
    """Frequency differences wrapped into [-0.5, 0.5) cycles per pixel."""
    return torch.remainder(delta + 0.5, 1.0) - 0.5
