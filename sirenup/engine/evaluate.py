"""Score upscalers on benchmark folders with the protocol of ``metrics``.

A validation folder holds images directly (one set) or one subfolder per set (Set5/, Set14/).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sirenup.engine.metrics import protocol_pair, psnr_y
from sirenup.engine.tiler import upscale_tensor
from sirenup.models.patch_siren import LiifSiren

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

Upscale = Callable[[Image.Image, tuple[int, int]], Image.Image]  # (LR, (W, H)) -> SR


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (1, 3, H, W) float in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> 8-bit RGB PIL image (rounded)."""
    array = tensor[0].detach().float().cpu().clamp(0, 1).mul(255).round().byte()
    return Image.fromarray(array.permute(1, 2, 0).numpy(), "RGB")


def model_upscaler(model: LiifSiren, *, device: torch.device | str = "cpu",
                   tile: int = 0) -> Upscale:
    def run(lr: Image.Image, size: tuple[int, int]) -> Image.Image:
        out = upscale_tensor(model, pil_to_tensor(lr).to(device), (size[1], size[0]), tile=tile)
        return tensor_to_pil(out)
    return run


def pillow_upscaler(resample: int) -> Upscale:
    return lambda lr, size: lr.resize(size, resample)


def benchmark_sets(val_dir: Path) -> dict[str, list[Path]]:
    """{set name: image paths}; a folder of images is one set named after the folder."""
    val_dir = Path(val_dir)
    subsets = sorted(p for p in val_dir.iterdir() if p.is_dir())
    folders = subsets or [val_dir]
    return {
        f.name: sorted(p for p in f.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for f in folders
    }


def score_images(upscale: Upscale, paths: list[Path], scale: float) -> list[float]:
    """Per-image Y-PSNR at ``scale`` with the protocol (HR crop, Pillow-bicubic LR)."""
    scores = []
    for path in paths:
        with Image.open(path) as im:
            hr, lr = protocol_pair(im, scale)
        scores.append(psnr_y(upscale(lr, hr.size), hr, scale))
    return scores


def evaluate_sets(model: LiifSiren, val_dir: Path, scales, *, device="cpu") -> dict:
    """{set: {"x2": mean PSNR-Y, ...}} for the model on every set of ``val_dir``."""
    upscale = model_upscaler(model, device=device)
    with torch.no_grad():
        return {
            name: {f"x{s:g}": round(float(np.mean(score_images(upscale, paths, s))), 3)
                   for s in scales}
            for name, paths in benchmark_sets(val_dir).items()
        }
