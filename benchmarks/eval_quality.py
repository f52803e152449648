#!/usr/bin/env python
"""Quality bars: Y-PSNR of the model, Pillow bicubic and Pillow Lanczos on Set5/Set14.

The protocol is the field's (../shared/data/SOURCES.md), implemented once in
``sirenup.engine.metrics`` / ``sirenup.engine.evaluate``; this script only chooses the images,
scales and upscalers, then summarises:

- set means per scale for the three upscalers;
- per scale, whether the model beats bicubic on every image (and which images it does not);
- the margin ``mean(model - bicubic) - mean(lanczos - bicubic)`` (= model - Lanczos), checked
  against the bar (>= 0.3 dB at x2.5, x3.5, x6 and x8, on every set).

    python benchmarks/eval_quality.py                      # Set5 + Set14, x2 ... x8
    python benchmarks/eval_quality.py --sets Set5 --scales 4 --json quality.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VAL = REPO.parent / "shared" / "data" / "val"
DEFAULT_SETS = ("Set5", "Set14")
DEFAULT_SCALES = (2.0, 2.5, 3.0, 3.5, 4.0, 6.0, 8.0)
BAR_SCALES = (2.5, 3.5, 6.0, 8.0)
BAR_DB = 0.3
METHODS = ("model", "bicubic", "lanczos")


def scale_key(scale: float) -> str:
    return f"x{scale:g}"


def evaluate(val_dir: Path, *, sets: Sequence[str] | None = None,
             scales: Sequence[float] = DEFAULT_SCALES, model: str = "sirenup-base",
             device: str = "auto", tile: int = 0,
             log: Callable[[str], None] | None = None) -> dict:
    """Per-image Y-PSNR of every method -> {"per_image": {set: {"x4": {image: {method: dB}}}}}.

    ``sets`` None takes every set found in ``val_dir``.
    """
    import torch
    from PIL import Image

    from sirenup.engine.evaluate import (
        benchmark_sets,
        model_upscaler,
        pillow_upscaler,
        score_images,
    )
    from sirenup.engine.upscaler import Upscaler

    log = log or (lambda message: None)
    found = benchmark_sets(Path(val_dir))
    chosen = list(sets) if sets else list(found)
    missing = [s for s in chosen if s not in found]
    if missing:
        raise ValueError(f"{val_dir}: no set {', '.join(missing)} (found: {', '.join(found)})")
    upscaler = Upscaler(model, device=device, tile=tile)
    upscalers = {
        "model": model_upscaler(upscaler.model, device=upscaler.device, tile=tile),
        "bicubic": pillow_upscaler(Image.BICUBIC),
        "lanczos": pillow_upscaler(Image.LANCZOS),
    }
    per_image: dict = {}
    with torch.inference_mode():
        for set_name in chosen:
            paths = found[set_name]
            per_image[set_name] = {}
            for scale in scales:
                log(f"{set_name} {scale_key(scale)} ({len(paths)} images)")
                scores = {m: score_images(up, paths, scale) for m, up in upscalers.items()}
                per_image[set_name][scale_key(scale)] = {
                    p.stem: {m: round(scores[m][i], 4) for m in METHODS}
                    for i, p in enumerate(paths)
                }
    return {
        "model": upscaler.model_name,
        "model_path": str(upscaler.model_path),
        "device": str(upscaler.device),
        "tile": tile,
        "val": str(val_dir),
        "scales": [float(s) for s in scales],
        "per_image": per_image,
    }


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def summarize(raw: dict, *, bar_scales: Sequence[float] = BAR_SCALES,
              bar_db: float = BAR_DB) -> dict:
    """Set means, margins over Lanczos, images where bicubic wins, and the bar's verdict."""
    bar_keys = {scale_key(s) for s in bar_scales}
    means: dict = {}
    per_scale: dict = {}
    for set_name, by_scale in raw["per_image"].items():
        means[set_name] = {}
        for key, images in by_scale.items():
            row = {m: _mean(v[m] for v in images.values()) for m in METHODS}
            row["gain_vs_bicubic"] = row["model"] - row["bicubic"]
            row["lanczos_gain_vs_bicubic"] = row["lanczos"] - row["bicubic"]
            row["margin"] = row["gain_vs_bicubic"] - row["lanczos_gain_vs_bicubic"]
            row["meets_bar"] = row["margin"] >= bar_db if key in bar_keys else None
            means[set_name][key] = row
            entry = per_scale.setdefault(key, {"losses": [], "margins": [], "images": 0})
            entry["images"] += len(images)
            for image, v in images.items():
                entry["margins"].append(v["model"] - v["lanczos"])
                if not v["model"] > v["bicubic"]:
                    entry["losses"].append(f"{set_name}/{image} ({v['model'] - v['bicubic']:+.2f})")
    scales = {}
    for key, entry in per_scale.items():
        set_rows = [means[s][key] for s in means if key in means[s]]
        scales[key] = {
            "images": entry["images"],
            "beats_bicubic_everywhere": not entry["losses"],
            "not_beating_bicubic": entry["losses"],
            "pooled_margin": _mean(entry["margins"]),
            "bar": bar_db if key in bar_keys else None,
            "meets_bar": all(r["meets_bar"] for r in set_rows) if key in bar_keys else None,
        }
    return {"means": means, "scales": scales, "bar_db": bar_db,
            "bar_scales": [scale_key(s) for s in bar_scales]}


def markdown(raw: dict, summary: dict, *, command: str = "") -> str:
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Quality (Y-PSNR, dB; protocol of shared/data/SOURCES.md), model `{raw['model']}`, "
        f"device {raw['device']}, tile {raw['tile']}, {date}.",
    ]
    if command:
        lines.append(f"Command: `{command}`")
    lines += [
        "",
        "| set | scale | model | bicubic | Lanczos | model - bicubic | Lanczos - bicubic "
        f"| margin | bar (>= {summary['bar_db']:g} dB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for set_name, by_scale in summary["means"].items():
        for key, r in by_scale.items():
            verdict = {None: "", True: "pass", False: "**FAIL**"}[r["meets_bar"]]
            lines.append(
                f"| {set_name} | {key} | {r['model']:.2f} | {r['bicubic']:.2f} | "
                f"{r['lanczos']:.2f} | {r['gain_vs_bicubic']:+.2f} | "
                f"{r['lanczos_gain_vs_bicubic']:+.2f} | {r['margin']:+.2f} | {verdict} |")
    lines += [
        "",
        "margin = mean gain of the model over bicubic minus Lanczos's mean gain over bicubic.",
        "",
        "| scale | images | beats bicubic on every image | images where it does not (dB) "
        "| pooled margin | bar |",
        "|---|---:|---|---|---:|---|",
    ]
    for key, s in summary["scales"].items():
        verdict = {None: "", True: "pass", False: "**FAIL**"}[s["meets_bar"]]
        losses = ", ".join(s["not_beating_bicubic"]) or "-"
        lines.append(f"| {key} | {s['images']} | {'yes' if s['beats_bicubic_everywhere'] else 'no'}"
                     f" | {losses} | {s['pooled_margin']:+.2f} | {verdict} |")
    return "\n".join(lines)


def stamp_weights(path: Path, summary: dict, command: str) -> None:
    """Write the set means (model, bicubic, Lanczos per scale) into the weights metadata."""
    from sirenup.models.weights import update_metadata

    table = {
        set_name: {key: {m: round(row[m], 2) for m in METHODS} for key, row in by_scale.items()}
        for set_name, by_scale in summary["means"].items()
    }
    update_metadata(path, {"quality": {
        "metric": "Y-PSNR dB, protocol of shared/data/SOURCES.md", "sets": table,
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
    }})


def parse_floats(text: str) -> list[float]:
    return [float(t) for t in text.replace(" ", "").split(",") if t]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", type=Path, default=DEFAULT_VAL,
                        help=f"benchmark folder, one subfolder per set (default: {DEFAULT_VAL})")
    parser.add_argument("--sets", default=",".join(DEFAULT_SETS),
                        help="comma-separated set names (default: Set5,Set14)")
    parser.add_argument("--scales", default=",".join(f"{s:g}" for s in DEFAULT_SCALES),
                        help="comma-separated scales (default: 2,2.5,3,3.5,4,6,8)")
    parser.add_argument("--model", default="sirenup-base", help="registry name or weights path")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--tile", type=int, default=0, help="LR tile side (0: whole image)")
    parser.add_argument("--json", type=Path, dest="json_out", help="write raw per-image numbers")
    parser.add_argument("--stamp", action="store_true",
                        help="record the set means in the weights file's metadata "
                             "(quality: read by the registry); the tensors are not touched")
    args = parser.parse_args(argv)

    try:
        scales = parse_floats(args.scales)
    except ValueError:
        parser.error(f"--scales {args.scales}: expected comma-separated numbers")
    if not scales or min(scales) <= 1:
        parser.error("--scales: every scale must be above 1")
    if not args.val.is_dir():
        parser.error(f"--val {args.val}: not a folder")
    sets = [s for s in args.sets.replace(" ", "").split(",") if s]

    def log(message: str) -> None:
        print(f"scoring {message}", file=sys.stderr, flush=True)

    from sirenup.errors import SirenupError

    try:
        raw = evaluate(args.val, sets=sets, scales=scales, model=args.model,
                       device=args.device, tile=args.tile, log=log)
    except SirenupError as error:  # unknown model, unavailable device
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except ValueError as error:  # missing set, unusable weights file
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = summarize(raw)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(markdown(raw, summary, command=command))
    if args.stamp:
        stamp_weights(Path(raw["model_path"]), summary, command)
        print(f"recorded the measured quality in {raw['model_path']}", file=sys.stderr)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({**raw, "summary": summary, "command": command},
                                            indent=2) + "\n")
        print(f"wrote {args.json_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
