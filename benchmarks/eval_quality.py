#!/usr/bin/env python
"""Quality table: Y-PSNR, SSIM and texture ratio of models, Pillow bicubic and Lanczos on
Set5/Set14, on clean or degraded inputs.

The protocol is the field's (../shared/data/SOURCES.md), implemented once in
``sirenup.evaluation.metrics`` / ``sirenup.evaluation.evaluate``; this script only chooses the
images, scales, degradation and upscalers, then summarises:

- set means per scale and method: Y-PSNR, SSIM, texture ratio (energy above the LR Nyquist,
  SR over HR: 1.0 = as much fine detail as the original);
- per-image wins: each model against bicubic, and each pair of models against each other;
- for the first model, the margin ``mean(model - bicubic) - mean(lanczos - bicubic)``
  (= model - Lanczos), checked against the bar (>= 0.3 dB at x2.5, x3.5, x6 and x8).

With ``--degrade jpeg75|noise5|noise10|blur1`` (see ``sirenup.evaluation.degrade_eval``) the LR
image is made by the protocol and then degraded; every method sees the same degraded pixels.

    python benchmarks/eval_quality.py                      # Set5 + Set14, x2 ... x8
    python benchmarks/eval_quality.py --sets Set5 --scales 4 --json quality.json
    python benchmarks/eval_quality.py --models sirenup-base,runs/real.safetensors \
        --degrade jpeg75 --scales 2,3,4
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
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
BASELINES = ("bicubic", "lanczos")
METHODS = ("model", *BASELINES)  # the method names with a single model (as before --models)
METRICS = ("psnr_y", "ssim", "texture", "grid_lock")


def scale_key(scale: float) -> str:
    return f"x{scale:g}"


def model_labels(models: Sequence[str]) -> list[str]:
    """Column names: 'model' for a single model (the historic name); otherwise each model's
    registry name or file stem, made unique."""
    if len(models) == 1:
        return ["model"]
    labels: list[str] = []
    for text in models:
        label = Path(text).stem if ("/" in text or "\\" in text or "." in text) else text
        base, n = label, 2
        while label in labels or label in BASELINES:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


def evaluate(val_dir: Path, *, sets: Sequence[str] | None = None,
             scales: Sequence[float] = DEFAULT_SCALES, model: str = "sirenup-base",
             models: Sequence[str] | None = None, degrade: str | None = None,
             device: str = "auto", tile: int = 0,
             log: Callable[[str], None] | None = None) -> dict:
    """Per-image scores of every method ->
    {"per_image": {set: {"x4": {image: {method: Y-PSNR dB}}}},
     "scores": {set: {"x4": {image: {method: {"psnr_y", "ssim", "texture", "texture_bands"}}}}}}.

    ``models`` (names or paths) overrides ``model``; ``sets`` None takes every set found in
    ``val_dir``; ``degrade`` e.g. "jpeg75" (``sirenup.evaluation.degrade_eval``).
    """
    import torch
    from PIL import Image

    from sirenup.evaluation.degrade_eval import parse_degradation
    from sirenup.evaluation.evaluate import (
        benchmark_sets,
        model_upscaler,
        pillow_upscaler,
        protocol_case,
        score_cases,
    )
    from sirenup.inference.upscaler import Upscaler

    log = log or (lambda message: None)
    degradation = parse_degradation(degrade)
    found = benchmark_sets(Path(val_dir))
    chosen = list(sets) if sets else list(found)
    missing = [s for s in chosen if s not in found]
    if missing:
        raise ValueError(f"{val_dir}: no set {', '.join(missing)} (found: {', '.join(found)})")
    models = list(models) if models else [model]
    loaded = [Upscaler(m, device=device, tile=tile) for m in models]
    labels = model_labels(models)
    upscalers = {label: model_upscaler(u.model, device=u.device, tile=tile)
                 for label, u in zip(labels, loaded, strict=True)}
    upscalers["bicubic"] = pillow_upscaler(Image.BICUBIC)
    upscalers["lanczos"] = pillow_upscaler(Image.LANCZOS)
    scores: dict = {}
    with torch.inference_mode():
        for set_name in chosen:
            paths = found[set_name]
            scores[set_name] = {}
            for scale in scales:
                log(f"{set_name} {scale_key(scale)} ({len(paths)} images)")
                cases = [protocol_case(p, float(scale), degradation) for p in paths]
                rows = {m: score_cases(up, cases) for m, up in upscalers.items()}
                scores[set_name][scale_key(scale)] = {
                    case.name: {m: _rounded(rows[m][i]) for m in upscalers}
                    for i, case in enumerate(cases)
                }
    return {
        "model": loaded[0].model_name,
        "model_path": str(loaded[0].model_path),
        "models": [{"label": label, "model": u.model_name, "path": str(u.model_path)}
                   for label, u in zip(labels, loaded, strict=True)],
        "methods": list(upscalers),
        "degrade": degradation.name if degradation else None,
        "device": str(loaded[0].device),
        "tile": tile,
        "val": str(val_dir),
        "scales": [float(s) for s in scales],
        "per_image": {s: {k: {image: {m: v["psnr_y"] for m, v in methods.items()}
                              for image, methods in images.items()}
                          for k, images in by_scale.items()}
                      for s, by_scale in scores.items()},
        "scores": scores,
    }


def _rounded(row: dict) -> dict:
    return {"psnr_y": round(row["psnr_y"], 4), "ssim": round(row["ssim"], 5),
            "texture": round(row["texture"], 5),
            "texture_bands": [round(b, 5) for b in row["texture_bands"]],
            "grid_lock": round(row["grid_lock"], 4)}


def _median_max(values) -> tuple[float, float]:
    """(median, max) without NaNs (grid-lock is defined at integer scales only)."""
    values = sorted(v for v in values if not (isinstance(v, float) and math.isnan(v)))
    if not values:
        return math.nan, math.nan
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])
    return median, values[-1]


def _mean(values) -> float:
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else math.nan


def summarize(raw: dict, *, bar_scales: Sequence[float] = BAR_SCALES,
              bar_db: float = BAR_DB) -> dict:
    """Set means per method, wins per image, the first model's margin over Lanczos and the
    bar's verdict.

    means[set][scale]: {method: mean Y-PSNR, ..., "ssim": {method: mean},
    "texture": {method: mean}, "gain_vs_bicubic", "lanczos_gain_vs_bicubic", "margin",
    "meets_bar"} (gains and margin for the first model).
    scales[scale]: images, wins of every model over bicubic and of every pair of models, the
    first model's losses to bicubic, the pooled margin and the bar.
    """
    bar_keys = {scale_key(s) for s in bar_scales}
    methods = raw.get("methods") or list(METHODS)
    models = [m for m in methods if m not in BASELINES]
    first = models[0]
    scores = raw.get("scores") or {  # raw from before SSIM and texture: PSNR only
        s: {k: {i: {m: {"psnr_y": v} for m, v in ms.items()} for i, ms in imgs.items()}
            for k, imgs in by_scale.items()} for s, by_scale in raw["per_image"].items()}
    means: dict = {}
    per_scale: dict = {}
    for set_name, by_scale in scores.items():
        means[set_name] = {}
        for key, images in by_scale.items():
            row: dict = {m: _mean(v[m]["psnr_y"] for v in images.values()) for m in methods}
            for metric in ("ssim", "texture"):
                if all(metric in v[m] for v in images.values() for m in methods):
                    row[metric] = {m: _mean(v[m][metric] for v in images.values())
                                   for m in methods}
            if all("grid_lock" in v[m] for v in images.values() for m in methods):
                row["grid_lock"] = {m: _median_max([v[m]["grid_lock"] for v in images.values()])
                                    for m in methods}
            row["gain_vs_bicubic"] = row[first] - row["bicubic"]
            row["lanczos_gain_vs_bicubic"] = row["lanczos"] - row["bicubic"]
            row["margin"] = row["gain_vs_bicubic"] - row["lanczos_gain_vs_bicubic"]
            row["meets_bar"] = row["margin"] >= bar_db if key in bar_keys else None
            means[set_name][key] = row
            entry = per_scale.setdefault(key, {
                "losses": [], "margins": [], "images": 0,
                "wins_vs_bicubic": dict.fromkeys(models, 0),
                "wins_between_models": {f"{a} > {b}": 0
                                        for a, b in itertools.permutations(models, 2)}})
            entry["images"] += len(images)
            for image, v in images.items():
                psnr = {m: v[m]["psnr_y"] for m in methods}
                entry["margins"].append(psnr[first] - psnr["lanczos"])
                if not psnr[first] > psnr["bicubic"]:
                    entry["losses"].append(
                        f"{set_name}/{image} ({psnr[first] - psnr['bicubic']:+.2f})")
                for m in models:
                    entry["wins_vs_bicubic"][m] += psnr[m] > psnr["bicubic"]
                for a, b in itertools.permutations(models, 2):
                    entry["wins_between_models"][f"{a} > {b}"] += psnr[a] > psnr[b]
    scales = {}
    for key, entry in per_scale.items():
        set_rows = [means[s][key] for s in means if key in means[s]]
        scales[key] = {
            "images": entry["images"],
            "beats_bicubic_everywhere": not entry["losses"],
            "not_beating_bicubic": entry["losses"],
            "wins_vs_bicubic": entry["wins_vs_bicubic"],
            "wins_between_models": entry["wins_between_models"],
            "pooled_margin": _mean(entry["margins"]),
            "bar": bar_db if key in bar_keys else None,
            "meets_bar": all(r["meets_bar"] for r in set_rows) if key in bar_keys else None,
        }
    return {"means": means, "scales": scales, "bar_db": bar_db, "first_model": first,
            "bar_scales": [scale_key(s) for s in bar_scales]}


def _grid_cell(row: dict, method: str) -> str:
    median, top = row.get("grid_lock", {}).get(method, (math.nan, math.nan))
    return "-" if math.isnan(median) else f"{median:.2f} ({top:.2f})"


def _cell(value, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def markdown(raw: dict, summary: dict, *, command: str = "") -> str:
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    methods = raw.get("methods") or list(METHODS)
    models = raw.get("models") or [{"label": "model", "model": raw["model"]}]
    named = ", ".join(f"`{m['model']}`" if m["label"] == "model" else
                      f"{m['label']} = `{m['model']}`" for m in models)
    inputs = f"LR degraded with {raw['degrade']}" if raw.get("degrade") else "clean LR"
    lines = [
        f"Quality (protocol of shared/data/SOURCES.md; {inputs}), model{'s' * (len(models) > 1)}"
        f" {named}, device {raw['device']}, tile {raw['tile']}, {date}.",
    ]
    if command:
        lines.append(f"Command: `{command}`")
    lines += [
        "",
        "| set | scale | method | Y-PSNR dB | vs bicubic | SSIM | texture ratio "
        "| grid-lock median (max) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for set_name, by_scale in summary["means"].items():
        for key, r in by_scale.items():
            for m in methods:
                gain = "" if m == "bicubic" else f"{r[m] - r['bicubic']:+.2f}"
                lines.append(
                    f"| {set_name} | {key} | {m} | {r[m]:.2f} | {gain} | "
                    f"{_cell(r.get('ssim', {}).get(m), 4)} | "
                    f"{_cell(r.get('texture', {}).get(m), 3)} | {_grid_cell(r, m)} |")
    lines += [
        "",
        "texture ratio = energy of Y's spectrum above the LR Nyquist (0.5/scale cycles/px), "
        "output over original (1 = as much fine detail; mean of per-image ratios).",
        "grid-lock = median (max) over the images of the luminance's power at the LR-grid "
        "harmonics over its neighbours' (integer scales; a photo ~0.6-0.9, bicubic ~1, "
        "a pattern repeating with the LR pixels far above).",
        "",
        f"Margin of {summary['first_model']} over Lanczos = mean gain over bicubic minus "
        "Lanczos's mean gain over bicubic.",
        "",
        f"| set | scale | margin | bar (>= {summary['bar_db']:g} dB) |",
        "|---|---|---:|---|",
    ]
    for set_name, by_scale in summary["means"].items():
        for key, r in by_scale.items():
            verdict = {None: "", True: "pass", False: "**FAIL**"}[r["meets_bar"]]
            lines.append(f"| {set_name} | {key} | {r['margin']:+.2f} | {verdict} |")
    lines += [
        "",
        "Per-image wins (Y-PSNR), all sets together:",
        "",
        "| scale | images | wins vs bicubic | between models "
        f"| images where {summary['first_model']} does not beat bicubic (dB) | pooled margin "
        "| bar |",
        "|---|---:|---|---|---|---:|---|",
    ]
    for key, s in summary["scales"].items():
        verdict = {None: "", True: "pass", False: "**FAIL**"}[s["meets_bar"]]
        losses = ", ".join(s["not_beating_bicubic"]) or "-"
        wins = ", ".join(f"{m} {n}/{s['images']}" for m, n in s["wins_vs_bicubic"].items())
        pairs = ", ".join(f"{p} {n}/{s['images']}"
                          for p, n in s["wins_between_models"].items()) or "-"
        lines.append(f"| {key} | {s['images']} | {wins} | {pairs} | {losses} "
                     f"| {s['pooled_margin']:+.2f} | {verdict} |")
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
    parser.add_argument("--models", default=None,
                        help="comma-separated registry names or weights paths, compared on the "
                             "same inputs (overrides --model)")
    parser.add_argument("--degrade", default=None, metavar="NAME",
                        help="degrade the LR after the protocol's downscale: jpegQ, noiseS or "
                             "blurS, e.g. jpeg75, noise5, noise10, blur1 (default: none)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--tile", type=int, default=0, help="LR tile side (0: whole image)")
    parser.add_argument("--json", type=Path, dest="json_out", help="write raw per-image numbers")
    parser.add_argument("--stamp", action="store_true",
                        help="record the set means in the weights file's metadata "
                             "(quality: read by the registry); the tensors are not touched; "
                             "one model, clean inputs only")
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
    models = None
    if args.models is not None:
        models = list(dict.fromkeys(m.strip() for m in args.models.split(",") if m.strip()))
        if not models:
            parser.error("--models: give at least one model")
    from sirenup.evaluation.degrade_eval import parse_degradation

    try:
        parse_degradation(args.degrade)
    except ValueError as error:
        parser.error(f"--degrade: {error}")
    if args.stamp and (args.degrade or (models and len(models) > 1)):
        parser.error("--stamp records the clean protocol's numbers of one model: drop "
                     "--degrade and give one model")

    def log(message: str) -> None:
        print(f"scoring {message}", file=sys.stderr, flush=True)

    from sirenup.errors import SirenupError

    try:
        raw = evaluate(args.val, sets=sets, scales=scales, model=args.model, models=models,
                       degrade=args.degrade, device=args.device, tile=args.tile, log=log)
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
    sys.path.insert(0, str(REPO))  # score this checkout's sirenup, not another installed one
    sys.exit(main())
