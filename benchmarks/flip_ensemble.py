#!/usr/bin/env python
"""Flip ensemble: what `sirenup train --teacher` would distil, scored with the protocol.

A model's output averaged over flips of the input (1, 2 or 4: ``training.teacher.FLIPS``),
then its fine detail raised (``training.teacher.raise_detail``), on each image of the chosen
sets (the protocol's LR, ../shared/data/SOURCES.md): set means of Y-PSNR and texture ratio per
(flips, detail gain). Averaging keeps the detail a model paints whichever way up the picture
is and lets the rest cancel; if that rest is invented detail that costs PSNR, the averaged and
raised output scores above the model's own texture-for-PSNR line (its rows with one flip),
and a student trained on it (``--teacher``) can learn to do the same in one pass.

    python benchmarks/flip_ensemble.py --model sirenup-gan
    python benchmarks/flip_ensemble.py --model runs/x/model.safetensors --gains 1,1.1 --flips 1,4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VAL = REPO.parent / "shared" / "data" / "val"


def flip_outputs(upscale, lr: np.ndarray, size: tuple[int, int],
                 flips: Sequence[tuple[bool, bool]]) -> dict[tuple[bool, bool], np.ndarray]:
    """{(vertical, horizontal): the model's float output (H, W, 3) for ``lr`` so flipped,
    flipped back}; ``upscale(rgb, size)`` is ``Upscaler.upscale_rgb``."""
    outputs = {}
    for vertical, horizontal in flips:
        flipped = lr[::-1] if vertical else lr
        flipped = flipped[:, ::-1] if horizontal else flipped
        out = upscale(np.ascontiguousarray(flipped), size)
        out = out[::-1] if vertical else out
        outputs[vertical, horizontal] = out[:, ::-1] if horizontal else out
    return outputs


def raised_mean(outputs: Sequence[np.ndarray], gain: float, scale: float) -> np.ndarray:
    """The mean of ``outputs`` with its detail times ``gain`` (``teacher.raise_detail``), as
    8-bit integers (what a saved file holds and the protocol scores)."""
    import torch

    from sirenup.training.teacher import raise_detail

    mean = torch.from_numpy(np.mean(outputs, axis=0)).permute(2, 0, 1)[None]
    raised = raise_detail(mean, gain, scale)[0].permute(1, 2, 0).numpy()
    return np.clip(np.round(raised * 255), 0, 255).astype(np.uint8)


def measure(model: str, val_dir: Path, sets: Sequence[str], scale: float,
            flips: Sequence[int], gains: Sequence[float]) -> dict:
    """{set: {"flips/gain": {"psnr_y": [per image], "texture": [per image]}}}."""
    from sirenup.evaluation.evaluate import protocol_case, score_output
    from sirenup.evaluation.sets import benchmark_sets
    from sirenup.inference.upscaler import Upscaler
    from sirenup.training.teacher import FLIPS

    upscaler = Upscaler(model, device="cpu")
    found = benchmark_sets(val_dir)
    missing = [s for s in sets if s not in found]
    if missing:
        raise ValueError(f"{val_dir}: no set {', '.join(missing)} (found: {', '.join(found)})")
    result: dict = {}
    for set_name in sets:
        rows = result.setdefault(set_name, {})
        for path in found[set_name]:
            case = protocol_case(path, scale, None)
            lr = np.asarray(case.lr, dtype=np.float32) / 255
            needed = sorted({flip for n in flips for flip in FLIPS[n]})
            outputs = flip_outputs(upscaler.upscale_rgb, lr, case.hr.size, needed)
            for n in flips:
                for gain in gains:
                    out = raised_mean([outputs[flip] for flip in FLIPS[n]], gain, scale)
                    scores = score_output(out, case, ("psnr_y", "texture"))
                    row = rows.setdefault(f"{n}/{gain:g}", {"psnr_y": [], "texture": []})
                    row["psnr_y"].append(scores["psnr_y"])
                    row["texture"].append(scores["texture"])
    return result


def markdown(result: dict, model: str, scale: float) -> str:
    lines = [f"Flip ensembles of `{model}`, x{scale:g}: Y-PSNR dB (texture ratio), set means", "",
             "| flips / detail gain | " + " | ".join(result) + " |",
             "|---|" + "---|" * len(result)]
    for key in next(iter(result.values())):
        cells = [f"{statistics.fmean(rows[key]['psnr_y']):.3f} "
                 f"({statistics.fmean(rows[key]['texture']):.3f})" for rows in result.values()]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sirenup-gan", help="registry name or weights path")
    parser.add_argument("--val", type=Path, default=DEFAULT_VAL, help="benchmark folder")
    parser.add_argument("--sets", default="Set5,Set14", help="comma-separated set names")
    parser.add_argument("--scale", type=float, default=4.0, help="upscale factor (default 4)")
    parser.add_argument("--flips", default="1,2,4", help="flip counts (1, 2 and/or 4)")
    parser.add_argument("--gains", default="1,1.1,1.2", help="detail gains")
    parser.add_argument("--json", type=Path, dest="json_out", help="write per-image numbers")
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    try:
        flips = sorted({int(v) for v in args.flips.split(",")})
        gains = [float(v) for v in args.gains.split(",")]
    except ValueError:
        parser.error("--flips and --gains take comma-separated numbers")
    if not set(flips) <= {1, 2, 4}:
        parser.error("--flips: 1, 2 or 4")
    if not sets or not gains or min(gains) < 0:
        parser.error("give at least one set and gains of 0 or more")
    if not args.scale > 1:
        parser.error("--scale must be above 1")
    if not args.val.is_dir():
        parser.error(f"--val {args.val}: not a folder")
    result = measure(args.model, args.val, sets, args.scale, flips, gains)
    print(markdown(result, args.model, args.scale))
    if args.json_out:
        args.json_out.write_text(json.dumps({"command": sys.argv, "sets": result}, indent=2)
                                 + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
