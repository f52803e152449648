"""PatchGAN discriminator (Isola et al., 2017) for adversarial fine-tuning.

It scores overlapping patches of an RGB image as real or upscaled, so the generator is pushed
towards realistic local texture rather than a single global verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class PatchDiscriminatorConfig:
    channels: int = 32  # width of the first conv; doubles per stage (32: cheap on a CPU)
    n_layers: int = 3  # stride-2 stages: the receptive field grows to 70x70 px with 3
    spectral_norm: bool = True  # stabilises GAN training without batch statistics

    def to_dict(self) -> dict:
        return asdict(self)


class PatchDiscriminator(nn.Module):
    def __init__(self, *, config: PatchDiscriminatorConfig | None = None):
        super().__init__()
        self.config = config or PatchDiscriminatorConfig()
        c = self.config
        norm = nn.utils.spectral_norm if c.spectral_norm else (lambda m: m)
        # Spectral norm on the inner layers only: on all of them the logits stay so small that
        # D barely learns (seen: D's loss stuck at log 2 for 1500 steps), as in Real-ESRGAN.
        layers: list[nn.Module] = [nn.Conv2d(3, c.channels, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2)]
        width = c.channels
        for i in range(1, c.n_layers + 1):
            out = c.channels * min(2 ** i, 8)
            stride = 2 if i < c.n_layers else 1
            layers += [norm(nn.Conv2d(width, out, 4, stride=stride, padding=1)),
                       nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> real/fake logits per patch (B, 1, H', W')."""
        return self.net(image * 2.0 - 1.0)

    def forward_features(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the activation after every LeakyReLU (for feature matching):
        (B, 3, H, W) -> (B, 1, H', W'), [(B, C_i, H_i, W_i), ...] from shallow to deep."""
        x, features = image * 2.0 - 1.0, []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                features.append(x)
        return x, features
