"""The LR-grid losses of training/grid_losses.py: a pattern locked to the LR grid costs more
than error of the same strength that is not."""

from __future__ import annotations

import pytest
import torch

from sirenup.training.grid_losses import harmonic_loss, harmonic_mask, phase_bias_loss


def lr_grid_dots(shape, scale: int, amplitude: float) -> torch.Tensor:
    dots = torch.zeros(shape)
    dots[..., 1::scale, 2::scale] = amplitude
    return dots


@pytest.mark.parametrize("scale", [2, 4])
def test_harmonic_loss_prefers_noise_to_grid_patterns(scale):
    torch.manual_seed(0)
    target = torch.rand(4, 3, 44, 44)
    dots = lr_grid_dots(target.shape, scale, 1.0)
    dots *= 0.01 / dots.square().mean().sqrt()  # the same RMS as the noise
    noise = torch.randn_like(target) * 0.01
    assert harmonic_loss(target + dots, target, scale) > 3 * harmonic_loss(target + noise,
                                                                          target, scale)
    assert harmonic_loss(target, target, scale) < 1e-5


def test_harmonic_loss_at_scale_one_is_zero_and_finite():
    pred = torch.rand(2, 3, 16, 16, requires_grad=True)
    loss = harmonic_loss(pred, torch.rand(2, 3, 16, 16), 1.0)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(pred.grad).all()


def test_harmonic_mask_peaks_at_the_harmonics_of_fractional_scales():
    mask = harmonic_mask(40, 2.5, 1.5)
    assert mask[16, 0] > 0.9 and mask[0, 16] > 0.9  # 1/2.5 cycles/px = bin 16 of 40
    assert mask[0, 0] < 1e-3 and mask[8, 8] < 1e-3


def test_phase_bias_loss_sees_a_fixed_pattern_not_zero_mean_error():
    torch.manual_seed(0)
    coords = torch.rand(8, 400, 2) * 20  # LR coordinates of the queries
    target = torch.rand(8, 400, 3)
    phase_x = coords[..., :1] - coords[..., :1].round()
    pattern = 0.01 * torch.sign(phase_x).expand(-1, -1, 3)  # left half of every LR pixel
    noise = 0.01 * torch.randn(8, 400, 3)
    assert phase_bias_loss(target + pattern, target, coords) > 0.008
    assert phase_bias_loss(target + noise, target, coords) < 0.004


def test_phase_bias_per_window_sees_a_pattern_whose_sign_follows_the_content():
    torch.manual_seed(0)
    coords = torch.rand(8, 400, 2) * 20
    target = torch.rand(8, 400, 3)
    sign = torch.tensor([1.0, -1.0] * 4)[:, None, None]  # bright crops +, dark crops -
    phase_x = coords[..., :1] - coords[..., :1].round()
    pattern = 0.01 * sign * torch.sign(phase_x).expand(-1, -1, 3)
    assert phase_bias_loss(target + pattern, target, coords) < 0.004  # pools to ~nothing
    assert phase_bias_loss(target + pattern, target, coords, per_window=True) > 0.008
    offset = target + 0.05  # a crop's overall offset is not a grid pattern
    assert phase_bias_loss(offset, target, coords, per_window=True) < 1e-6
