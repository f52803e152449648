"""The scoring protocol (PSNR-Y, border shave, HR crop and LR size, luma) and the texture
ratio on images with known spectra."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from PIL import Image

from sirenup.evaluation.metrics import (
    CORNER_FREQUENCY,
    grid_lock,
    grid_lock_ratios,
    protocol_pair,
    psnr,
    psnr_rgb,
    psnr_y,
    rgb_to_y,
    scale_fraction,
    shave,
    texture_bands,
    texture_energies,
    texture_ratio,
    texture_ratios,
)


def gray(value: float, size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.float64)


def test_identical_images_have_infinite_psnr():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    assert psnr_y(image, image.copy(), 2) == math.inf
    assert psnr(image, image) == math.inf


def test_known_mse_gives_known_psnr():
    a = np.zeros((10, 10))
    b = np.full((10, 10), 5.0)  # MSE 25
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 25))
    assert psnr(a, np.full((10, 10), 255.0)) == pytest.approx(0.0)
    assert psnr(np.zeros(4), np.ones(4), peak=1.0) == pytest.approx(0.0)
    # on Y: a uniform RGB offset d moves Y by d * (65.738 + 129.057 + 25.064) / 256
    d = 10.0
    y_offset = d * (65.738 + 129.057 + 25.064) / 256
    expected = 10 * math.log10(255**2 / y_offset**2)
    assert psnr_y(gray(100), gray(100 + d), 2) == pytest.approx(expected)
    assert psnr_rgb(gray(100), gray(100 + d), 2) == pytest.approx(10 * math.log10(255**2 / d**2))


def test_pil_images_are_accepted():
    a = Image.new("RGB", (16, 16), (10, 20, 30))
    b = Image.new("RGB", (16, 16), (12, 22, 32))
    assert psnr_y(a, b, 2) == pytest.approx(psnr_y(np.asarray(a), np.asarray(b), 2))
    assert math.isfinite(psnr_y(a, b, 2))


@pytest.mark.parametrize("scale", [2, 3, 4, 2.5, 3.7])
def test_shave_removes_ceil_scale_pixels(scale):
    border = math.ceil(scale)
    hr = gray(128, 40)
    sr = hr.copy()
    # differences only inside the shaved border: invisible
    sr[:border] = 0
    sr[-border:] = 255
    sr[:, :border] = 0
    sr[:, -border:] = 255
    assert psnr_y(sr, hr, scale) == math.inf
    # one pixel just inside the border counts, on each side
    for y, x in [(border, 20), (20, border), (39 - border, 20), (20, 39 - border)]:
        probe = hr.copy()
        probe[y, x] = 0
        assert math.isfinite(psnr_y(probe, hr, scale)), (y, x)
    assert shave(np.zeros((10, 12)), 3).shape == (4, 6)
    assert shave(np.zeros((10, 12)), 0).shape == (10, 12)


def test_scale_fraction():
    assert (scale_fraction(2.5).numerator, scale_fraction(2.5).denominator) == (5, 2)
    assert (scale_fraction(3.7).numerator, scale_fraction(3.7).denominator) == (37, 10)
    assert (scale_fraction(4).numerator, scale_fraction(4).denominator) == (4, 1)


@pytest.mark.parametrize("scale,multiple", [(2, 2), (3, 3), (4, 4), (2.5, 5), (3.7, 37)])
@pytest.mark.parametrize("size", [(101, 77), (256, 255), (512, 512)])
def test_protocol_pair_sizes(scale, multiple, size):
    hr = Image.new("RGB", size, (50, 100, 150))
    hr_c, lr = protocol_pair(hr, scale)
    w, h = hr_c.size
    assert w % multiple == 0 and h % multiple == 0
    assert size[0] - multiple < w <= size[0] and size[1] - multiple < h <= size[1]
    # the LR size is exact: LR * scale == HR, no rounding
    assert lr.size[0] * scale == pytest.approx(w) and lr.size[1] * scale == pytest.approx(h)
    assert round(lr.size[0] * scale) == w and round(lr.size[1] * scale) == h
    assert lr.mode == "RGB" and hr_c.mode == "RGB"


def test_protocol_pair_crops_from_the_top_left_and_downscales_with_bicubic():
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (23, 27, 3), dtype=np.uint8)
    hr = Image.fromarray(array)
    hr_c, lr = protocol_pair(hr, 2)
    assert np.array_equal(np.asarray(hr_c), array[:22, :26])
    expected = Image.fromarray(array[:22, :26]).resize((13, 11), Image.BICUBIC)
    assert np.array_equal(np.asarray(lr), np.asarray(expected))


def test_rgb_to_y_studio_range():
    assert rgb_to_y(np.array([[[255, 255, 255]]], dtype=np.uint8))[0, 0] == pytest.approx(
        235, abs=0.01)
    assert rgb_to_y(np.array([[[0, 0, 0]]], dtype=np.uint8))[0, 0] == pytest.approx(16)
    # uint8 input must not overflow
    y = rgb_to_y(np.full((2, 2, 3), 200, dtype=np.uint8))
    assert y.dtype == np.float64 and np.all((y > 16) & (y < 235))
    assert rgb_to_y(np.array([[[255, 0, 0]]]))[0, 0] == pytest.approx(16 + 65.738 * 255 / 256)


# -- texture ratio ---------------------------------------------------------------------------

def wave(freq_x: float, freq_y: float = 0.0, size: int = 128, amplitude: float = 40.0):
    """A grey sinusoid (2-D array, 0..255 around 128) of the given cycles per pixel."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return 128.0 + amplitude * np.sin(2 * np.pi * (freq_x * xx + freq_y * yy))


@pytest.mark.parametrize("scale,expected", [
    (2, [(0.25, 0.5), (0.5, CORNER_FREQUENCY)]),
    (3, [(1 / 6, 1 / 3), (1 / 3, CORNER_FREQUENCY)]),
    (4, [(0.125, 0.25), (0.25, 0.5), (0.5, CORNER_FREQUENCY)]),
    (6, [(1 / 12, 1 / 6), (1 / 6, 1 / 3), (1 / 3, CORNER_FREQUENCY)]),
    (2.5, [(0.2, 0.4), (0.4, CORNER_FREQUENCY)]),
    (1.1, [(0.5 / 1.1, CORNER_FREQUENCY)]),
])
def test_texture_bands_are_octaves_from_the_lr_nyquist(scale, expected):
    bands = texture_bands(scale)
    assert bands == [pytest.approx(b) for b in expected]
    assert bands[0][0] == pytest.approx(0.5 / scale) and bands[-1][1] == CORNER_FREQUENCY
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bands))  # contiguous
    with pytest.raises(ValueError):
        texture_bands(1.0)


def test_an_image_against_itself_is_one_everywhere():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    ratios = texture_ratios(image, image.copy(), 4)
    assert ratios == pytest.approx(np.ones(len(texture_bands(4)) + 1))
    assert texture_ratio(Image.fromarray(image), image, 3) == pytest.approx(1.0)


def test_energy_matches_a_full_fft():
    """The half-spectrum bookkeeping (rfft2, mirrored columns) equals the full 2-D FFT."""
    rng = np.random.default_rng(1)
    for shape in [(64, 64), (61, 75), (50, 47)]:
        y = rng.normal(100, 30, shape)
        core = y[3:-3, 3:-3] - y[3:-3, 3:-3].mean()
        windowed = core * np.outer(np.hanning(core.shape[0]), np.hanning(core.shape[1]))
        power = np.abs(np.fft.fft2(windowed)) ** 2
        fy, fx = np.meshgrid(np.fft.fftfreq(core.shape[0]), np.fft.fftfreq(core.shape[1]),
                             indexing="ij")
        radial = np.hypot(fx, fy)
        energies = texture_energies(y, 2.5)  # border ceil(2.5) = 3
        assert energies[0] == pytest.approx(power[radial >= 0.2].sum())
        assert energies[1] == pytest.approx(power[(radial >= 0.2) & (radial < 0.4)].sum())
        assert energies[1:].sum() == pytest.approx(energies[0])  # bands tile the range


def test_a_sinusoid_counts_above_the_cutoff_only_when_it_is_above():
    scale = 4  # cut-off 0.125 cycles/px
    low, high = wave(0.05), wave(0.3, amplitude=20)
    hr = low + high - 128
    assert texture_ratio(low, hr, scale) < 1e-3  # below the cut-off: no texture at all
    assert texture_ratio(low + 2 * (high - 128), hr, scale) == pytest.approx(4.0, rel=0.02)
    assert texture_ratio(low + 0.5 * (high - 128), hr, scale) == pytest.approx(0.25, rel=0.02)
    # 0.3 cycles/px lies in the band [0.25, 0.5): that band holds (nearly) all the energy
    energies = texture_energies(hr, scale)
    assert energies[2] > 0.99 * energies[0]
    diagonal = texture_energies(wave(0.4, 0.4), scale)  # radial 0.566: the corner band
    assert diagonal[3] > 0.99 * diagonal[0]


def test_white_noise_splits_its_energy_by_area():
    """White noise has a flat spectrum: each band's share is its area in the unit square."""
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 20, (256, 256))
    scale = 4
    energies = texture_energies(noise, scale)
    core = noise[4:-4, 4:-4] - noise[4:-4, 4:-4].mean()
    window = np.outer(np.hanning(core.shape[0]), np.hanning(core.shape[1]))
    total = core.size * float(((core * window) ** 2).sum())  # Parseval
    f0 = 0.5 / scale
    assert energies[0] / total == pytest.approx(1 - np.pi * f0**2, abs=0.01)
    areas = [np.pi * (hi**2 - lo**2) for lo, hi in texture_bands(scale)[:-1]]
    areas.append(1 - np.pi * 0.25)  # the corners beyond the axis Nyquist
    for energy, area in zip(energies[1:], areas, strict=True):
        assert energy / total == pytest.approx(area, rel=0.05)


def test_blurring_lowers_and_sharpening_raises_the_ratio():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    hr = gaussian_filter(rng.normal(128, 40, (96, 96)), 0.7)  # a textured image
    blurred = gaussian_filter(hr, 1.5)
    sharpened = hr + 1.0 * (hr - gaussian_filter(hr, 1.0))
    assert texture_ratio(blurred, hr, 2) < 0.3
    assert texture_ratio(sharpened, hr, 2) > 1.5
    # bicubic down and up again (what a plain resize gives) loses most of the texture
    photo = Image.fromarray(np.clip(hr, 0, 255).astype(np.uint8)).convert("RGB")
    hr_c, lr = protocol_pair(photo, 4)
    assert texture_ratio(lr.resize(hr_c.size, Image.BICUBIC), hr_c, 4) < 0.3


def test_flat_reference_gives_nan():
    flat = np.full((40, 40, 3), 90, np.uint8)
    rng = np.random.default_rng(4)
    noisy = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert np.isnan(texture_ratio(noisy, flat, 2))


# -- grid-lock -------------------------------------------------------------------------------

def pink_noise(size: int = 256, seed: int = 0) -> np.ndarray:
    """A photo-like grey image: 1/f amplitude spectrum, random phases, 0..255."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    f[0, 0] = 1.0
    image = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) / f))
    return (image - image.mean()) / image.std() * 40 + 128


def lr_grid_dots(size: int, scale: int, amplitude: float) -> np.ndarray:
    """A faint dot in the same place of every LR pixel: what a per-cell decoder paints."""
    dots = np.zeros((size, size))
    dots[1::scale, 2::scale] = amplitude
    return dots


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_grid_lock_of_photo_like_noise_is_about_one(scale):
    values = [grid_lock(pink_noise(seed=seed), scale) for seed in range(4)]
    assert 0.4 < float(np.median(values)) < 1.6


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_grid_lock_sees_a_faint_lr_grid_pattern(scale):
    image = pink_noise()
    dotted = image + lr_grid_dots(image.shape[0], scale, 4.0)  # 4 levels on a std of 40
    assert grid_lock(dotted, scale) > 10 * max(grid_lock(image, scale), 1.0)
    # the pattern at another period is not the LR grid's
    assert grid_lock(image + lr_grid_dots(image.shape[0], 7, 4.0), scale) < 3


def test_grid_lock_ratios_count_every_harmonic_and_read_rgb():
    rgb = np.repeat(pink_noise(64)[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)
    assert grid_lock_ratios(rgb, 4).shape == (15,)
    assert grid_lock_ratios(Image.fromarray(rgb), 3).shape == (8,)


def test_grid_lock_refuses_fractional_scales_and_tiny_images():
    with pytest.raises(ValueError, match="integer"):
        grid_lock(pink_noise(64), 2.5)
    with pytest.raises(ValueError, match="too small"):
        grid_lock(pink_noise(64)[:10, :10], 4)
