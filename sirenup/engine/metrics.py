"""Quality metrics and the field's scoring protocol (see ../shared/data/SOURCES.md).

- HR is cropped so both sides divide by the scale's numerator (for a rational scale p/q, by p).
- LR = Pillow ``resize(..., BICUBIC)`` of HR to (W/s, H/s).
- SR is produced at exactly the HR size.
- PSNR on the Y channel (BT.601 studio range, 0..255), after shaving ceil(scale) pixels from
  every border.
"""

from __future__ import annotations

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
    from skimage.metrics import structural_similarity

    border = math.ceil(scale)
    sr_y = shave(rgb_to_y(np.asarray(sr)), border)
    hr_y = shave(rgb_to_y(np.asarray(hr)), border)
    return float(structural_similarity(sr_y, hr_y, data_range=255.0))
