"""The scoring protocol: PSNR-Y, border shave, HR crop and LR size, luma."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from sirenup.engine.metrics import (
    protocol_pair,
    psnr,
    psnr_rgb,
    psnr_y,
    rgb_to_y,
    scale_fraction,
    shave,
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
