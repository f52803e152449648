"""Realistic degradations of training LR crops (``sirenup train --degrade real``).

Photos people upscale are JPEGs from phones and the web, resized before, sometimes noisy or
blurred. A model trained only on clean bicubic downscales sharpens those artefacts; one trained
on LR crops that went through such a pipeline learns to remove them. The HR target stays clean.

The pipeline follows the published "second-order" recipes (Real-ESRGAN): for half the crops a
first round at an intermediate size (resize with a random method and factor, blur, noise, JPEG)
and a resize to the LR size, for the others the plain bicubic LR (most web photos were
downscaled once, then saved as JPEG: a first round on every crop left the model sharpening
such inputs too much); then a second round (blur, noise) and a final JPEG. Every random draw
comes from the ``torch.Generator`` passed in, so a seed reproduces the batch exactly; blur and
noise are batched tensor ops, JPEG is Pillow's encoder on the small crops.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sirenup.training.configs import DegradeConfig  # noqa: F401 (re-exported)

RESIZE_MODES = ("bilinear", "bicubic", "area")


def _uniform(gen: torch.Generator, low: float, high: float, n: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def _chance(gen: torch.Generator, prob: float, n: int) -> torch.Tensor:
    """(n,) bool: which of n crops take a step of probability ``prob``."""
    return torch.rand(n, generator=gen) < prob


def gaussian_kernels(sigma_x: torch.Tensor, sigma_y: torch.Tensor, angle: torch.Tensor,
                     size: int) -> torch.Tensor:
    """Normalised 2-D Gaussian kernels, rotated by ``angle``: (n,) params -> (n, size, size)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(r, r, indexing="ij")  # (k, k)
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u = cos * x + sin * y  # coordinates along the kernel's own axes
    v = -sin * x + cos * y
    k = torch.exp(-0.5 * ((u / sigma_x[:, None, None]) ** 2 + (v / sigma_y[:, None, None]) ** 2))
    return (k / k.sum(dim=(1, 2), keepdim=True)).float()


def blur(images: torch.Tensor, which: torch.Tensor, sigma: tuple[float, float], aniso_prob: float,
         gen: torch.Generator, *, pixel: float = 1.0) -> torch.Tensor:
    """Blur the crops ``which`` (n,) of images (n, 3, h, w) with random Gaussian kernels whose
    sigma is drawn in LR pixels (``pixel`` = size of an LR pixel in this image's pixels)."""
    n = images.shape[0]
    sx = _uniform(gen, *sigma, n) * pixel
    sy = torch.where(_chance(gen, aniso_prob, n), _uniform(gen, *sigma, n) * pixel, sx)
    angle = _uniform(gen, 0.0, math.pi, n)
    if not bool(which.any()):
        return images
    size = 2 * math.ceil(3 * float(torch.maximum(sx, sy)[which].max())) + 1
    size = min(size, 2 * (min(images.shape[-2:]) // 2) - 1)  # a kernel no larger than the crop
    kernels = gaussian_kernels(sx, sy, angle, size)  # (n, k, k)
    weight = kernels.repeat_interleave(3, 0).unsqueeze(1)  # (n*3, 1, k, k): one per channel
    pad = size // 2
    x = F.pad(images.reshape(1, -1, *images.shape[-2:]), (pad,) * 4, mode="reflect")
    blurred = F.conv2d(x, weight.to(images.dtype), groups=weight.shape[0]).view_as(images)
    return torch.where(which[:, None, None, None], blurred, images)


def add_noise(images: torch.Tensor, which: torch.Tensor, cfg_sigma: tuple[float, float],
              cfg: DegradeConfig, gen: torch.Generator) -> torch.Tensor:
    """Gaussian (colour or grey) or Poisson noise on the crops ``which``; values stay in [0, 1].

    Noise is drawn only for the chosen crops (drawing it for all cost a third of a step).
    """
    index = torch.nonzero(which).flatten()
    n = index.numel()
    if n == 0:
        return images
    x = images[index]  # (n, 3, h, w)
    sigma = (_uniform(gen, *cfg_sigma, n) / 255.0).float()[:, None, None, None]
    grey = _chance(gen, cfg.grey_noise_prob, n)[:, None, None, None]
    poisson = _chance(gen, cfg.poisson_prob, n)
    peak = torch.exp(_uniform(gen, *(math.log(p) for p in cfg.poisson_peak), n)).float()
    colour_noise = torch.randn(x.shape, generator=gen)
    grey_noise = torch.randn((n, 1, *x.shape[-2:]), generator=gen).expand_as(x)
    noisy = x + sigma * torch.where(grey, grey_noise, colour_noise)
    if bool(poisson.any()):
        p = peak[poisson][:, None, None, None]
        noisy[poisson] = torch.poisson(x[poisson].clamp(0, 1) * p, generator=gen) / p
    out = images.clone()
    out[index] = noisy.clamp_(0, 1)
    return out


def jpeg(images: torch.Tensor, which: torch.Tensor, quality: tuple[int, int],
         gen: torch.Generator) -> torch.Tensor:
    """Round-trip the crops ``which`` through Pillow's JPEG encoder at a random quality."""
    n = images.shape[0]
    qualities = torch.randint(quality[0], quality[1] + 1, (n,), generator=gen).tolist()
    out = images.clone()
    for i in torch.nonzero(which).flatten().tolist():
        out[i] = jpeg_round_trip(images[i], qualities[i])
    return out


def jpeg_round_trip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """(3, h, w) in [0, 1] -> the same after JPEG at ``quality`` (4:2:0, Pillow's default)."""
    array = image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        back = np.asarray(decoded.convert("RGB"))
    return torch.from_numpy(back.copy()).permute(2, 0, 1).float().div_(255.0)


def resize(images: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Resize the batch to size x size with a random method (antialiased when shrinking)."""
    mode = RESIZE_MODES[int(torch.randint(0, len(RESIZE_MODES), (1,), generator=gen))]
    if mode == "area":
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode=mode, antialias=True,
                         align_corners=False).clamp_(0, 1)


def degrade(hr: torch.Tensor, lr_size: int, cfg: DegradeConfig,
            gen: torch.Generator) -> torch.Tensor:
    """HR crops (B, 3, S, S) in [0, 1] -> degraded LR crops (B, 3, p, p), not yet 8-bit.

    Crops drawn as "clean" get exactly the protocol's antialiased bicubic LR.
    """
    n = hr.shape[0]
    clean = F.interpolate(hr, size=(lr_size, lr_size), mode="bicubic", antialias=True,
                          align_corners=False).clamp_(0, 1)
    degraded = ~_chance(gen, cfg.clean_prob, n)
    first = _chance(gen, cfg.first_prob, n) & degraded
    x = clean
    if bool(first.any()):  # round 1 at an intermediate size around the LR size
        mid = max(8, round(lr_size * float(_uniform(gen, *cfg.resize_range))))
        y = resize(hr[first], mid, gen)
        pixel = mid / lr_size  # one LR pixel, in this image's pixels
        m = y.shape[0]
        y = blur(y, _chance(gen, cfg.blur_prob, m), cfg.blur_sigma, cfg.aniso_prob, gen,
                 pixel=pixel)
        y = add_noise(y, _chance(gen, cfg.noise_prob, m), cfg.noise_sigma, cfg, gen)
        y = jpeg(y, _chance(gen, cfg.jpeg_prob, m), cfg.jpeg_quality, gen)
        x = clean.clone()
        x[first] = resize(y, lr_size, gen)
    # Round 2 at the LR size, then the JPEG a saved photo went through.
    second = _chance(gen, cfg.second_prob, n)
    x = blur(x, second & _chance(gen, cfg.second_blur_prob, n), cfg.second_blur_sigma,
             cfg.aniso_prob, gen)
    x = add_noise(x, second & _chance(gen, cfg.second_noise_prob, n), cfg.second_noise_sigma,
                  cfg, gen)
    x = jpeg(x, _chance(gen, cfg.final_jpeg_prob, n) & degraded, cfg.jpeg_quality, gen)
    return torch.where(degraded[:, None, None, None], x, clean)
