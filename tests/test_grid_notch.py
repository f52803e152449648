"""The anti-imaging notch (``models.grid_notch``): it removes exactly what repeats with the LR
grid at integer scales, nearly all of it at fractional ones, keeps what the LR image holds,
is off where it must be, and tiles and bands still give the untiled result."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sirenup.evaluation.metrics import grid_lock
from sirenup.inference.tiler import output_halo, upscale_tensor
from sirenup.models.grid_notch import (
    GridNotch,
    _window_sums,
    box_kernel,
    comb_kernel,
    grid_notch,
)
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
from sirenup.models.weights import load_weights, save_weights

SMALL_V2 = LiifSirenConfig(channels=8, n_blocks=2, hidden=16, version=2, refine_features=4,
                           refine_hidden=8, refine_noise=1, notch_periods=3)


def wave(size: int, fy: float, fx: float, phase: float = 0.3) -> torch.Tensor:
    """(1, 1, size, size) cosine of fy, fx cycles per pixel, amplitude 1 around 0 (the notch
    filters displayable values: add it to a grey, scaled, to stay inside [0, 1])."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64),
                          torch.arange(size, dtype=torch.float64), indexing="ij")
    return torch.cos(2 * math.pi * (fy * y + fx * x) + phase).float()[None, None]


def notched(notch: GridNotch, image: torch.Tensor) -> torch.Tensor:
    """The notch's output, and the input cropped to it."""
    h = notch.halo
    return notch.apply(image), image[..., h:image.shape[-2] - h, h:image.shape[-1] - h]


def test_kernels_average_to_one():
    for spacing in (2.0, 3.0, 3.7, 4.0, 8.0):
        assert float(box_kernel(spacing).sum()) == pytest.approx(1.0)
        assert float(comb_kernel(spacing, 4).sum()) == pytest.approx(1.0)


def filtered(image: torch.Tensor, taps_y: torch.Tensor, taps_x: torch.Tensor) -> torch.Tensor:
    """Unpadded separable filtering by plain convolution: the reference for the passes."""
    out = F.conv2d(image.double(), taps_y.flip(0).double().view(1, 1, -1, 1))
    return F.conv2d(out, taps_x.flip(0).double().view(1, 1, 1, -1))


@pytest.mark.parametrize("scale_y, scale_x", [(2, 2), (3, 3), (4, 4), (5, 6), (8, 8), (3.7, 3.7),
                                              (2, 3.5)])
def test_the_fast_passes_compute_the_filter(scale_y, scale_x):
    """Running sums, pair sums and folded divisors give y - comb(y - box(y)) as the taps do."""
    periods = 3
    notch = GridNotch(scale_y=scale_y, scale_x=scale_x, periods=periods)
    image = torch.rand(1, 1, 2 * notch.halo + 29, 2 * notch.halo + 31)
    box_y, box_x = box_kernel(scale_y), box_kernel(scale_x)
    comb_y, comb_x = comb_kernel(scale_y, periods), comb_kernel(scale_x, periods)
    detail = image.double()[..., :, :] - F.pad(filtered(image, box_y, box_x),
                                                [(len(box_x) - 1) // 2] * 2
                                                + [(len(box_y) - 1) // 2] * 2)
    pattern = filtered(detail, comb_y, comb_x)
    h = notch.halo
    reference = image.double()[..., h:-h, h:-h] - pattern[..., pattern.shape[-2] // 2 - 14:
                                                           pattern.shape[-2] // 2 + 15,
                                                           pattern.shape[-1] // 2 - 15:
                                                           pattern.shape[-1] // 2 + 16]
    assert (notch.apply(image).double() - reference).abs().max() < 1e-5


@pytest.mark.parametrize("n", range(1, 10))
def test_window_sums(n):
    image = torch.rand(2, 3, 5, 40)
    expected = sum(image[..., k:41 - n + k] for k in range(n))
    assert (_window_sums(image, n, -1) - expected).abs().max() < 1e-5
    out = torch.empty_like(expected)
    assert _window_sums(image, n, -1, out=out) is out
    assert (out - expected).abs().max() < 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_integer_scales_lose_every_harmonic_exactly(scale):
    notch = GridNotch(scale_y=scale, scale_x=scale, periods=4)
    for ky in range(scale):
        for kx in range(scale):
            if ky == kx == 0:
                continue
            pattern = wave(8 * scale + 2 * notch.halo, ky / scale, kx / scale)
            out, _ = notched(notch, 0.5 + 0.25 * pattern)
            assert (out - 0.5).abs().max() < 1e-4, (ky, kx)


@pytest.mark.parametrize("scale", [2.0, 3.7, 4.0])
def test_what_the_lr_image_holds_is_kept(scale):
    """Frequencies below the LR Nyquist frequency (0.5 / scale) pass almost untouched: a
    constant exactly, a slow wave within 1 %."""
    notch = GridNotch(scale_y=scale, scale_x=scale, periods=4)
    size = 64 + 2 * notch.halo
    flat = torch.full((1, 1, size, size), 0.7)
    out, _ = notched(notch, flat)
    assert (out - 0.7).abs().max() < 1e-6
    out, kept = notched(notch, 0.5 + 0.4 * wave(size, 0.1 / scale, 0.25 / scale))
    assert (out - kept).abs().max() < 0.004


def test_fractional_scales_lose_most_of_the_first_harmonic():
    notch = GridNotch(scale_y=3.7, scale_x=3.7, periods=4)
    out, kept = notched(notch, 0.5 + 0.25 * wave(120, 0.0, 1 / 3.7))
    assert (out - 0.5).square().mean() < 0.1 * (kept - 0.5).square().mean()


def test_off_without_periods_and_below_x2():
    assert grid_notch((400, 400), (100, 100), 0) is None
    assert grid_notch((150, 400), (100, 100), 4) is None  # x1.5 vertically
    assert grid_notch((400, 370), (100, 100), 4).halo > 0


def photo_like(size: int, seed: int = 0) -> np.ndarray:
    """A 1/f noise image (a photo's spectrum, no reason for peaks at any harmonic)."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size)))
    image = np.real(np.fft.ifft2(spectrum / np.maximum(radius, 1 / size)))
    return 128 + 30 * image / image.std()


def test_grid_lock_of_a_patterned_image_falls_to_a_photos():
    """A photo-like image with a faint pattern repeating every 4 pixels (2 levels: what a
    decoder paints in every LR pixel) scores far above 1 on the grid-lock metric; the notch
    brings it to a photo's score."""
    scale, size = 4, 256
    notch = GridNotch(scale_y=scale, scale_x=scale, periods=4)
    image = photo_like(size + 2 * notch.halo)
    cell = np.random.default_rng(1).uniform(-4, 4, size=(scale, scale))
    image = image + np.tile(cell, (image.shape[0] // scale, image.shape[1] // scale))
    image = np.clip(image, 0, 255) / 255  # the notch filters displayable values
    tensor = torch.from_numpy(image).float()[None, None]
    out, kept = notched(notch, tensor)
    rgb = lambda t: np.repeat(255 * t[0, 0].double().numpy()[..., None], 3, axis=2)  # noqa: E731
    assert grid_lock(rgb(kept), scale) > 10
    assert grid_lock(rgb(out), scale) < 2


def moved_model(config: LiifSirenConfig = SMALL_V2) -> LiifSiren:
    """A small model whose decoder and refiner do something, with the notch on."""
    torch.manual_seed(0)
    model = LiifSiren(config=config).eval()
    with torch.no_grad():
        model.refiner.conv2.weight.normal_(0, 0.05)
        model.decoder.out.weight.normal_(0, 0.01)
    return model


def lr_image(h: int = 30, w: int = 38) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("scale", [2.0, 3.7, 4.0])
def test_notch_tiled_equals_untiled(scale):
    model, lr = moved_model(), lr_image()
    size = (round(30 * scale), round(38 * scale))
    assert output_halo(model, size, (30, 38)) > model.halo  # the notch is on
    whole = upscale_tensor(model, lr, size, tile=0)
    tiled = upscale_tensor(model, lr, size, tile=12, overlap=3)
    assert (whole - tiled).abs().max() < 1e-4


def test_notch_bands_carry_their_halo(monkeypatch):
    """Bands of a few rows (fewer than the notch's halo) give the one-band result."""
    from sirenup.inference import devices

    model, lr = moved_model(), lr_image()
    whole = upscale_tensor(model, lr, (90, 114), tile=0)
    monkeypatch.setattr(devices.DecodeSizes, "band_rows", lambda self, cols, rows: 3)
    assert (whole - upscale_tensor(model, lr, (90, 114), tile=0)).abs().max() < 1e-5


def test_notch_is_the_filter_of_the_whole_image():
    """Away from the borders, inference with the notch = the notch of the same model's output
    without it (the notch runs on unclamped values: an LR image in [0.25, 0.75] keeps them
    all inside [0, 1])."""
    model, lr = moved_model(), 0.25 + 0.5 * lr_image()
    off = moved_model(LiifSirenConfig(**{**SMALL_V2.to_dict(), "notch_periods": 0}))
    size = (120, 152)
    plain = upscale_tensor(off, lr, size, tile=0)
    assert 0 < plain.min() and plain.max() < 1
    notch = model.grid_notch(size, (30, 38))
    h = notch.halo
    inside = upscale_tensor(model, lr, size, tile=0)[..., h:-h, h:-h]
    assert (inside - notch.apply(plain)).abs().max() < 1e-5
    assert (inside - plain[..., h:-h, h:-h]).abs().max() > 1e-3  # it did something


def test_notch_periods_round_trip_and_old_files_read_off(tmp_path):
    model = moved_model()
    save_weights(tmp_path / "m.safetensors", model)
    loaded, _ = load_weights(tmp_path / "m.safetensors")
    assert loaded.config.notch_periods == 3
    lr = lr_image()
    assert torch.equal(upscale_tensor(loaded, lr, (60, 76), tile=0),
                       upscale_tensor(model, lr, (60, 76), tile=0))
    assert LiifSirenConfig.from_dict({"channels": 8}).notch_periods == 0


def test_train_records_the_notch(tmp_path, invoke, gan_photos):
    """`sirenup train` gives a new model the default notch, keeps an --init model's, and
    records --notch-periods; the exported file upscales through the CLI with it."""
    from PIL import Image

    from sirenup.models.grid_notch import DEFAULT_PERIODS

    data, rng = gan_photos, np.random.default_rng(0)
    small = ["--steps", "1", "--batch", "2", "--patch", "16", "--device", "cpu"]
    result = invoke("train", str(data), "--out", str(tmp_path / "fresh"), "--blocks", "1",
                    *small)
    assert result.exit_code == 0, result.output
    fresh = tmp_path / "fresh" / "model.safetensors"
    assert load_weights(fresh)[0].config.notch_periods == DEFAULT_PERIODS
    init = tmp_path / "init.safetensors"
    save_weights(init, LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=1, hidden=16)))
    result = invoke("train", str(data), "--out", str(tmp_path / "kept"), "--init", str(init),
                    *small)
    assert result.exit_code == 0, result.output
    assert load_weights(tmp_path / "kept" / "model.safetensors")[0].config.notch_periods == 0
    result = invoke("train", str(data), "--out", str(tmp_path / "set"), "--init", str(init),
                    "--notch-periods", "3", *small)
    assert result.exit_code == 0, result.output
    model = tmp_path / "set" / "model.safetensors"
    assert load_weights(model)[0].config.notch_periods == 3
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    result = invoke("upscale", str(tmp_path / "in.png"), "--model", str(model), "--scale", "4",
                    "-o", str(tmp_path / "out.png"))
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out.png").size == (96, 80)


@pytest.mark.parametrize("name", ["sirenup-base", "sirenup-gan", "sirenup-real"])
def test_bundled_models_tiled_equals_untiled(name):
    """Issue 17's bar for every bundled model, notch and refiner included: tiles of 16 LR
    pixels give the untiled output within one 8-bit level at x2, x3.7 and x4."""
    from pathlib import Path

    from PIL import Image

    assets = Path(__file__).resolve().parents[1] / "sirenup" / "assets"
    model, _ = load_weights(assets / f"{name}.safetensors")
    pixels = np.asarray(Image.open(assets / "sample.png").convert("RGB"))[:40, :56]
    lr = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
    for scale in (2.0, 3.7, 4.0):
        size = (round(40 * scale), round(56 * scale))
        whole = upscale_tensor(model, lr, size, tile=0)
        tiled = upscale_tensor(model, lr, size, tile=16, overlap=4)
        assert (whole - tiled).abs().max() < 1 / 255, scale


def test_a_pattern_beyond_white_does_not_leak_into_visible_pixels():
    """A decoder's strong pattern above white, which the output's clipping hides, changes
    nothing: the notch filters what can be shown (the same as plain white beside grey)."""
    scale = 3
    notch = GridNotch(scale_y=scale, scale_x=scale, periods=4)
    size = 60 + 2 * notch.halo
    white = torch.full((1, 1, size, size), 0.5)
    white[..., : size // 2] = 1.0
    patterned = white.clone()
    beyond = 1.4 + 0.3 * wave(size, 0.0, 1 / scale)  # (1, 1, size, size), all above 1
    patterned[..., : size // 2] = beyond[..., : size // 2]
    assert torch.equal(notch.apply(patterned), notch.apply(white))
