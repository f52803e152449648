"""Adversarial fine-tuning (``sirenup train --gan``): the "GAN" of LIIF-GAN.

The generator (the LiifSiren being trained) decodes a dense window of HR pixels from each LR
crop, at a scale drawn per batch, so the patch discriminator judges real spatial structure
against the matching HR crop. Generator loss:

    lambda_pix * L1  +  lambda_adv * adversarial  +  lambda_fm * feature matching
                     +  lambda_freq * spectral amplitude  +  lambda_tex * texture energy
                     +  lambda_lf * low-frequency error  +  lambda_kurt * detail kurtosis

- adversarial: relativistic-average (ESRGAN) or hinge;
- feature matching: L1 between the discriminator's own intermediate activations on the fake
  and on the real window (no pretrained network: users and CI cannot download VGG or LPIPS);
- spectral amplitude: L1 between the log-amplitude spectra of fake and real windows, which
  asks for as much fine detail as the photo has without asking for it at the same place;
- texture energy: per window, |log| of the ratio of the fake's energy above the LR Nyquist
  frequency to the photo's (what ``texture_ratio`` measures): detail where the photo has it,
  none where it has none, whatever its phase. Unlike the spectrum's log amplitudes, whose
  per-bin L1 is least at the median of a random texture's amplitudes (below their mean),
  one sum per window is not biased toward less energy.
- low-frequency error: L1 of the error's part below the LR Nyquist frequency, the part of the
  output that the LR image determines. With a small lambda_pix, fine detail is left to the
  adversary and the texture losses while everything coarser stays faithful.
- detail kurtosis: per window, |log| of the ratio of the fake's to the photo's kurtosis of
  fine detail (luma less its 3x3 mean). The same energy can come as dense grain (a photo's
  skin or sky: kurtosis ~3) or as sparse bright specks (far higher); the texture losses
  cannot tell them apart, this one can.

Generator and discriminator have their own Adam optimizers and learning rates; an exponential
moving average (EMA) of the generator's weights is what validation scores and export writes.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from sirenup.imaging.imageio import LUMA
from sirenup.models.coords import phase_in_pixel
from sirenup.models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from sirenup.training.configs import LOSSES, GanConfig  # noqa: F401 (re-exported)

LOW_PASS = 4  # --lambda-pix-low compares averages of LOW_PASS x LOW_PASS output pixels


# -- losses ----------------------------------------------------------------------------------
def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss of the discriminator given its logits on real and on (detached) fake windows."""
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    real_rel, fake_rel = real - fake.mean(), fake - real.mean()
    return 0.5 * (F.binary_cross_entropy_with_logits(real_rel, torch.ones_like(real_rel))
                  + F.binary_cross_entropy_with_logits(fake_rel, torch.zeros_like(fake_rel)))


def generator_adversarial_loss(real: torch.Tensor, fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Adversarial loss of the generator; ``real`` logits carry no gradient."""
    if kind == "hinge":
        return -fake.mean()
    real_rel, fake_rel = real - fake.mean(), fake - real.mean()
    return 0.5 * (F.binary_cross_entropy_with_logits(real_rel, torch.zeros_like(real_rel))
                  + F.binary_cross_entropy_with_logits(fake_rel, torch.ones_like(fake_rel)))


def feature_matching_loss(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 between the discriminator's activations on fake and real, layer by layer."""
    return sum(F.l1_loss(f, r.detach()) for f, r in zip(fake, real, strict=True)) / len(fake)


def _hann2d(height: int, width: int, device, dtype) -> torch.Tensor:
    """(height, width) 2-D Hann window (symmetric, as numpy's ``hanning``)."""
    rows, cols = (torch.hann_window(n, periodic=False, device=device, dtype=dtype)
                  for n in (height, width))
    return rows[:, None] * cols[None, :]


def log_amplitude(images: torch.Tensor, floor: float = 1.0) -> torch.Tensor:
    """(B, 3, H, W) -> log(1 + |FFT| / floor) of each channel, mean removed, Hann-windowed.

    Amplitudes well below ``floor`` count linearly, those above it logarithmically. In a 64 px
    window of a [0, 1] photo (orthonormal FFT) the bins above a x4 LR Nyquist frequency hold
    amplitudes of about 3e-4 to 3e-2 (median 1e-3): with floor 1 they count linearly and
    hardly at all next to the low frequencies, with floor 1e-3 each octave counts alike.
    """
    x = images - images.mean(dim=(-2, -1), keepdim=True)
    x = x * _hann2d(*images.shape[-2:], images.device, images.dtype)
    return torch.log1p(torch.fft.rfft2(x, norm="ortho").abs() / floor)


def spectral_loss(fake: torch.Tensor, real: torch.Tensor, floor: float = 1.0) -> torch.Tensor:
    """L1 between log-amplitude spectra: fine detail of the right strength, at any phase."""
    return F.l1_loss(log_amplitude(fake, floor), log_amplitude(real, floor))


FLAT_RMS = 0.5 / 255  # rms detail (an 8-bit half level) below which a window is flat: the
# floor of the texture-energy and detail-kurtosis losses, so rounding noise does not count


def _luma(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) -> (B, 1, h, w) BT.601 luma (``imaging.imageio.LUMA``)."""
    return (images * images.new_tensor(LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def radial_frequency(h: int, w: int, device, half: bool = False) -> torch.Tensor:
    """sqrt(fx^2 + fy^2) in cycles per pixel of each bin of an h x w ``fft2``: (h, w); with
    ``half``, of an ``rfft2`` (h, w // 2 + 1)."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = (torch.fft.rfftfreq(w, device=device) if half else torch.fft.fftfreq(w, device=device))
    return (fy.square() + fx[None, :].square()).sqrt()


def high_frequency_energy(images: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, 3, h, w) windows -> (B,) energy of their luma above 0.5 / scale cycles per pixel
    (the LR Nyquist frequency), as ``evaluation.metrics.texture_energies`` counts it: BT.601
    luma, mean removed, times a 2-D Hann window, |FFT|^2 summed over radial frequency."""
    luma = _luma(images)[:, 0]  # (B, h, w)
    luma = luma - luma.mean(dim=(-2, -1), keepdim=True)
    h, w = luma.shape[-2:]
    power = torch.fft.fft2(luma * _hann2d(h, w, luma.device, luma.dtype)).abs().square()
    above = radial_frequency(h, w, luma.device) >= 0.5 / scale
    return (power * above).sum(dim=(-2, -1))


def texture_energy_loss(fake: torch.Tensor, real: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean over windows of |log((E_fake + f) / (E_real + f))|, E the energy above the LR
    Nyquist frequency (``high_frequency_energy``), f that of FLAT_RMS-rms detail (so a
    flat window's rounding noise does not count)."""
    h, w = fake.shape[-2:]
    floor = FLAT_RMS ** 2 * h * w * (3 / 8) ** 2  # (3/8)^2: a 2-D Hann window's mean square
    e_fake = high_frequency_energy(fake, scale)
    e_real = high_frequency_energy(real, scale)
    return (torch.log(e_fake + floor) - torch.log(e_real + floor)).abs().mean()


def low_frequency_loss(fake: torch.Tensor, real: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean |error| of (B, 3, h, w) windows after an ideal radial low-pass at 0.5 / scale
    cycles per pixel (the LR Nyquist frequency, ``high_frequency_energy``'s edge), so the
    error the LR could have told apart counts and invented detail above it does not."""
    h, w = fake.shape[-2:]
    below = (radial_frequency(h, w, fake.device, half=True) < 0.5 / scale).to(fake.dtype)
    low = torch.fft.irfft2(torch.fft.rfft2(fake - real) * below, s=(h, w))  # (B, 3, h, w)
    return low.abs().mean()


def detail_kurtosis(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) windows -> (B,) kurtosis E[d^4] / E[d^2]^2 of their fine detail d = luma
    less its 3x3 mean (valid pixels only), as if independent Gaussian detail of
    FLAT_RMS rms (variance f^2) were added: E[d^2] + f^2 and E[d^4] + 6 f^2 E[d^2] +
    3 f^4. A flat window then reads as Gaussian (3), not as whatever its rounding noise does."""
    luma = _luma(images)
    detail = luma[..., 1:-1, 1:-1] - F.avg_pool2d(luma, 3, stride=1)  # (B, 1, h-2, w-2)
    f2 = FLAT_RMS ** 2
    m2 = detail.square().mean(dim=(1, 2, 3))
    m4 = detail.square().square().mean(dim=(1, 2, 3))
    return (m4 + 6 * f2 * m2 + 3 * f2 * f2) / (m2 + f2).square()


def kurtosis_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over windows of |log(kurtosis(fake) / kurtosis(real))| (``detail_kurtosis``)."""
    return (detail_kurtosis(fake).log() - detail_kurtosis(real).log()).abs().mean()


GRID_PHASE_BINS = 4  # per axis: where in its LR pixel an output pixel lies, in quarters


def grid_phase_bins(coords: torch.Tensor, bins: int = GRID_PHASE_BINS) -> torch.Tensor:
    """Each query's phase on the LR pixel grid, as one of bins x bins classes: (B, N, 2) LR
    coordinates -> (B, N) class indices (offset from the nearest LR pixel centre, quantised
    along x and along y)."""
    phase = phase_in_pixel(coords)  # (B, N, 2) in [0, 1)
    index = (phase * bins).long().clamp_(0, bins - 1)
    return index[..., 0] * bins + index[..., 1]


def _detail_energy(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, H*W) squared Laplacian of the luma-like channel mean: where the
    fine detail is, pixel by pixel (rows major, as the dense queries)."""
    grey = images.mean(dim=1, keepdim=True)
    kernel = grey.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    detail = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernel.view(1, 1, 3, 3))
    return detail.square().flatten(1)


def grid_phase_profile(images: torch.Tensor, phase: torch.Tensor,
                       counts: torch.Tensor) -> torch.Tensor:
    """Share of a window's fine-detail energy at each LR-grid phase, over that phase's share
    of the pixels: (B, n_bins), about 1 everywhere for a photo (its detail knows nothing of
    the LR grid), peaked where an upscaler paints dots or edges locked to the LR pixels.
    ``counts`` (B, n_bins): how many pixels fall in each bin."""
    energy = _detail_energy(images)  # (B, N)
    per_bin = torch.zeros_like(counts).scatter_add_(1, phase, energy)
    mean_per_bin = per_bin / counts.clamp(min=1)
    return mean_per_bin / (energy.mean(dim=1, keepdim=True) + 1e-8)


def grid_phase_loss(fake: torch.Tensor, real: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """L1 between the fake's and the real window's grid-phase profiles (bins the window's
    pixels fall in only). Periodic structure on the LR pixel grid (the dotted pattern a small
    upscaler under adversarial pressure paints) costs the generator; real detail does not,
    wherever it is."""
    phase = grid_phase_bins(coords)  # (B, N)
    counts = fake.new_zeros(phase.shape[0], GRID_PHASE_BINS ** 2).scatter_add_(
        1, phase, fake.new_ones(phase.shape))
    used = (counts > 0).to(fake.dtype)
    gap = (grid_phase_profile(fake, phase, counts)
           - grid_phase_profile(real, phase, counts).detach()).abs()
    return (gap * used).sum() / used.sum()


# -- the adversarial half of the training state ----------------------------------------------
class ExponentialAverage:
    """EMA of a model's parameters and buffers, a full copy of the model (what is exported)."""

    def __init__(self, model: nn.Module, *, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for avg, new in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(new.detach(), 1.0 - self.decay)
        for avg, new in zip(self.model.buffers(), model.buffers(), strict=True):
            avg.copy_(new)


class Adversary:
    """Discriminator, its optimizer and the generator's EMA: everything ``--gan`` adds."""

    def __init__(self, cfg: GanConfig, generator: nn.Module, *, device: torch.device):
        self.cfg = cfg
        d_config = PatchDiscriminatorConfig(channels=cfg.d_channels, n_layers=cfg.d_layers)
        self.disc = PatchDiscriminator(config=d_config).to(device)
        self.disc_train = self.disc  # what the D step calls: a DDP wrapper when distributed
        self.optimizer = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr_d, betas=(0.9, 0.99))
        self.ema = ExponentialAverage(generator, decay=cfg.ema)

    def generator_loss(self, fake: torch.Tensor, real: torch.Tensor,
                       coords: torch.Tensor | None = None,
                       scale: float | None = None) -> tuple[torch.Tensor, dict]:
        """Total generator loss on fake/real windows (B, 3, w, w), and its parts; ``coords``
        (B, w*w, 2), the windows' LR coordinates, are needed for the grid-phase loss, the
        batch's ``scale`` for the texture-energy and low-frequency losses."""
        cfg = self.cfg
        self.disc.requires_grad_(False)  # the G step must not touch D's gradients
        try:
            logits, features = self.disc.forward_features(torch.cat([real, fake]))
        finally:
            self.disc.requires_grad_(True)
        n = real.shape[0]
        real_logits, fake_logits = logits[:n].detach(), logits[n:]
        pix = F.l1_loss(fake, real)
        adv = generator_adversarial_loss(real_logits, fake_logits, cfg.loss)
        fm = feature_matching_loss([f[n:] for f in features], [f[:n] for f in features])
        freq = spectral_loss(fake, real, cfg.freq_floor)
        total = cfg.lambda_pix * pix + cfg.lambda_adv * adv + cfg.lambda_fm * fm \
            + cfg.lambda_freq * freq
        parts = {"g_pix": pix.item(), "g_adv": adv.item(), "g_fm": fm.item(),
                 "g_freq": freq.item()}
        optional = (  # weight, then the loss, computed only when its weight is on
            ("pix_low", cfg.lambda_pix_low,
             lambda: F.l1_loss(F.avg_pool2d(fake, LOW_PASS), F.avg_pool2d(real, LOW_PASS))),
            ("grid", cfg.lambda_grid, lambda: grid_phase_loss(fake, real, coords)),
            ("tex", cfg.lambda_tex, lambda: texture_energy_loss(fake, real, scale)),
            ("lf", cfg.lambda_lf, lambda: low_frequency_loss(fake, real, scale)),
            ("kurt", cfg.lambda_kurt, lambda: kurtosis_loss(fake, real)))
        for name, weight, loss in optional:
            if weight > 0:
                value = loss()
                total = total + weight * value
                parts[f"g_{name}"] = value.item()
        parts["g_total"] = total.item()
        return total, parts

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, lr: float) -> dict:
        """One optimizer step of D on real vs (detached) fake windows; one forward of both, so
        a DistributedDataParallel D sees exactly one forward per backward."""
        n = real.shape[0]
        logits = self.disc_train(torch.cat([real, fake.detach()]))
        loss = discriminator_loss(logits[:n], logits[n:], self.cfg.loss)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"d_loss": loss.item(), "d_real": logits[:n].mean().item(),
                "d_fake": logits[n:].mean().item()}

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.model.state_dict(), "config": self.cfg.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.model.load_state_dict(state["ema"])
