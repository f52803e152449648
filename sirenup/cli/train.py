"""``sirenup train``: train a model on folders of photos."""

from __future__ import annotations

from pathlib import Path

import typer

from sirenup.cli.console import console, handle_errors, info, warn


@handle_errors
def train(
    data: list[Path] = typer.Argument(..., help="Folders (searched recursively) or image files."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoint, metrics, weights."),
    val: Path | None = typer.Option(None, "--val", help="Benchmark folder (a subfolder per set)."),
    steps: int = typer.Option(20000, "--steps", min=1, help="Total optimisation steps."),
    batch: int = typer.Option(16, "--batch", min=1, help="Crops per step."),
    patch: int = typer.Option(48, "--patch", min=8, help="LR crop side in pixels."),
    queries: int = typer.Option(2304, "--queries", min=1, help="HR pixels supervised per crop."),
    scale_min: float = typer.Option(1.0, "--scale-min", min=1.0, help="Smallest training scale."),
    scale_max: float = typer.Option(4.0, "--scale-max", min=1.0, help="Largest training scale."),
    lr: float = typer.Option(5e-4, "--lr", min=0.0, help="Peak Adam learning rate."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or mps."),
    seed: int = typer.Option(0, "--seed", help="Random seed (crops, init)."),
    val_every: int = typer.Option(1000, "--val-every", min=1, help="Validate every N steps."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", min=1,
                                         help="Checkpoint and export weights every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt."),
    init: Path | None = typer.Option(None, "--init", help="Start from these weights."),
    name: str = typer.Option("sirenup-custom", "--name", help="Model name in the weights file."),
) -> None:
    """Train a model: random crops, L1 on HR queries, validation with the papers' protocol."""
    from sirenup.errors import UsageError

    if scale_max < scale_min:
        raise UsageError("--scale-max must be at least --scale-min")
    if val is not None and not val.is_dir():
        raise UsageError(f"--val {val}: not a folder")
    for d in data:
        if not d.exists():
            raise UsageError(f"{d}: no such file or folder")

    from tqdm import tqdm

    from sirenup.training.loop import WEIGHTS, TrainConfig, Trainer

    cfg = TrainConfig(
        data=[str(d) for d in data], out=str(out), val=str(val) if val else None, steps=steps,
        batch=batch, patch=patch, queries=queries, scale_min=scale_min, scale_max=scale_max,
        lr=lr, device=device, seed=seed, val_every=val_every, checkpoint_every=checkpoint_every,
        init=str(init) if init else None, name=name,
    )
    trainer = Trainer(cfg, log=lambda m: warn(m[9:]) if m.startswith("warning: ") else info(m))
    if resume and not trainer.resume():
        warn(f"no checkpoint in {out}: starting from scratch")

    def progress(total: int, initial: int):
        return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                    disable=None, mininterval=1.0)

    trainer.run(progress=progress, on_validate=lambda r: console.print(validation_table(r)))
    info(f"weights: {out / WEIGHTS}  ({trainer.step} steps, {trainer.train_seconds / 60:.1f} min)")


def validation_table(record: dict):
    from rich.table import Table

    table = Table(title=f"validation, step {record['step']} (PSNR-Y, dB)")
    sets = record["psnr_y"]
    scales = list(next(iter(sets.values())).keys()) if sets else []
    table.add_column("set")
    for s in scales:
        table.add_column(s, justify="right")
    for name, row in sets.items():
        table.add_row(name, *[f"{row[s]:.2f}" for s in scales])
    return table
