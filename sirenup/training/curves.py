"""``curves.png`` of a run folder: what ``metrics.jsonl`` holds, as a picture.

Panels against steps: the training loss (L1; under ``--gan`` the generator's total and L1),
validation PSNR-Y and texture ratio (a line per set and scale), and under ``--gan`` the
discriminator's mean scores on real and generated windows. Drawn with matplotlib (the optional
extra ``sirenup[plot]``) on its Agg backend, written atomically.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sirenup.files import atomic_write

CURVES = "curves.png"


def available() -> bool:
    """Whether matplotlib is installed (without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


MISSING_NOTE = ("note: no curves.png: matplotlib is not installed (pip install 'sirenup[plot]' "
                "draws one in the run folder at each validation)")


def read_metrics(path: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return records


def draw_curves(metrics: Path, out: Path) -> None:
    """Draw ``metrics`` (a metrics.jsonl) into ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure


    records = read_metrics(metrics)
    train = [r for r in records if "train" in r and r["train"]]
    val = [r for r in records if "psnr_y" in r]
    gan = any("d_real" in r["train"] for r in train)
    panels = ["loss", "psnr", "texture"] + (["d"] if gan else [])
    figure = Figure(figsize=(5.0 * len(panels), 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    steps = [r["step"] for r in train]
    loss_axis = axes[panels.index("loss")]
    plotted = []
    for key, label in (("loss", "L1"), ("g_pix", "L1"), ("g_total", "G total")):
        values = [r["train"].get(key) for r in train]
        if all(v is not None for v in values) and values:
            loss_axis.plot(steps, values, label=label)
            plotted += values
    loss_axis.set(title="training loss (smoothed)", xlabel="step")
    if plotted and min(plotted) > 0:
        loss_axis.set_yscale("log")
    for metric, title in (("psnr", "validation PSNR-Y (dB)"), ("texture", "texture ratio")):
        axis = axes[panels.index(metric)]
        key = "psnr_y" if metric == "psnr" else "texture"
        for name, scales in (val[-1].get(key, {}) if val else {}).items():
            for scale in scales:
                points = [(r["step"], r[key][name][scale]) for r in val
                          if r.get(key, {}).get(name, {}).get(scale) is not None]
                axis.plot(*zip(*points, strict=True), marker="o", label=f"{name} {scale}")
        if metric == "texture":
            axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        axis.set(title=title if val else f"{title}: no validation yet", xlabel="step")
    if gan:
        axis = axes[panels.index("d")]
        for key, label in (("d_real", "D(real)"), ("d_fake", "D(fake)")):
            axis.plot(steps, [r["train"].get(key) for r in train], label=label)
        axis.set(title="discriminator's mean scores", xlabel="step")
    for axis in axes:
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    atomic_write(out, lambda f: figure.savefig(f, format="png", dpi=90))
