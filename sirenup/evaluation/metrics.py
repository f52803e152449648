"""Quality metrics and the field's scoring protocol (see ../shared/data/SOURCES.md).

- HR is cropped so both sides divide by the scale's numerator (for a rational scale p/q, by p).
- LR = Pillow ``resize(..., BICUBIC)`` of HR to (W/s, H/s).
- SR is produced at exactly the HR size.
- PSNR on the Y channel (BT.601 studio range, 0..255), after shaving ceil(scale) pixels from
  every border.
- Texture ratio: the Y channel's spectral energy above the LR Nyquist frequency, SR over HR
  (``texture_ratio``), whole and per octave band (``texture_bands``).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
from PIL import Image


def scale_fraction(scale: float) -> Fraction:
    """2.5 -> 5/2, 3.7 -> 37/10, 4 -> 4/1."""
    return Fraction(scale).limit_denominator(100)


def protocol_pair(hr: Image.Image, scale: float) -> tuple[Image.Image, Image.Image]:
    """(HR cropped to a multiple of the scale's numerator, its Pillow-bicubic LR)."""
    hr = hr.convert("RGB")
    frac = scale_fraction(scale)
    w, h = hr.size
    w, h = w - w % frac.numerator, h - h % frac.numerator
    hr = hr.crop((0, 0, w, h))
    lr_size = (w * frac.denominator // frac.numerator, h * frac.denominator // frac.numerator)
    return hr, hr.resize(lr_size, Image.BICUBIC)


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) values 0..255 -> Y (H, W), the papers' BT.601 studio-range luma."""
    rgb = rgb.astype(np.float64)
    return 16.0 + (65.738 * rgb[..., 0] + 129.057 * rgb[..., 1] + 25.064 * rgb[..., 2]) / 256.0


def psnr(a: np.ndarray, b: np.ndarray, *, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def shave(array: np.ndarray, border: int) -> np.ndarray:
    return array[border:-border, border:-border] if border > 0 else array


def psnr_y(sr: Image.Image | np.ndarray, hr: Image.Image | np.ndarray, scale: float) -> float:
    """Y-channel PSNR with a border of ceil(scale) pixels shaved: the protocol's number."""
    sr_y, hr_y = rgb_to_y(np.asarray(sr)), rgb_to_y(np.asarray(hr))
    border = math.ceil(scale)
    return psnr(shave(sr_y, border), shave(hr_y, border))


def psnr_rgb(sr: Image.Image | np.ndarray, hr: Image.Image | np.ndarray, scale: float) -> float:
    border = math.ceil(scale)
    return psnr(shave(np.asarray(sr), border), shave(np.asarray(hr), border))


def ssim(sr: Image.Image | np.ndarray, hr: Image.Image | np.ndarray, scale: float) -> float:
    """SSIM (scikit-image) on the Y channel with the same border shave."""
    # lazy: scikit-image's SSIM costs ~0.6 s to import, and compare's option checks
    # import this module (tests/test_startup.py: usage errors come at once)
    from skimage.metrics import structural_similarity

    border = math.ceil(scale)
    sr_y = shave(rgb_to_y(np.asarray(sr)), border)
    hr_y = shave(rgb_to_y(np.asarray(hr)), border)
    return float(structural_similarity(sr_y, hr_y, data_range=255.0))


# -- texture ---------------------------------------------------------------------------------
# How much fine detail an upscaler puts back, measured against the real photo. Everything an
# upscaler adds above the low-res image's Nyquist frequency (0.5 / S cycles per output pixel)
# is invented: bicubic adds almost none (ratio ~0.05 at x4), a faithful L1 model some, a GAN
# should add about as much as the photo has (ratio ~1). Too much is as wrong as too little: the
# per-octave ratios show where an excess sits (sharpening halos low, grain and noise high).

CORNER_FREQUENCY = 0.5 * math.sqrt(2.0)  # highest radial frequency of a 2-D grid (cycles/px)


def texture_bands(scale: float) -> list[tuple[float, float]]:
    """Radial frequency bands (lo, hi) in cycles per output pixel above the LR Nyquist.

    Octaves from f0 = 0.5 / scale: [f0, 2 f0), [2 f0, 4 f0), ...; the last band runs up to the
    corner frequency 0.5·√2 (the diagonal Nyquist) and absorbs any remainder narrower than
    half an octave. x2: [.25, .5), [.5, .707]; x3: [.167, .333), [.333, .707];
    x4: [.125, .25), [.25, .5), [.5, .707]; x6: [.083, .167), [.167, .333), [.333, .707].
    """
    if not scale > 1:
        raise ValueError(f"scale {scale}: texture bands need a scale above 1")
    edges = [0.5 / scale]
    while edges[-1] * 2 < CORNER_FREQUENCY:
        edges.append(edges[-1] * 2)
    if CORNER_FREQUENCY / edges[-1] < math.sqrt(2.0) and len(edges) > 1:
        edges.pop()  # a sliver under half an octave joins the band below
    edges.append(CORNER_FREQUENCY)
    return list(itertools.pairwise(edges))


def _luma(image: Image.Image | np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    return rgb_to_y(array) if array.ndim == 3 else array.astype(np.float64)


def texture_energies(image: Image.Image | np.ndarray, scale: float) -> np.ndarray:
    """[energy above 0.5/scale, energy per ``texture_bands(scale)``...] of the Y channel.

    Y (BT.601, or the array itself if 2-D) with ceil(scale) pixels shaved, mean removed,
    multiplied by a 2-D Hann window (so the image's borders do not add a spectrum of their
    own), then |FFT|² summed over radial frequency sqrt(fx² + fy²) in each band; a band holds
    lo <= f < hi (the top one also f = 0.5·√2).
    """
    y = shave(_luma(image), math.ceil(scale))
    y = y - y.mean()
    window = np.outer(np.hanning(y.shape[0]), np.hanning(y.shape[1]))
    power = np.abs(np.fft.rfft2(y * window)) ** 2
    # rfft2 keeps the non-negative x frequencies; the others mirror them: count those twice
    # (except column 0 and, for an even width, the Nyquist column, which have no mirror).
    weight = np.full(power.shape[1], 2.0)
    weight[0] = 1.0
    if y.shape[1] % 2 == 0:
        weight[-1] = 1.0
    power = power * weight
    fy = np.fft.fftfreq(y.shape[0])[:, None]
    fx = np.fft.rfftfreq(y.shape[1])[None, :]
    radial = np.sqrt(fx * fx + fy * fy)
    bands = texture_bands(scale)
    energies = [float(power[radial >= bands[0][0]].sum())]
    for i, (lo, hi) in enumerate(bands):
        top = radial <= hi if i == len(bands) - 1 else radial < hi
        energies.append(float(power[(radial >= lo) & top].sum()))
    return np.array(energies)


def energy_ratios(sr_energies: np.ndarray, hr_energies: np.ndarray) -> np.ndarray:
    """SR / HR per entry; nan where the HR has no energy (nothing to compare with)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hr_energies > 0, sr_energies / np.where(hr_energies > 0, hr_energies, 1),
                        np.nan)


def texture_ratios(sr: Image.Image | np.ndarray, hr: Image.Image | np.ndarray,
                   scale: float) -> np.ndarray:
    """[texture ratio, ratio per ``texture_bands(scale)``...]: SR's energy over HR's."""
    return energy_ratios(texture_energies(sr, scale), texture_energies(hr, scale))


def texture_ratio(sr: Image.Image | np.ndarray, hr: Image.Image | np.ndarray,
                  scale: float) -> float:
    """Energy above the LR Nyquist (0.5/scale cycles/px) of SR's Y over HR's: 1.0 = as much
    fine detail as the real image, below = smoother, above = sharpened or noisy."""
    return float(texture_ratios(sr, hr, scale)[0])


# -- grid-lock -------------------------------------------------------------------------------
# A pattern that repeats with the low-res pixel grid (stripes, dots, cross-hatch every S output
# pixels) puts its energy exactly on the LR grid's harmonics: frequencies k/S cycles per pixel.
# A photo has no reason to peak there (~0.6-0.9), bicubic has none of its own (~1.0); an
# upscaler that paints per-LR-pixel patterns scores far above.

GRID_LOCK_NEIGHBOURS = ((-2, -2), (-2, 0), (-2, 2), (0, -2), (0, 2), (2, -2), (2, 0), (2, 2))


def grid_lock_ratios(image: Image.Image | np.ndarray, scale: int) -> np.ndarray:
    """Peak ratio of each LR-grid harmonic of the luminance, (s² - 1,) for integer scale s.

    Y (BT.601; a 2-D array is taken as it is) cropped to a multiple of s, mean removed, times a
    2-D Hann window; P = |FFT|². For every harmonic (ky·H/s, kx·W/s), 0 <= ky, kx < s, not both
    0: P there over the mean of P at its 8 neighbours 2 bins away (wrapping)."""
    if scale != int(scale) or scale < 2:
        raise ValueError(f"scale {scale}: grid-lock needs an integer scale of 2 or more")
    s = int(scale)
    y = _luma(image)
    h, w = y.shape[0] - y.shape[0] % s, y.shape[1] - y.shape[1] % s
    if h < 4 * s or w < 4 * s:
        raise ValueError(f"{w}x{h}: too small for a grid-lock score at x{s}")
    y = y[:h, :w] - y[:h, :w].mean()
    power = np.abs(np.fft.fft2(y * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    ratios = []
    for ky, kx in itertools.product(range(s), range(s)):
        if ky == kx == 0:
            continue
        fy, fx = ky * h // s, kx * w // s
        around = np.mean([power[(fy + dy) % h, (fx + dx) % w]
                          for dy, dx in GRID_LOCK_NEIGHBOURS])
        ratios.append(power[fy, fx] / around if around > 0 else np.inf)
    return np.array(ratios)


def grid_lock(image: Image.Image | np.ndarray, scale: int) -> float:
    """Median peak ratio over the LR-grid harmonics (``grid_lock_ratios``): ~1 for an image
    with nothing locked to the LR grid, far above 1 for a pattern that repeats with it."""
    return float(np.median(grid_lock_ratios(image, scale)))
