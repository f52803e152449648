"""Distillation from a teacher (``sirenup train --teacher``): a model learns another's output.

The teacher's output is averaged over flips of the input and its fine detail then raised:

    target = mean over flips f of  f⁻¹(teacher(f(LR)))            (1, 2 or 4 flips)
    target += (detail - 1) * (target - gaussian_blur(target, sigma = 0.375 * scale))

Why: a GAN's invented detail is partly consistent (the same edge continued, the same fur
direction, whichever way up the picture is) and partly arbitrary (grain, specks that move
when the picture is flipped). The arbitrary part costs PSNR and reads as noise; averaging the
flips keeps the consistent part and lets the arbitrary one cancel, and the detail gain gives
back the energy the average took (measured: docs/models.md, "sirenup-gan distilled from its
flip ensemble"). The student learns that at the cost of one pass, where the ensemble itself
would cost one per flip at every upscale.

The blur's sigma puts the gain's half-power point near the LR Nyquist frequency (0.5 / scale
cycles per output pixel), so what the LR determines is left as it is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sirenup.models.weights import load_weights

FLIPS = {  # (vertical, horizontal): 2 flips pair the picture with itself turned 180 degrees
    1: ((False, False),),
    2: ((False, False), (True, True)),
    4: ((False, False), (False, True), (True, False), (True, True)),
}
BLUR_SIGMA_PER_SCALE = 0.375  # Gaussian sigma in output pixels, per unit of scale


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, h, w) blurred by a separable Gaussian of ``sigma`` pixels, edges reflected."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    rows = F.pad(images, (0, 0, radius, radius), mode="reflect")
    rows = F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    cols = F.pad(rows, (radius, radius, 0, 0), mode="reflect")
    return F.conv2d(cols, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def raise_detail(images: torch.Tensor, gain: float, scale: float) -> torch.Tensor:
    """(B, C, h, w) with its detail above about the LR Nyquist frequency times ``gain``."""
    if gain == 1.0:
        return images
    blurred = gaussian_blur(images, BLUR_SIGMA_PER_SCALE * scale)
    return blurred + gain * (images - blurred)


def flipped_queries(lr: torch.Tensor, coords: torch.Tensor, full: int, vertical: bool,
                    horizontal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The LR crops (B, 3, h, w) flipped, and a dense window's queries (B, full * full, 2),
    rows major, as the same window of the flipped crop: each point mirrored (pixel centres at
    integers: x -> w - 1 - x) and the grid reordered so that it is rows major there too."""
    h, w = lr.shape[-2:]
    grid = coords.view(coords.shape[0], full, full, 2)
    if horizontal:
        lr, grid = lr.flip(-1), grid.flip(2)
        grid = torch.stack([(w - 1) - grid[..., 0], grid[..., 1]], dim=-1)
    if vertical:
        lr, grid = lr.flip(-2), grid.flip(1)
        grid = torch.stack([grid[..., 0], (h - 1) - grid[..., 1]], dim=-1)
    return lr, grid.reshape(coords.shape[0], -1, 2)


class Teacher:
    """A frozen model whose flip-averaged, detail-raised windows are the training targets."""

    def __init__(self, path: str, *, flips: int, detail: float, device: torch.device):
        if flips not in FLIPS:
            raise ValueError(f"teacher flips {flips}: expected one of {sorted(FLIPS)}")
        if not detail >= 0:
            raise ValueError(f"teacher detail {detail}: expected a gain of 0 or more")
        self.model, self.metadata = load_weights(path, device=device)
        self.model.eval().requires_grad_(False)
        self.flips = FLIPS[flips]
        self.detail = detail

    @property
    def halo(self) -> int:
        return self.model.halo

    @torch.no_grad()
    def target(self, lr: torch.Tensor, coords: torch.Tensor, cell: torch.Tensor, window: int,
               scale: float) -> torch.Tensor:
        """The target of a dense window (B, 3, window, window): ``coords`` (B, N, 2) are its
        queries with the halo, as the student decodes them."""
        full = window + 2 * self.halo
        outputs = []
        for vertical, horizontal in self.flips:
            flipped_lr, flipped = flipped_queries(lr, coords, full, vertical, horizontal)
            out = self.model(flipped_lr, flipped, cell, window)  # (B, 3, window, window)
            back = [dim for dim, on in ((-2, vertical), (-1, horizontal)) if on]
            outputs.append(out.flip(back) if back else out)
        return raise_detail(torch.stack(outputs).mean(dim=0), self.detail, scale)
