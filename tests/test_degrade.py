"""The realistic degradation pipeline of ``sirenup train --degrade real``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sirenup.training.degrade import (
    DegradeConfig,
    add_noise,
    blur,
    degrade,
    jpeg,
)


def smooth_images(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random images with some structure, (n, 3, size, size) in [0.1, 0.9]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=gen)
    return 0.1 + 0.8 * F.interpolate(coarse, size=(size, size), mode="bicubic",
                                     align_corners=False).clamp(0, 1)


def high_frequency_energy(images: torch.Tensor) -> float:
    spectrum = torch.fft.rfft2(images - images.mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    h = images.shape[-2]
    fy = torch.fft.fftfreq(h).abs()[:, None]
    fx = torch.fft.rfftfreq(images.shape[-1])[None, :]
    return float(spectrum[..., torch.maximum(fx, fy) > 0.25].sum())


def test_blur_lowers_high_frequency_energy():
    noise = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    which = torch.tensor([True, True, False, True])
    out = blur(noise, which, (1.0, 1.5), 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(out[2], noise[2])  # not chosen: untouched
    for i in (0, 1, 3):
        assert high_frequency_energy(out[i:i + 1]) < 0.2 * high_frequency_energy(noise[i:i + 1])
    # a blur keeps the mean (kernels sum to one)
    assert torch.allclose(out.mean(dim=(-2, -1)), noise.mean(dim=(-2, -1)), atol=0.02)


@pytest.mark.parametrize("sigma", [5.0, 15.0])
def test_gaussian_noise_has_the_requested_sigma(sigma):
    flat = torch.full((8, 3, 64, 64), 0.5)
    cfg = DegradeConfig(grey_noise_prob=0.0, poisson_prob=0.0)
    out = add_noise(flat, torch.ones(8, dtype=torch.bool), (sigma, sigma), cfg,
                    torch.Generator().manual_seed(3))
    measured = float((out - flat).std()) * 255
    assert measured == pytest.approx(sigma, rel=0.05)


def test_grey_noise_is_the_same_in_every_channel():
    flat = torch.full((2, 3, 32, 32), 0.5)
    cfg = DegradeConfig(grey_noise_prob=1.0, poisson_prob=0.0)
    out = add_noise(flat, torch.ones(2, dtype=torch.bool), (10.0, 10.0), cfg,
                    torch.Generator().manual_seed(4))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_jpeg_leaves_an_8x8_block_signature():
    images = smooth_images(2, 64) + 0.05 * torch.rand(2, 3, 64, 64,
                                                     generator=torch.Generator().manual_seed(5))
    out = jpeg(images.clamp(0, 1), torch.ones(2, dtype=torch.bool), (20, 20),
               torch.Generator().manual_seed(6))
    error = (out - images).mean(dim=1)  # (2, 64, 64)
    # Steps between horizontally adjacent pixels: larger across 8x8 block borders than inside.
    steps = (error[:, :, 1:] - error[:, :, :-1]).abs().mean(dim=(0, 1))  # (63,)
    at_border = steps[7::8].mean()
    inside = torch.cat([steps[i::8] for i in range(7)]).mean()
    assert at_border > 1.3 * inside


def test_pipeline_is_deterministic_under_a_seed_and_keeps_shapes():
    hr = smooth_images(6, 96, seed=7)
    cfg = DegradeConfig()
    a = degrade(hr, 32, cfg, torch.Generator().manual_seed(11))
    b = degrade(hr, 32, cfg, torch.Generator().manual_seed(11))
    c = degrade(hr, 32, cfg, torch.Generator().manual_seed(12))
    assert a.shape == (6, 3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_clean_crops_are_exactly_the_bicubic_protocol():
    hr = smooth_images(3, 96, seed=8)
    out = degrade(hr, 32, DegradeConfig(clean_prob=1.0), torch.Generator().manual_seed(0))
    clean = F.interpolate(hr, size=(32, 32), mode="bicubic", antialias=True,
                          align_corners=False).clamp(0, 1)
    assert torch.equal(out, clean)


def test_degraded_crops_differ_from_the_clean_protocol():
    hr = smooth_images(8, 96, seed=9)
    out = degrade(hr, 32, DegradeConfig(clean_prob=0.0, final_jpeg_prob=1.0),
                  torch.Generator().manual_seed(1))
    clean = F.interpolate(hr, size=(32, 32), mode="bicubic", antialias=True,
                          align_corners=False).clamp(0, 1)
    differences = (out - clean).abs().mean(dim=(1, 2, 3))
    assert bool((differences > 1e-3).all())


def test_config_validation_and_round_trip():
    cfg = DegradeConfig(noise_sigma=(2.0, 8.0), jpeg_quality=(40, 90))
    again = DegradeConfig.from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(ValueError, match="probability"):
        DegradeConfig(blur_prob=1.5).validate()
    with pytest.raises(ValueError, match="MIN,MAX|MIN <= MAX"):
        DegradeConfig(noise_sigma=(9.0, 2.0)).validate()
    with pytest.raises(ValueError, match="jpeg_quality"):
        DegradeConfig(jpeg_quality=(0, 95)).validate()
    assert np.isfinite(list(DegradeConfig().to_dict()["noise_sigma"])).all()


def test_cli_train_with_real_degradations_records_them(tmp_path):
    from typer.testing import CliRunner

    from sirenup.cli.app import app
    from sirenup.models.weights import load_weights
    from tests.test_training import photo

    data = tmp_path / "photos"
    data.mkdir()
    for i in range(2):
        photo(i, 80, 70).save(data / f"p{i}.png")
    run = tmp_path / "RUN"
    args = ["train", str(data), "--out", str(run), "--steps", "2", "--batch", "2", "--patch",
            "16", "--queries", "32", "--degrade", "real", "--degrade-noise-sigma", "5,5",
            "--degrade-jpeg-quality", "50,60"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    _, meta = load_weights(run / "model.safetensors")
    recorded = meta["training"]["degrade"]
    assert recorded["noise_sigma"] == [5.0, 5.0]
    assert recorded["jpeg_quality"] == [50, 60]
    assert recorded["first_prob"] == DegradeConfig().first_prob


@pytest.mark.parametrize("extra, message", [
    (["--degrade", "fancy"], "--degrade"),
    (["--degrade", "real", "--degrade-blur-prob", "2"], "blur_prob"),
    (["--degrade", "real", "--degrade-noise-sigma", "5"], "MIN,MAX"),
    (["--degrade", "real", "--degrade-jpeg-quality", "0,200"], "jpeg_quality"),
])
def test_cli_degrade_usage_errors(tmp_path, extra, message):
    from typer.testing import CliRunner

    from sirenup.cli.app import app

    result = CliRunner().invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "R"),
                                      "--steps", "1", *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
