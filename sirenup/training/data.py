"""Training batches: decode every photo once, then cut random crops from memory.

A batch is (LR crops, query coords, cells, HR values at the queries). The scale is drawn once
per batch, so all crops in it have the same size and the LR is made in one call by
antialiased bicubic downscaling (torch's antialias matches Pillow's BICUBIC, the protocol's LR),
then rounded to 8-bit levels like a saved LR image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from sirenup.imaging.imageio import open_image
from sirenup.models.coords import cell_of, centre_coords

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(dirs: list[Path]) -> list[Path]:
    files = []
    for d in dirs:
        if d.is_file():
            files.append(d)
            continue
        # regular files only: a FIFO named x.png would block the open for ever
        files.extend(p for p in sorted(d.rglob("*"))
                     if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return files


def load_images(dirs: list[Path], *, min_side: int) -> tuple[list[torch.Tensor], list[str]]:
    """Decode each image once as uint8 (3, H, W). Unreadable or too small -> warning, skipped."""
    images, warnings = [], []
    for path in list_images(dirs):
        try:
            with open_image(path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError,
                Image.DecompressionBombError) as error:  # one bad photo never stops a run
            warnings.append(f"skipped {path}: not a readable image ({error})")
            continue
        if min(rgb.shape[:2]) < min_side:
            warnings.append(f"skipped {path}: {rgb.shape[1]}x{rgb.shape[0]} is smaller than "
                            f"{min_side}px on a side")
            continue
        images.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous())
    return images, warnings


@dataclass
class Batch:
    lr: torch.Tensor  # (B, 3, p, p) in [0, 1]
    coords: torch.Tensor  # (B, Q, 2) LR pixel coordinates (x, y)
    cell: torch.Tensor  # (B, 2) output pixel size in LR pixels (h, w)
    target: torch.Tensor  # (B, Q, 3) HR values in [0, 1]
    scale: float
    window: int = 0  # > 0: the targets are a dense window x window grid, rows major
    halo: int = 0  # the dense queries extend ``halo`` pixels past the window on every side

    def window_coords(self) -> torch.Tensor:
        """A dense batch's query coords without the halo: (B, window*window, 2), rows major."""
        full = self.window + 2 * self.halo
        grid = self.coords.view(self.coords.shape[0], full, full, 2)
        h = self.halo
        return grid[:, h:full - h, h:full - h].reshape(self.coords.shape[0], -1, 2)


def as_image(values: torch.Tensor, window: int) -> torch.Tensor:
    """Dense query values (B, window*window, 3), rows major -> (B, 3, window, window)."""
    return values.transpose(1, 2).reshape(values.shape[0], 3, window, window)


Degrade = Callable[..., torch.Tensor]  # (HR crops, LR size p, gen=generator) -> LR crops


class CropSampler:
    """Random (LR crop, HR queries) batches from images held in memory."""

    def __init__(self, images: list[torch.Tensor], *, patch: int, batch: int, queries: int,
                 scale_min: float, scale_max: float, window: int = 0, halo: int = 0,
                 degrade: Degrade | None = None):
        if not images:
            raise ValueError("no training images")
        self.images = images
        self.patch, self.batch, self.queries = patch, batch, queries
        self.scale_min, self.scale_max = scale_min, scale_max
        self.window = window  # > 0: decode a dense HR window per crop (--gan, a refiner)
        self.halo = halo  # decoded context around the window (a refiner's), not supervised
        self.degrade = degrade  # None: the clean bicubic protocol
        areas = torch.tensor([im.shape[1] * im.shape[2] for im in images], dtype=torch.float64)
        self.image_weights = areas / areas.sum()  # big photos hold more distinct crops

    def _crop(self, image: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
        _, h, w = image.shape
        y = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        x = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        crop = image[:, y:y + size, x:x + size]
        if torch.rand(1, generator=gen) < 0.5:
            crop = crop.flip(-1)
        if torch.rand(1, generator=gen) < 0.5:
            crop = crop.flip(-2)
        if torch.rand(1, generator=gen) < 0.5:
            crop = crop.transpose(-1, -2)
        return crop

    def sample(self, gen: torch.Generator) -> Batch:
        u = float(torch.rand(1, generator=gen))
        hr_size = round(self.patch * (self.scale_min + u * (self.scale_max - self.scale_min)))
        hr_size = max(hr_size, self.patch)
        picks = torch.multinomial(self.image_weights, self.batch, replacement=True, generator=gen)
        hr = torch.stack([self._crop(self.images[i], hr_size, gen) for i in picks.tolist()])
        hr = hr.float().div_(255.0)  # (B, 3, S, S)
        lr = self._low_res(hr, gen)
        ratio = cell_of((self.patch, self.patch), (hr_size, hr_size))[0]  # LR per HR pixel
        window = min(self.window, hr_size - 2 * self.halo) if self.window else 0
        if window:
            xs, ys, idx = self._dense_queries(hr_size, window, gen)
        else:
            xs, ys, idx = self._random_queries(hr_size, gen)
        coords = torch.stack([centre_coords(xs, self.patch, hr_size),
                              centre_coords(ys, self.patch, hr_size)], dim=-1).float()
        flat = hr.flatten(2)  # (B, 3, S*S)
        target = torch.gather(flat, 2, idx.unsqueeze(1).expand(-1, 3, -1)).transpose(1, 2)
        cell = torch.full((self.batch, 2), ratio)
        return Batch(lr=lr, coords=coords, cell=cell, target=target, scale=hr_size / self.patch,
                     window=window, halo=self.halo if window else 0)

    def _low_res(self, hr: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B, 3, S, S) HR -> (B, 3, p, p) LR rounded to 8-bit levels, as in a saved file."""
        if self.degrade is not None:
            lr = self.degrade(hr, self.patch, gen=gen)
        else:
            lr = F.interpolate(hr, size=(self.patch, self.patch), mode="bicubic",
                               antialias=True, align_corners=False)
        return lr.clamp_(0, 1).mul_(255).round_().div_(255)

    def _random_queries(self, hr_size: int, gen: torch.Generator):
        """``queries`` distinct random HR pixels per crop -> xs, ys, flat indices (B, Q)."""
        n_pix = hr_size * hr_size
        q = min(self.queries, n_pix)
        idx = torch.stack([torch.randperm(n_pix, generator=gen)[:q] for _ in range(self.batch)])
        return idx % hr_size, idx // hr_size, idx

    def _dense_queries(self, hr_size: int, side: int, gen: torch.Generator):
        """Every HR pixel of a random side x side square per crop and its halo (inside the
        crop), rows major -> xs, ys of the square with its halo, flat indices of the square."""
        h = self.halo
        oy = torch.randint(h, hr_size - side - h + 1, (self.batch, 1), generator=gen)
        ox = torch.randint(h, hr_size - side - h + 1, (self.batch, 1), generator=gen)

        def grid(size: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
            r = torch.arange(start, start + size)
            return (ox + r[None, :].expand(size, size).reshape(1, -1),  # (B, size*size)
                    oy + r[:, None].expand(size, size).reshape(1, -1))

        xs, ys = grid(side + 2 * h, -h)
        inner_x, inner_y = grid(side, 0)
        return xs, ys, inner_y * hr_size + inner_x
