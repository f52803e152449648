"""The settings of a training run (``TrainConfig``), of adversarial training (``--gan``) and of
realistic degradations (``--degrade real``), and their checks: each default written once, here.
Torch-free: ``sirenup train`` reads its defaults and checks its options before torch is
imported (``training.loop``, ``training.gan`` and ``training.degrade`` use them)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from sirenup.defaults import DEFAULT_LR
from sirenup.errors import OptionValueError

LOSSES = ("ragan", "hinge")


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    val: str | None = None
    steps: int = 20000
    batch: int = 16
    patch: int = 48  # LR crop side, pixels
    queries: int = 2304  # HR pixels supervised per crop
    scale_min: float = 1.0
    scale_max: float = 4.0
    lr: float = DEFAULT_LR  # the session passes DEFAULT_GAN_LR under --gan
    lr_final: float = 5e-6  # cosine decay ends here
    warmup: int = 300
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    val_every: int = 1000
    val_scales: tuple[float, ...] = (2.0, 3.0, 4.0)
    checkpoint_every: int = 500
    init: str | None = None  # start from these weights (fine-tuning), instead of random
    name: str = "sirenup-custom"  # model name written into the exported weights
    model: dict = field(default_factory=dict)  # LiifSirenConfig overrides
    gan: dict | None = None  # GanConfig values: adversarial training on dense windows
    degrade: dict | None = None  # DegradeConfig values: realistic LR degradations
    log_every: int = 50  # training losses into metrics.jsonl every N steps
    window: int = 44  # HR window side decoded per crop when the model has a refiner
    lambda_grid: float = 0.0  # LR-grid phase loss on those windows (without --gan)
    lambda_phase: float = 0.0  # mean error per LR-grid phase (any batch): no fixed pattern
    lambda_harmonic: float = 0.0  # error near the LR-grid harmonics (dense windows)
    phase_per_window: bool = False  # the phase bias of each crop, not of the batch
    teacher: str | None = None  # distillation: the targets are this model's output, not HR
    teacher_flips: int = 4  # ... averaged over 1, 2 or 4 flips of the input
    teacher_detail: float = 1.0  # ... with its detail above the LR Nyquist times this


@dataclass
class GanConfig:
    window: int = 64  # HR pixels per side of the dense window decoded per crop
    loss: str = "ragan"  # adversarial loss: "ragan" (relativistic average) or "hinge"
    lambda_pix: float = 1.0  # L1 to the HR window: keeps the model faithful
    lambda_pix_low: float = 0.0  # L1 of 4x4 averages: faithful without pinning fine detail
    lambda_adv: float = 0.1  # adversarial term
    lambda_fm: float = 1.0  # feature matching on the discriminator's activations
    lambda_freq: float = 0.5  # log-amplitude spectrum L1: asks for the photo's fine detail
    freq_floor: float = 1.0  # amplitude below which the spectrum loss turns linear (see below)
    lambda_grid: float = 0.0  # LR-grid phase loss: fine detail must not lock to the LR pixels
    lambda_tex: float = 0.0  # |log| of each window's energy above the LR Nyquist vs the photo's
    lambda_lf: float = 0.0  # L1 of the window's error below the LR Nyquist: what the LR holds
    lambda_kurt: float = 0.0  # |log| of each window's fine-detail kurtosis vs the photo's
    lr_d: float = 2e-4  # discriminator learning rate (the generator's is --lr)
    d_channels: int = 32  # discriminator width of its first layer
    d_layers: int = 3  # discriminator stride-2 stages (70x70 receptive field at 3)
    ema: float = 0.999  # EMA decay of the generator's weights (0: export the raw weights)

    @classmethod
    def from_dict(cls, values: dict) -> GanConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def min_side(self) -> int:
        """Smallest window the discriminator can score: 3 pixels after its downsampling."""
        return 3 * 2 ** self.d_layers

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise OptionValueError(f"{self.loss!r}: expected one of {', '.join(LOSSES)}",
                                   option="gan_loss")
        if self.window < self.min_side:
            raise OptionValueError(f"{self.window}: at least {self.min_side} HR pixels (the "
                                   f"discriminator downsamples by {2 ** self.d_layers})",
                                   option="gan_window")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema {self.ema}: expected 0 <= ema < 1")
        for name in ("lambda_pix", "lambda_pix_low", "lambda_adv", "lambda_fm", "lambda_freq",
                     "lambda_grid", "lambda_tex", "lambda_lf", "lambda_kurt", "lr_d"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if not self.freq_floor > 0:
            raise ValueError(f"freq_floor {self.freq_floor}: expected a positive amplitude")


@dataclass
class DegradeConfig:
    clean_prob: float = 0.15  # share of crops left clean (bicubic only): keeps clean quality
    first_prob: float = 0.5  # a first round at an intermediate size; else bicubic to LR size
    resize_range: tuple[float, float] = (0.8, 1.25)  # intermediate size, x the LR size
    blur_prob: float = 0.25  # first round: Gaussian blur
    blur_sigma: tuple[float, float] = (0.2, 1.2)  # in LR pixels
    aniso_prob: float = 0.4  # share of blurs with an anisotropic, rotated kernel
    noise_prob: float = 0.3  # first round: noise
    noise_sigma: tuple[float, float] = (1.0, 15.0)  # Gaussian sigma, 8-bit levels
    grey_noise_prob: float = 0.4  # share of Gaussian noise that is the same in R, G, B
    poisson_prob: float = 0.3  # share of noise that is Poisson (shot noise) instead
    poisson_peak: tuple[float, float] = (50.0, 2000.0)  # photons at white: lower is noisier
    jpeg_prob: float = 0.3  # first round: JPEG
    jpeg_quality: tuple[int, int] = (35, 95)
    second_prob: float = 0.4  # a second round: blur, noise at the LR size
    second_blur_prob: float = 0.2
    second_blur_sigma: tuple[float, float] = (0.2, 1.0)  # in LR pixels
    second_noise_prob: float = 0.5
    second_noise_sigma: tuple[float, float] = (1.0, 15.0)
    final_jpeg_prob: float = 0.8  # the last step: what a saved web photo went through

    @classmethod
    def from_dict(cls, values: dict) -> DegradeConfig:
        known = {f.name: f for f in fields(cls)}
        out = {}
        for key, value in values.items():
            if key in known:
                out[key] = tuple(value) if isinstance(value, list) else value
        return cls(**out)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def validate(self) -> None:
        """Raise ValueError on a probability outside [0, 1] or an inverted or bad range."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("prob"):
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{f.name} = {value}: a probability must be in [0, 1]")
            elif isinstance(value, tuple):
                low, high = value
                if not (math.isfinite(low) and math.isfinite(high)) or low > high or low < 0:
                    raise ValueError(f"{f.name} = {value}: expected 0 <= MIN <= MAX")
        if self.jpeg_quality[0] < 1 or self.jpeg_quality[1] > 100:
            raise ValueError("jpeg_quality must lie within 1..100")
        if self.resize_range[0] <= 0 or self.poisson_peak[0] <= 0:
            raise ValueError("resize_range and poisson_peak must be positive")
