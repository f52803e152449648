"""Score upscalers on benchmark folders with the protocol of ``metrics``.

A validation folder holds images directly (one set) or one subfolder per set (Set5/, Set14/).
Per image and scale: Y-PSNR, SSIM (Y) and the texture ratio (whole and per octave band).
``evaluate_table`` gives the training loop its table (means per set and scale), ``score_cases``
the per-image rows. Protocol pairs are cached (decoded once per process), the LR optionally
degraded (``degrade_eval``) after the protocol's bicubic downscale.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sirenup.errors import SirenupError
from sirenup.evaluation.degrade_eval import Degradation
from sirenup.evaluation.metrics import (
    energy_ratios,
    grid_lock,
    protocol_pair,
    psnr_y,
    ssim,
    texture_energies,
)
from sirenup.evaluation.sets import (  # noqa: F401 (IMAGE_SUFFIXES: API)
    IMAGE_SUFFIXES,
    benchmark_sets,
    check_sets_hold_images,
)
from sirenup.files import first_line
from sirenup.imaging.imageio import open_image
from sirenup.inference.tiler import upscale_tensor
from sirenup.models.patch_siren import LiifSiren

METRICS = ("psnr_y", "ssim", "texture", "grid_lock")

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


def check_benchmark_folder(val_dir: Path, scales) -> None:
    """SirenupError naming the first image of ``val_dir`` the protocol cannot use at one of
    ``scales`` (unreadable, too small): a training run then fails at its start, not at its
    first validation hours later. The cases it makes are cached for the validations."""
    check_sets_hold_images(val_dir)
    for paths in benchmark_sets(val_dir).values():
        for path in paths:
            for scale in scales:
                try:
                    protocol_case(path, float(scale), None)  # evaluate_table's key
                except Exception as error:
                    raise SirenupError(f"{path}: cannot be scored at x{scale:g} "
                                       f"({first_line(error)})", option="val") from None


@dataclass(frozen=True)
class Case:
    """One benchmark image at one scale: the protocol's HR and LR (degraded if asked), and the
    HR's texture energies (computed once, shared by every upscaler scored on it)."""
    name: str
    scale: float
    hr: Image.Image
    lr: Image.Image
    hr_energies: np.ndarray


@functools.lru_cache(maxsize=96)  # validation reuses the same images every time: decode once
def protocol_case(path: Path, scale: float, degradation: Degradation | None = None) -> Case:
    with open_image(path) as im:
        hr, lr = protocol_pair(im, scale)
    if degradation is not None:
        lr = degradation(lr)
    return Case(Path(path).stem, scale, hr, lr, texture_energies(hr, scale))


def score_output(sr: Image.Image, case: Case, metrics=METRICS) -> dict:
    """{metric: value} of one output against its case's HR. ``texture`` also gives
    ``texture_bands`` (the ratio per ``metrics.texture_bands(scale)`` octave)."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {', '.join(METRICS)}")
    scores: dict = {}
    if "psnr_y" in metrics:
        scores["psnr_y"] = psnr_y(sr, case.hr, case.scale)
    if "ssim" in metrics:
        scores["ssim"] = ssim(sr, case.hr, case.scale)
    if "texture" in metrics:
        ratios = energy_ratios(texture_energies(sr, case.scale), case.hr_energies)
        scores["texture"] = float(ratios[0])
        scores["texture_bands"] = [float(r) for r in ratios[1:]]
    if "grid_lock" in metrics:  # defined at integer scales only: nan elsewhere
        integer = case.scale == int(case.scale) and case.scale >= 2
        scores["grid_lock"] = grid_lock(sr, int(case.scale)) if integer else float("nan")
    return scores


def score_cases(upscale: Upscale, cases: list[Case], metrics=METRICS) -> list[dict]:
    """Per-case scores of one upscaler (``{"image": name, metric: value, ...}``)."""
    return [{"image": case.name, **score_output(upscale(case.lr, case.hr.size), case, metrics)}
            for case in cases]


def evaluate_table(model: LiifSiren | Upscale, val_dir: Path, scales, *, device="cpu",
                   metrics=METRICS, degradation: Degradation | None = None) -> dict:
    """{set: {"x2": {"psnr_y": mean, "ssim": mean, "texture": mean, "texture_bands": [...]}}}.

    ``model``: a LiifSiren (run whole-image on ``device``) or any ``Upscale`` callable (e.g.
    ``pillow_upscaler(Image.BICUBIC)`` for the baseline row). Means are over the set's
    images (the texture ratio too: the mean of per-image ratios, NaNs left out).
    """
    upscale = model_upscaler(model, device=device) if isinstance(model, torch.nn.Module) \
        else model
    table: dict = {}
    with torch.no_grad():
        for name, paths in benchmark_sets(val_dir).items():
            table[name] = {}
            for s in scales:
                cases = [protocol_case(p, float(s), degradation) for p in paths]
                table[name][f"x{s:g}"] = mean_scores(score_cases(upscale, cases, metrics))
    return table


def mean_scores(rows: list[dict]) -> dict:
    """Mean of every metric over per-image rows (rounded: PSNR 3, SSIM and ratios 4 digits);
    grid-lock, whose few bad images matter, as the median and the maximum (``grid_lock_max``).
    """
    means: dict = {}
    for key in (k for k in METRICS if rows and k in rows[0]):
        values = [r[key] for r in rows]
        if key == "grid_lock":
            finite = [v for v in values if not np.isnan(v)]
            means[key] = round(float(np.median(finite)), 4) if finite else float("nan")
            means["grid_lock_max"] = round(max(finite), 4) if finite else float("nan")
            continue
        means[key] = round(_nanmean(values), 3 if key == "psnr_y" else 4)
    if rows and "texture_bands" in rows[0]:
        bands = np.array([r["texture_bands"] for r in rows], dtype=np.float64)
        means["texture_bands"] = [round(_nanmean(column), 4) for column in bands.T]
    return means


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
