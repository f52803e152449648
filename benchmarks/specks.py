#!/usr/bin/env python
"""Specks: how sparse an upscaler's fine detail is where the picture is flat.

A GAN can put its fine detail on flat skin or sky as dense grain, as a photo has, or as sparse
bright specks; the texture ratio counts the same energy either way. This script measures the
difference: per image (the protocol's LR, ../shared/data/SOURCES.md), in the flat part (where
the bicubic upscale varies by under ``FLAT_RMS`` levels rms in 9x9 windows, the border left
out), the excess kurtosis of fine detail, luma less its Gaussian blur (sigma 1). A Gaussian
grain scores 0, sparse specks far more. Reported: the median and mean over the images, for the
photos themselves (HR) and for each model. Deliberately not the training loss's own measure
(``training.gan.detail_kurtosis``: per window, luma less its 3x3 mean), so that a model trained
with ``--lambda-kurt`` is not scored by the number it was fitted to.

    python benchmarks/specks.py --models sirenup-base,sirenup-gan
    python benchmarks/specks.py --models sirenup-gan,runs/x/model.safetensors --scale 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VAL = REPO.parent / "shared" / "data" / "val"
FLAT_RMS = 2.0  # 8-bit levels: a 9x9 window of the bicubic upscale below this is flat
BORDER = 8  # output pixels left out on each side


def luma(image) -> np.ndarray:
    from sirenup.evaluation.metrics import rgb_to_y

    return rgb_to_y(np.asarray(image, dtype=np.float64))


def flat_mask(smooth: np.ndarray) -> np.ndarray:
    """Where ``smooth`` (a luma image) varies by under FLAT_RMS rms in 9x9 around each pixel."""
    detail = smooth - gaussian_filter(smooth, 2.0)
    mask = uniform_filter(detail * detail, 9) < FLAT_RMS ** 2  # mean square: no sqrt of a -0
    mask[:BORDER], mask[-BORDER:], mask[:, :BORDER], mask[:, -BORDER:] = False, False, False, False
    return mask


def detail_excess_kurtosis(y: np.ndarray, mask: np.ndarray) -> float:
    """Excess kurtosis of ``y`` less its sigma-1 Gaussian blur, over ``mask`` (nan: too few
    pixels, or no detail at all)."""
    d = (y - gaussian_filter(y, 1.0))[mask]
    if d.size < 100:
        return float("nan")
    d = d - d.mean()
    m2 = float(np.mean(d * d))
    return float(np.mean(d ** 4) / (m2 * m2) - 3.0) if m2 > 0 else float("nan")


def measure(models: Sequence[str], val_dir: Path, sets: Sequence[str], scale: float) -> dict:
    """{"per_image": {image: {method: excess kurtosis}}, "flat_share": {image: share}}."""
    import torch
    from PIL import Image

    from sirenup.evaluation.evaluate import model_upscaler, protocol_case
    from sirenup.evaluation.sets import benchmark_sets
    from sirenup.inference.upscaler import Upscaler

    upscalers = {m: model_upscaler(Upscaler(m).model) for m in models}
    found = benchmark_sets(val_dir)
    missing = [s for s in sets if s not in found]
    if missing:
        raise ValueError(f"{val_dir}: no set {', '.join(missing)} (found: {', '.join(found)})")
    per_image, flat_share = {}, {}
    with torch.inference_mode():
        for set_name in sets:
            for path in found[set_name]:
                case = protocol_case(path, scale, None)
                mask = flat_mask(luma(case.lr.resize(case.hr.size, Image.BICUBIC)))
                key = f"{set_name}/{path.stem}"
                flat_share[key] = float(mask.mean())
                scores = {"HR": detail_excess_kurtosis(luma(case.hr), mask)}
                for name, upscale in upscalers.items():
                    scores[name] = detail_excess_kurtosis(luma(upscale(case.lr, case.hr.size)),
                                                          mask)
                per_image[key] = scores
    return {"per_image": per_image, "flat_share": flat_share}


def summary(result: dict) -> dict[str, dict[str, float]]:
    """{method: {"median": ..., "mean": ...}} over the images with a finite score."""
    methods = next(iter(result["per_image"].values())).keys()
    out = {}
    for method in methods:
        values = [s[method] for s in result["per_image"].values() if np.isfinite(s[method])]
        out[method] = {"median": statistics.median(values) if values else float("nan"),
                       "mean": statistics.fmean(values) if values else float("nan"),
                       "images": len(values)}
    return out


def markdown(table: dict[str, dict[str, float]], scale: float) -> str:
    lines = [f"Excess kurtosis of fine detail in flat areas, x{scale:g} (Gaussian grain 0; "
             "sparse specks far above):", "",
             "| method | median | mean | images |", "|---|---:|---:|---:|"]
    for method, row in table.items():
        lines.append(f"| {method} | {row['median']:.1f} | {row['mean']:.1f} | {row['images']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="sirenup-base,sirenup-gan",
                        help="comma-separated registry names or weights paths")
    parser.add_argument("--val", type=Path, default=DEFAULT_VAL, help="benchmark folder")
    parser.add_argument("--sets", default="Set5,Set14", help="comma-separated set names")
    parser.add_argument("--scale", type=float, default=4.0, help="upscale factor (default 4)")
    parser.add_argument("--json", type=Path, dest="json_out", help="write per-image numbers")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if not models or not sets:
        parser.error("give at least one model and one set")
    if not args.scale > 1:
        parser.error("--scale must be above 1")
    if not args.val.is_dir():
        parser.error(f"--val {args.val}: not a folder")
    result = measure(models, args.val, sets, args.scale)
    table = summary(result)
    print(markdown(table, args.scale))
    if args.json_out:
        args.json_out.write_text(json.dumps({"command": sys.argv, "summary": table, **result},
                                            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
