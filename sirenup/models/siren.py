"""Sine layers with the SIREN initialisation (Sitzmann et al., 2020).

A sine layer computes ``sin(w0 * (x @ W.T + b))``. SIREN's initialisation keeps the
pre-activations of every layer roughly uniform in [-pi/2 * ..., ...] so that depth does not
blow the signal up or collapse it:

- first layer:  W ~ U(-1/n, 1/n)
- hidden layer: W ~ U(-sqrt(6/n)/w0, sqrt(6/n)/w0)

where n is the fan-in. ``w0`` scales the frequencies the layer can represent.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def siren_bound(fan_in: int, w0: float, *, is_first: bool) -> float:
    """Half-width of the uniform distribution SIREN draws weights from."""
    if is_first:
        return 1.0 / fan_in
    return math.sqrt(6.0 / fan_in) / w0


def siren_init_(weight: torch.Tensor, *, fan_in: int, w0: float, is_first: bool) -> None:
    """Initialise ``weight`` in place with SIREN's uniform distribution."""
    bound = siren_bound(fan_in, w0, is_first=is_first)
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class SineLayer(nn.Module):
    """``sin(w0 * linear(x))`` with SIREN initialisation."""

    def __init__(self, in_features: int, out_features: int, *, w0: float, is_first: bool = False):
        super().__init__()
        self.w0 = w0
        self.linear = nn.Linear(in_features, out_features)
        siren_init_(self.linear.weight, fan_in=in_features, w0=w0, is_first=is_first)
        siren_init_(self.linear.bias, fan_in=in_features, w0=w0, is_first=is_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return torch.sin(self.w0 * self.linear(x))
