"""Adversarial training (``sirenup train --gan``): losses, shapes, resume, export, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sirenup.cli.app import app
from sirenup.cli.console import error_text
from sirenup.models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from sirenup.models.weights import load_weights
from sirenup.training.data import as_image
from sirenup.training.gan import (
    GanConfig,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    grid_phase_loss,
    high_frequency_energy,
    kurtosis_loss,
    low_frequency_loss,
    spectral_loss,
    texture_energy_loss,
)
from sirenup.training.loop import CHECKPOINT, WEIGHTS, TrainConfig, Trainer

GAN = {"window": 32, "d_channels": 8, "ema": 0.9, "lambda_grid": 0.1}


@pytest.fixture
def data_dir(gan_photos) -> Path:
    return gan_photos


def config(data_dir: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(data=[str(data_dir)], out=str(out), steps=4, batch=2, patch=16, warmup=1,
                  scale_min=2.0, scale_max=3.0, checkpoint_every=2, seed=0, lr=1e-4,
                  gan=dict(GAN))
    values.update(overrides)
    return TrainConfig(**values)


def quiet(_message: str) -> None:
    pass


@pytest.mark.parametrize("window", [24, 32, 48])
def test_discriminator_features_and_logits_at_several_sizes(window):
    disc = PatchDiscriminator(config=PatchDiscriminatorConfig(channels=8)).eval()
    images = torch.rand(2, 3, window, window)
    logits, features = disc.forward_features(images)
    assert logits.shape[:2] == (2, 1) and min(logits.shape[-2:]) >= 1
    assert torch.allclose(logits, disc(images))  # eval: spectral norm's power step is frozen
    assert len(features) == 4  # one per LeakyReLU, shallow to deep
    assert [f.shape[1] for f in features] == [8, 16, 32, 64]


def test_losses_behave():
    real, fake = torch.full((4, 1, 3, 3), 3.0), torch.full((4, 1, 3, 3), -3.0)
    for kind in ("ragan", "hinge"):
        # D that separates real from fake has a low loss; the generator a high one
        assert discriminator_loss(real, fake, kind) < discriminator_loss(fake, real, kind)
        assert generator_adversarial_loss(real, fake, kind) > \
            generator_adversarial_loss(fake, real, kind)
    features = [torch.rand(2, 4, 5, 5), torch.rand(2, 8, 3, 3)]
    assert feature_matching_loss(features, features) == 0
    image = torch.rand(2, 3, 32, 32)
    assert spectral_loss(image, image) == 0
    # the spectral loss does not care where detail is (a shifted texture is "as detailed")
    shifted = image.roll(5, dims=-1)
    assert spectral_loss(shifted, image) < 0.5 * spectral_loss(image * 0 + 0.5, image)


def dense_coords(batch: int, side: int, scale: float) -> torch.Tensor:
    """LR coordinates (B, side*side, 2) of a dense window at ``scale``, rows major."""
    r = (torch.arange(side, dtype=torch.float32) + 0.5) / scale - 0.5
    ys, xs = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(1, -1, 2).expand(batch, -1, -1)


def test_grid_phase_loss_sees_dots_on_the_lr_grid_not_texture():
    """Dots painted at one phase of every LR pixel cost far more than detail of the same
    strength scattered anywhere (the photo's own detail costs nothing)."""
    gen = torch.Generator().manual_seed(0)
    side, scale = 32, 4.0
    coords = dense_coords(2, side, scale)
    smooth = torch.linspace(0.3, 0.7, side).expand(2, 3, side, side)
    real = smooth + 0.02 * torch.randn(2, 1, side, side, generator=gen)
    other_texture = smooth + 0.02 * torch.randn(2, 1, side, side, generator=gen)
    dots = torch.zeros(2, 1, side, side)
    dots[..., ::4, ::4] = 0.08  # one pixel per LR pixel, always at the same offset
    dotted = smooth + 0.01 * torch.randn(2, 1, side, side, generator=gen) + dots
    assert grid_phase_loss(real, real, coords) == 0
    assert grid_phase_loss(dotted, real, coords) > 4 * grid_phase_loss(other_texture, real, coords)
    # differentiable, and it is the generator's: gradients reach the fake only
    fake = dotted.clone().requires_grad_(True)
    grid_phase_loss(fake, real, coords).backward()
    assert fake.grad.abs().sum() > 0


def test_spectral_floor_weighs_faint_fine_detail():
    """With floor 1 the loss is about linear in amplitude: a lost faint texture counts a tenth
    of a lost texture 10x as strong. With a small floor (the log regime) it counts
    several times more, so a photo's faint fine detail is asked for too."""
    smooth = torch.full((1, 3, 64, 64), 0.5)
    noise = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def faint_over_strong(floor):
        faint, strong = smooth + 0.003 * noise, smooth + 0.03 * noise
        return spectral_loss(smooth, faint, floor) / spectral_loss(smooth, strong, floor)

    assert faint_over_strong(1.0) < 0.12
    assert faint_over_strong(1e-3) > 0.25
    with pytest.raises(ValueError, match="freq_floor"):
        GanConfig(freq_floor=0).validate()


def test_gan_step_reports_every_loss_and_decodes_dense_windows(data_dir, tmp_path):
    trainer = Trainer(config(data_dir, tmp_path / "run"), log=quiet)
    batch = trainer.sampler.sample(torch.Generator().manual_seed(0))
    assert batch.window == 32 and batch.coords.shape == (2, 32 * 32, 2)
    assert as_image(batch.target, batch.window).shape == (2, 3, 32, 32)
    # the dense target is an actual window of the HR crop: neighbours in a row are neighbours
    coords = batch.coords[0].view(32, 32, 2)
    assert torch.allclose(coords[:, 1:, 0] - coords[:, :-1, 0], batch.cell[0, 1].expand(32, 31))
    parts = trainer.train_step()
    assert {"g_pix", "g_adv", "g_fm", "g_freq", "g_grid", "g_total", "d_loss", "d_real",
            "d_fake"} <= set(parts)
    assert all(torch.isfinite(torch.tensor(v)) for v in parts.values())


def test_gan_resume_restores_identical_state(data_dir, tmp_path):
    straight = Trainer(config(data_dir, tmp_path / "A"), log=quiet)
    straight.run()
    first = Trainer(config(data_dir, tmp_path / "B"), log=quiet)
    for _ in range(2):
        first.train_step()
    first.save_checkpoint()
    torch.manual_seed(99)  # another global RNG state before resuming must not matter
    second = Trainer(config(data_dir, tmp_path / "B"), log=quiet)
    assert second.resume() and second.step == 2
    second.run()
    pairs = [(straight.model, second.model), (straight.adversary.disc, second.adversary.disc),
             (straight.adversary.ema.model, second.adversary.ema.model)]
    for a, b in pairs:
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), name
    for a, b in [(straight.optimizer, second.optimizer),
                 (straight.adversary.optimizer, second.adversary.optimizer)]:
        sa, sb = a.state_dict()["state"], b.state_dict()["state"]
        for key in sa:
            assert torch.equal(sa[key]["exp_avg"], sb[key]["exp_avg"])
    # the export is the EMA generator, with every hyper-parameter in its metadata
    model, meta = load_weights(tmp_path / "B" / WEIGHTS)
    for name, value in model.state_dict().items():
        assert torch.equal(value, second.adversary.ema.model.state_dict()[name]), name
    assert meta["training"]["gan"]["window"] == 32
    assert meta["training"]["gan"]["loss"] == "ragan"
    assert meta["training"]["batch"] == 2


def test_resume_refuses_a_mismatched_run(data_dir, tmp_path):
    plain = Trainer(config(data_dir, tmp_path / "C", gan=None), log=quiet)
    plain.train_step()
    plain.save_checkpoint()
    with pytest.raises(ValueError, match="not a gan run") as refused:
        Trainer(config(data_dir, tmp_path / "C"), log=quiet).resume()
    assert "not a --gan run (start a new run with --init" in error_text(refused.value)


def test_cli_gan_training_from_weights(data_dir, tmp_path):
    run = tmp_path / "RUN"
    args = ["train", str(data_dir), "--out", str(run), "--steps", "2", "--batch", "2",
            "--patch", "16", "--scale-min", "2", "--scale-max", "3", "--gan",
            "--gan-window", "32", "--d-channels", "8", "--init", "sirenup-base",
            "--lambda-adv", "0.1", "--device", "auto"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (run / CHECKPOINT).is_file()
    model, meta = load_weights(run / WEIGHTS)
    assert meta["init"]["name"] == "sirenup-base"
    assert meta["training"]["gan"]["lambda_adv"] == 0.1
    assert meta["training"]["lr"] == 1e-4  # the --gan default


@pytest.mark.parametrize("extra, message", [
    (["--gan-loss", "wasserstein"], "--gan-loss"),
    (["--patch", "8", "--scale-min", "1"], "--gan needs HR crops"),
    (["--device", "cuda:7"], "--device"),
    (["--device", "tpu"], "--device"),
    (["--batch", "3", "--init", "no-such-model"], "--init"),
])
def test_cli_gan_usage_errors(data_dir, tmp_path, extra, message):
    args = ["train", str(data_dir), "--out", str(tmp_path / "R"), "--steps", "1", "--gan",
            "--patch", "16", "--scale-min", "2", "--gan-window", "32"] + extra
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "R" / CHECKPOINT).exists()


def test_gan_config_round_trip():
    cfg = GanConfig(window=48, loss="hinge", lambda_adv=0.2)
    assert GanConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        GanConfig(ema=1.0).validate()


def test_cli_defaults_are_the_configs_defaults():
    """The train command declares its defaults without importing torch; they must stay equal
    to the dataclasses' (one place to read them: the configs)."""
    import inspect

    from sirenup.cli import train as cli_train
    from sirenup.training.degrade import DegradeConfig

    defaults = {name: p.default for name, p in
                inspect.signature(cli_train.train).parameters.items()}
    gan = GanConfig()
    for option, field in [("gan_window", "window"), ("gan_loss", "loss"),
                          ("lambda_pix", "lambda_pix"), ("lambda_adv", "lambda_adv"),
                          ("lambda_fm", "lambda_fm"), ("lambda_freq", "lambda_freq"),
                          ("freq_floor", "freq_floor"), ("lambda_grid", "lambda_grid"),
                          ("lambda_tex", "lambda_tex"), ("lambda_lf", "lambda_lf"),
                          ("lambda_kurt", "lambda_kurt"),
                          ("lr_d", "lr_d"), ("d_channels", "d_channels"), ("ema", "ema")]:
        assert defaults[option] == getattr(gan, field), option
    degrade = DegradeConfig()
    for option, field in [("degrade_clean_prob", "clean_prob"),
                          ("degrade_first_prob", "first_prob"),
                          ("degrade_blur_prob", "blur_prob"),
                          ("degrade_noise_prob", "noise_prob"),
                          ("degrade_jpeg_prob", "jpeg_prob"),
                          ("degrade_final_jpeg_prob", "final_jpeg_prob"),
                          ("degrade_second_prob", "second_prob")]:
        assert defaults[option] == getattr(degrade, field), option
    for option, field in [("degrade_blur_sigma", "blur_sigma"),
                          ("degrade_noise_sigma", "noise_sigma"),
                          ("degrade_jpeg_quality", "jpeg_quality"),
                          ("degrade_resize_range", "resize_range")]:
        low, high = (float(v) for v in defaults[option].split(","))
        assert (low, high) == tuple(float(v) for v in getattr(degrade, field)), option


def test_texture_energy_is_what_the_texture_ratio_counts():
    """The loss's energy above the LR Nyquist frequency is the metric's: same ratios."""
    import numpy as np

    from sirenup.evaluation.metrics import texture_ratio

    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=generator),
                                             size=(48, 48), mode="bicubic").clamp(0, 1)
    sharp = (smooth + 0.1 * torch.rand(1, 3, 48, 48, generator=generator)).clamp(0, 1)
    scale = 4.0
    shaved = [image[..., 4:-4, 4:-4] for image in (smooth, sharp)]  # the metric shaves ceil(s)
    ours = (high_frequency_energy(shaved[0], scale) / high_frequency_energy(shaved[1], scale))
    as_array = [image[0].permute(1, 2, 0).double().numpy() * 255 for image in (smooth, sharp)]
    metric = texture_ratio(as_array[0].astype(np.float64), as_array[1], scale)
    assert float(ours) == pytest.approx(metric, rel=1e-3)


def test_low_frequency_loss_counts_only_what_the_lr_holds():
    generator = torch.Generator().manual_seed(2)
    real = torch.rand(2, 3, 32, 32, generator=generator)
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    fine = 0.1 * torch.cos(torch.pi * x) * torch.cos(torch.pi * y)  # 0.5 cycles/px: above x3's
    coarse = 0.1 * torch.cos(2 * torch.pi * x / 16)  # 1/16 cycles/px: below x3's 1/6
    assert float(low_frequency_loss(real + fine, real, 3.0)) < 1e-6  # invented detail is free
    assert float(low_frequency_loss(real + 0.05, real, 3.0)) == pytest.approx(0.05, rel=1e-4)
    wrong = (real + coarse).requires_grad_(True)
    loss = low_frequency_loss(wrong, real, 3.0)
    loss.backward()
    assert loss.item() == pytest.approx(float(coarse.abs().mean()), rel=1e-4)  # all of it
    assert wrong.grad.abs().sum() > 0


def test_kurtosis_loss_tells_specks_from_grain():
    generator = torch.Generator().manual_seed(4)
    base = torch.full((2, 3, 48, 48), 0.5)
    grain = base + 0.02 * torch.randn(2, 1, 48, 48, generator=generator)  # a photo's grain
    sparse = torch.rand(2, 1, 48, 48, generator=generator) < 0.01
    specks = (base + 0.2 * sparse).requires_grad_(True)  # about the same energy, in specks
    assert float(kurtosis_loss(grain, grain)) == 0.0
    loss = kurtosis_loss(specks, grain)
    loss.backward()
    assert loss.item() > 1.5 and specks.grad.abs().sum() > 0
    other_grain = base + 0.02 * torch.randn(2, 1, 48, 48, generator=generator)
    assert kurtosis_loss(other_grain, grain).item() < 0.2  # grain against grain: no matter where
    # flat against flat, whatever the rounding noise: nothing asked
    assert kurtosis_loss(base + 0.001 * torch.rand(2, 3, 48, 48, generator=generator),
                         base).item() < 0.2


def test_texture_energy_loss_asks_for_the_photos_detail():
    generator = torch.Generator().manual_seed(1)
    real = (0.5 + 0.2 * torch.rand(2, 3, 32, 32, generator=generator)).requires_grad_(False)
    flat = torch.full_like(real, 0.6)
    assert float(texture_energy_loss(real, real, 3.0)) == 0.0
    fake = flat.clone().requires_grad_(True)
    loss = texture_energy_loss(fake + 0.001 * torch.rand(2, 3, 32, 32, generator=generator),
                               real, 3.0)
    loss.backward()
    assert loss.item() > 1.0  # a flat window against a textured one
    noisier = texture_energy_loss(flat + 0.1 * torch.rand(2, 3, 32, 32, generator=generator),
                                  real, 3.0)
    assert noisier.item() < loss.item()  # detail brings it down
    # and a flat photo asks for none: its rounding noise stays under the floor
    assert float(texture_energy_loss(flat + 0.0005, flat, 3.0)) < 0.01
