"""``sirenup train``: train a model on folders of photos (also under torchrun, on N processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirenup.cli.console import bars_shown, console, handle_errors, info_text, warn_text
from sirenup.cli.options import DeviceOption
from sirenup.defaults import DEFAULT_GAN_LR, DEFAULT_LR
from sirenup.training.configs import DegradeConfig, GanConfig, TrainConfig

GAN = "Adversarial training (--gan)"
DEGRADE = "Realistic degradations (--degrade real)"
DISTIL = "Distillation (--teacher)"
# The defaults the help shows are the settings' own (torch-free dataclasses): written once.
GAN_DEFAULTS, DEGRADE_DEFAULTS = GanConfig(), DegradeConfig()
TRAIN_DEFAULTS = TrainConfig(data=[], out="")


def _pair(values: tuple[float, float]) -> str:
    """(0.2, 1.2) -> '0.2,1.2': a range as --degrade-* options write it."""
    return ",".join(f"{value:g}" for value in values)


def _range(text: str, name: str) -> tuple[float, float]:
    """'MIN,MAX' -> (MIN, MAX)."""
    from sirenup.errors import UsageError

    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--{name} {text!r}: expected MIN,MAX") from None
    return low, high


def _short(value: float) -> str:
    """5e-4, not 0.0005 (the help's way of writing a learning rate)."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def model_overrides(**values: int | None) -> dict:
    """LiifSirenConfig overrides of the options given (None: not given)."""
    return {name: value for name, value in values.items() if value is not None}


@handle_errors
def train(
    data: Annotated[list[Path], typer.Argument(help="Folders (searched recursively) or images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoint, metrics, "
                                      "weights.")],
    val: Annotated[Path | None, typer.Option(
        "--val", help="Benchmark folder (a subfolder per set).")] = None,
    steps: Annotated[int, typer.Option(
        "--steps", min=1, help="Total optimisation steps.")] = TRAIN_DEFAULTS.steps,
    batch: Annotated[int, typer.Option(
        "--batch", min=1, help="Crops per step, over all processes.")] = TRAIN_DEFAULTS.batch,
    patch: Annotated[int, typer.Option(
        "--patch", min=8, help="LR crop side in pixels.")] = TRAIN_DEFAULTS.patch,
    queries: Annotated[int, typer.Option(
        "--queries", min=1, help="HR pixels supervised per crop (without --gan).")
    ] = TRAIN_DEFAULTS.queries,
    scale_min: Annotated[float, typer.Option(
        "--scale-min", min=1.0, help="Smallest training scale.")] = TRAIN_DEFAULTS.scale_min,
    scale_max: Annotated[float, typer.Option(
        "--scale-max", min=1.0, help="Largest training scale.")] = TRAIN_DEFAULTS.scale_max,
    lr: Annotated[float | None, typer.Option(
        "--lr", min=0.0, show_default=False,
        help=f"Peak Adam learning rate (default: {_short(DEFAULT_LR)}; "
             f"{_short(DEFAULT_GAN_LR)} with --gan).")] = None,
    device: DeviceOption = "auto",
    seed: Annotated[int, typer.Option(
        "--seed", help="Random seed (crops, init).")] = TRAIN_DEFAULTS.seed,
    val_every: Annotated[int, typer.Option(
        "--val-every", min=1, help="Validate every N steps.")] = TRAIN_DEFAULTS.val_every,
    checkpoint_every: Annotated[int, typer.Option(
        "--checkpoint-every", min=1, help="Checkpoint and export weights every N steps.")
    ] = TRAIN_DEFAULTS.checkpoint_every,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from OUT/checkpoint.pt (without it, a folder that holds "
                         "a run is refused).")] = False,
    dist_timeout: Annotated[float, typer.Option(
        "--dist-timeout", min=1.0, metavar="SECONDS",
        help="Under torchrun: how long the processes wait for one that stopped before the "
             "run fails (torch's own default is 30 minutes).")] = 600.0,
    init: Annotated[str | None, typer.Option(
        "--init", help="Start from these weights: a file or a registry name.")] = None,
    name: Annotated[str, typer.Option(
        "--name", help="Model name in the weights file.")] = TRAIN_DEFAULTS.name,
    blocks: Annotated[int | None, typer.Option(
        "--blocks", min=1, max=64,
        help="Residual blocks in the encoder (default 4). With --init, blocks added beyond the "
             "initial model's start as the identity.")] = None,
    channels: Annotated[int | None, typer.Option(
        "--channels", min=1, max=1024,
        help="Feature channels of the encoder (default 32). With --init, the channels added "
             "start with zero weight into the old ones: the same function at the start.")] = None,
    refine: Annotated[bool, typer.Option(
        "--refine",
        help="Decoder version 2: add the HR-space refiner (two 3x3 convolutions on the output "
             "grid, so detail need not repeat with the LR pixels). With --init, it starts as "
             "the identity: the same function at the start.")] = False,
    refine_features: Annotated[int | None, typer.Option(
        "--refine-features", min=1, max=64,
        help="Decoder outputs the refiner reads besides RGB (default 9; a new refiner only).")
    ] = None,
    refine_hidden: Annotated[int | None, typer.Option(
        "--refine-hidden", min=1, max=256,
        help="Width of the refiner's hidden convolution (default 16; a new refiner only).")
    ] = None,
    adaptive_freqs: Annotated[int | None, typer.Option(
        "--adaptive-freqs", min=1, max=64,
        help="Content-adaptive frequencies: K frequency pairs and amplitudes per LR pixel whose "
             "waves join the decoder's input (LTE-style). With --init, the amplitudes start at "
             "zero: the same function at the start.")] = None,
    dither: Annotated[bool | None, typer.Option(
        "--dither/--no-dither", show_default=False,
        help="Record in the weights file that inference dithers its output by +-half an 8-bit "
             "level, so smooth gradients do not band on the LR pixel grid (default: the "
             "initial model's, off for a new model). Training itself does not change.")
    ] = None,
    notch_periods: Annotated[int | None, typer.Option(
        "--notch-periods", min=0, max=64,
        help="LR pixels on each side over which inference removes patterns that repeat with "
             "the LR grid, the anti-imaging notch (0: off; default: the initial model's, 8 for "
             "a new model). Recorded in the weights file; training itself does not change.")
    ] = None,
    window: Annotated[int, typer.Option(
        "--window", min=8,
        help="HR pixels per side decoded densely per crop for a model with a refiner "
             "(without --gan).")] = TRAIN_DEFAULTS.window,
    lambda_phase: Annotated[float, typer.Option(
        "--lambda-phase", min=0.0,
        help="Weight of the LR-grid phase bias loss: the batch's mean error at each position "
             "inside an LR pixel must be zero, so no faint pattern repeats with the LR grid "
             "(0: off).")] = TRAIN_DEFAULTS.lambda_phase,
    phase_per_window: Annotated[bool, typer.Option(
        "--phase-per-window",
        help="The phase bias loss takes each crop's mean error per LR-grid phase (less the "
             "crop's mean), not the batch's: a pattern whose sign follows the content "
             "counts too.")] = TRAIN_DEFAULTS.phase_per_window,
    teacher: Annotated[str | None, typer.Option(
        "--teacher", rich_help_panel=DISTIL,
        help="Distil this model (a file or a registry name): the targets are its output, "
             "averaged over flips of the input and its fine detail raised, not the photos. "
             "The student needs a refiner (--refine, or a version-2 --init).")] = None,
    teacher_flips: Annotated[int, typer.Option(
        "--teacher-flips", min=1, max=4, rich_help_panel=DISTIL,
        help="Flips of the input the teacher's output is averaged over: 1 (none), 2 (the "
             "picture turned 180 degrees too) or 4 (each mirror): detail that does not "
             "survive a flip cancels.")] = TRAIN_DEFAULTS.teacher_flips,
    teacher_detail: Annotated[float, typer.Option(
        "--teacher-detail", min=0.0, rich_help_panel=DISTIL,
        help="Gain of the averaged output's detail above about the LR Nyquist frequency "
             "(1: as it is; the bundled sirenup-gan was distilled at 1.1).")
    ] = TRAIN_DEFAULTS.teacher_detail,
    lambda_harmonic: Annotated[float, typer.Option(
        "--lambda-harmonic", min=0.0,
        help="Weight of the error near the LR grid's harmonics, on dense windows (a model "
             "with a refiner, or --gan): patterns locked to the LR pixels cost more "
             "(0: off).")] = TRAIN_DEFAULTS.lambda_harmonic,
    gan: Annotated[bool, typer.Option(
        "--gan", rich_help_panel=GAN,
        help="Adversarial fine-tuning against a patch discriminator (use with --init).")] = False,
    refine_noise: Annotated[bool, typer.Option(
        "--refine-noise", rich_help_panel=GAN,
        help="The refiner also reads per-pixel noise (implies --refine): grain a GAN can "
             "shape into texture. The noise is a hash of each output pixel's position, so an "
             "image always gives the same output.")] = False,
    lambda_pix_low: Annotated[float, typer.Option(
        "--lambda-pix-low", min=0.0, rich_help_panel=GAN,
        help="Weight of L1 between 4x4-pixel averages of output and photo: faithful colour "
             "and shape without asking fine detail to match pixel for pixel.")
    ] = GAN_DEFAULTS.lambda_pix_low,
    gan_window: Annotated[int, typer.Option(
        "--gan-window", min=24, rich_help_panel=GAN,
        help="HR pixels per side decoded densely per crop.")] = GAN_DEFAULTS.window,
    gan_loss: Annotated[str, typer.Option(
        "--gan-loss", rich_help_panel=GAN, help="ragan (relativistic average) or hinge.")
    ] = GAN_DEFAULTS.loss,
    lambda_pix: Annotated[float, typer.Option(
        "--lambda-pix", min=0.0, rich_help_panel=GAN, help="Weight of the L1 loss.")
    ] = GAN_DEFAULTS.lambda_pix,
    lambda_adv: Annotated[float, typer.Option(
        "--lambda-adv", min=0.0, rich_help_panel=GAN, help="Weight of the adversarial loss.")
    ] = GAN_DEFAULTS.lambda_adv,
    lambda_fm: Annotated[float, typer.Option(
        "--lambda-fm", min=0.0, rich_help_panel=GAN,
        help="Weight of feature matching on the discriminator's activations.")
    ] = GAN_DEFAULTS.lambda_fm,
    lambda_freq: Annotated[float, typer.Option(
        "--lambda-freq", min=0.0, rich_help_panel=GAN,
        help="Weight of the log-amplitude spectrum loss.")] = GAN_DEFAULTS.lambda_freq,
    freq_floor: Annotated[float, typer.Option(
        "--freq-floor", min=1e-6, rich_help_panel=GAN,
        help="Spectrum amplitude below which that loss counts linearly (smaller: fine detail "
             "counts more; 1: the log regime only for strong detail).")] = GAN_DEFAULTS.freq_floor,
    lambda_grid: Annotated[float, typer.Option(
        "--lambda-grid", min=0.0, rich_help_panel=GAN,
        help="Weight of the LR-grid phase loss (fine detail locked to the LR pixels, such as "
             "dotted patterns, costs the generator; 0: off). Also without --gan, for a model "
             "with a refiner.")] = GAN_DEFAULTS.lambda_grid,
    lambda_tex: Annotated[float, typer.Option(
        "--lambda-tex", min=0.0, rich_help_panel=GAN,
        help="Weight of the texture-energy loss: each window's energy above the LR Nyquist "
             "frequency against the photo's, in log (detail where the photo has it; 0: off)."
    )] = GAN_DEFAULTS.lambda_tex,
    lambda_lf: Annotated[float, typer.Option(
        "--lambda-lf", min=0.0, rich_help_panel=GAN,
        help="Weight of the low-frequency loss: L1 of the output's error below the LR Nyquist "
             "frequency, the part the LR image determines (faithful there, free above; 0: off)."
    )] = GAN_DEFAULTS.lambda_lf,
    lambda_kurt: Annotated[float, typer.Option(
        "--lambda-kurt", min=0.0, rich_help_panel=GAN,
        help="Weight of the detail-kurtosis loss: each window's fine detail must be as "
             "heavy-tailed as the photo's, so grain does not come out as sparse specks (0: off)."
    )] = GAN_DEFAULTS.lambda_kurt,
    lr_d: Annotated[float, typer.Option(
        "--lr-d", min=0.0, rich_help_panel=GAN, help="Discriminator learning rate.")
    ] = GAN_DEFAULTS.lr_d,
    d_channels: Annotated[int, typer.Option(
        "--d-channels", min=4, max=512, rich_help_panel=GAN,
        help="Discriminator width.")] = GAN_DEFAULTS.d_channels,
    ema: Annotated[float, typer.Option(
        "--ema", min=0.0, max=0.99999, rich_help_panel=GAN,
        help="EMA decay of the exported generator (0: raw weights).")] = GAN_DEFAULTS.ema,
    degrade: Annotated[str, typer.Option(
        "--degrade", rich_help_panel=DEGRADE,
        help="LR degradations: clean (the bicubic protocol) or real (blur, resize, noise, "
             "JPEG, twice).")] = "clean",
    degrade_clean_prob: Annotated[float, typer.Option(
        "--degrade-clean-prob", rich_help_panel=DEGRADE,
        help="Share of crops left clean.")] = DEGRADE_DEFAULTS.clean_prob,
    degrade_first_prob: Annotated[float, typer.Option(
        "--degrade-first-prob", rich_help_panel=DEGRADE,
        help="Probability of a first round (resize, blur, noise, JPEG) before the LR size.")
    ] = DEGRADE_DEFAULTS.first_prob,
    degrade_blur_prob: Annotated[float, typer.Option(
        "--degrade-blur-prob", rich_help_panel=DEGRADE,
        help="Probability of blur (first round).")] = DEGRADE_DEFAULTS.blur_prob,
    degrade_blur_sigma: Annotated[str, typer.Option(
        "--degrade-blur-sigma", rich_help_panel=DEGRADE,
        help="Blur sigma range, LR pixels.")] = _pair(DEGRADE_DEFAULTS.blur_sigma),
    degrade_noise_prob: Annotated[float, typer.Option(
        "--degrade-noise-prob", rich_help_panel=DEGRADE,
        help="Probability of noise (first round).")] = DEGRADE_DEFAULTS.noise_prob,
    degrade_noise_sigma: Annotated[str, typer.Option(
        "--degrade-noise-sigma", rich_help_panel=DEGRADE,
        help="Gaussian noise sigma range, 8-bit levels.")] = _pair(DEGRADE_DEFAULTS.noise_sigma),
    degrade_jpeg_prob: Annotated[float, typer.Option(
        "--degrade-jpeg-prob", rich_help_panel=DEGRADE,
        help="Probability of JPEG (first round).")] = DEGRADE_DEFAULTS.jpeg_prob,
    degrade_final_jpeg_prob: Annotated[float, typer.Option(
        "--degrade-final-jpeg-prob", rich_help_panel=DEGRADE,
        help="Probability of a final JPEG.")] = DEGRADE_DEFAULTS.final_jpeg_prob,
    degrade_jpeg_quality: Annotated[str, typer.Option(
        "--degrade-jpeg-quality", rich_help_panel=DEGRADE,
        help="JPEG quality range.")] = _pair(DEGRADE_DEFAULTS.jpeg_quality),
    degrade_resize_range: Annotated[str, typer.Option(
        "--degrade-resize-range", rich_help_panel=DEGRADE,
        help="First-round size, x the LR size.")] = _pair(DEGRADE_DEFAULTS.resize_range),
    degrade_second_prob: Annotated[float, typer.Option(
        "--degrade-second-prob", rich_help_panel=DEGRADE,
        help="Probability of a second round of blur and noise.")] = DEGRADE_DEFAULTS.second_prob,
    tensorboard: Annotated[bool, typer.Option(
        "--tensorboard",
        help="Also log losses and validation scores for TensorBoard, in OUT/tensorboard "
             "(needs the tensorboard package: pip install 'sirenup[tensorboard]').")] = False,
) -> None:
    """Train a model: random crops, L1 (and adversarial, with --gan) losses, validation with
    the papers' protocol. Runs under torchrun for several processes or hosts."""
    from sirenup.errors import UsageError

    if scale_max < scale_min:
        raise UsageError("--scale-max must be at least --scale-min")
    if val is not None and not val.is_dir():
        raise UsageError(f"--val {val}: not a folder")
    for d in data:
        if not d.exists():
            raise UsageError(f"{d}: no such file or folder")
    if degrade not in ("clean", "real"):
        raise UsageError(f"--degrade {degrade}: expected clean or real")
    if teacher_flips not in (1, 2, 4):
        raise UsageError(f"--teacher-flips {teacher_flips}: expected 1, 2 or 4")

    from sirenup.training.session import TrainSetup, check_start, start_training

    setup = TrainSetup(
        data=data, out=out, val=val, steps=steps, batch=batch, patch=patch, queries=queries,
        scale_min=scale_min, scale_max=scale_max, lr=lr, device=device, seed=seed,
        val_every=val_every, checkpoint_every=checkpoint_every, resume=resume, init=init,
        name=name, window=window, lambda_grid=0.0 if gan else lambda_grid,
        lambda_phase=lambda_phase, lambda_harmonic=lambda_harmonic,
        phase_per_window=phase_per_window, teacher=teacher, teacher_flips=teacher_flips,
        teacher_detail=teacher_detail,
        model=model_overrides(n_blocks=blocks, channels=channels,
                              version=2 if refine or refine_noise else None,
                              refine_noise=1 if refine_noise else None,
                              refine_features=refine_features, refine_hidden=refine_hidden,
                              adaptive_freqs=adaptive_freqs, notch_periods=notch_periods,
                              dither=None if dither is None else int(dither)),
        tensorboard=tensorboard, bar=bars_shown(),
        gan={"window": gan_window, "loss": gan_loss, "lambda_pix": lambda_pix,
             "lambda_adv": lambda_adv, "lambda_fm": lambda_fm, "lambda_freq": lambda_freq,
             "freq_floor": freq_floor, "lambda_grid": lambda_grid, "lambda_tex": lambda_tex,
             "lambda_pix_low": lambda_pix_low, "lambda_lf": lambda_lf,
             "lambda_kurt": lambda_kurt,
             "lr_d": lr_d, "d_channels": d_channels, "ema": ema} if gan else None,
        degrade={"clean_prob": degrade_clean_prob, "first_prob": degrade_first_prob,
                 "blur_prob": degrade_blur_prob,
                 "blur_sigma": _range(degrade_blur_sigma, "degrade-blur-sigma"),
                 "noise_prob": degrade_noise_prob,
                 "noise_sigma": _range(degrade_noise_sigma, "degrade-noise-sigma"),
                 "jpeg_prob": degrade_jpeg_prob, "final_jpeg_prob": degrade_final_jpeg_prob,
                 "jpeg_quality": tuple(int(q) for q in _range(degrade_jpeg_quality,
                                                              "degrade-jpeg-quality")),
                 "resize_range": _range(degrade_resize_range, "degrade-resize-range"),
                 "second_prob": degrade_second_prob} if degrade == "real" else None,
    )
    check_start(setup)  # --out and --val, before torch is imported
    trainer = start_training(
        setup, log=lambda m: warn_text(m[9:]) if m.startswith("warning: ") else info_text(m),
        on_validate=lambda r: console.print(validation_table(r)))
    if trainer is not None:
        from sirenup.text import duration, plural

        info_text(f"weights: {out / 'model.safetensors'}  ({plural(trainer.step, 'step')}; "
                  f"wall time {duration(trainer.wall_seconds)}, of which training "
                  f"{duration(trainer.train_seconds)})")


def validation_table(record: dict):
    from rich.table import Table

    table = Table(title=f"validation, step {record['step']}: PSNR-Y dB (texture ratio, "
                        "grid-lock)")
    sets = record["psnr_y"]
    textures = record.get("texture", {})
    grids = record.get("grid_lock", {})
    scales = list(next(iter(sets.values())).keys()) if sets else []
    table.add_column("set")
    for s in scales:
        table.add_column(s, justify="right")
    for name, row in sets.items():
        texture, grid = textures.get(name, {}), grids.get(name, {})
        table.add_row(name, *[f"{row[s]:.2f} ({texture.get(s, float('nan')):.2f}, "
                              f"{grid.get(s, float('nan')):.2f})" for s in scales])
    return table
