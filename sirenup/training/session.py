"""What ``sirenup train`` does with its options: check them, pick the device, join the process
group under torchrun, build the Trainer, resume, run with a progress bar, and leave cleanly.

Kept out of the CLI module so that the command only parses options.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from sirenup.defaults import DEFAULT_GAN_LR, DEFAULT_LR
from sirenup.errors import OptionValueError, SirenupError, UsageError, mention, typed_line
from sirenup.evaluation.sets import check_sets_hold_images
from sirenup.hub.registry import resolve
from sirenup.inference.planning import check_device_spelling
from sirenup.training import curves
from sirenup.training.configs import DegradeConfig, GanConfig, TrainConfig
from sirenup.training.run_folder import METRICS, RunLock, check_run_folder

TRAIN_DEFAULTS = TrainConfig(data=[], out="")

# torch, and every module that imports it (devices, loop, evaluate, weights, distributed,
# TensorBoard), is imported inside the functions that train: ``check_start`` runs before
# torch is imported, so a usage error costs a fraction of a second (tests/test_startup.py).


@dataclass
class TrainSetup:
    data: list[Path]
    out: Path
    val: Path | None
    steps: int
    batch: int
    patch: int
    queries: int
    scale_min: float
    scale_max: float
    lr: float | None  # None: DEFAULT_LR, or DEFAULT_GAN_LR for adversarial fine-tuning
    device: str
    seed: int
    val_every: int
    checkpoint_every: int
    resume: bool
    init: str | None  # weights file or registry name
    name: str
    gan: dict | None
    degrade: dict | None
    model: dict = field(default_factory=dict)  # LiifSirenConfig overrides (--blocks)
    window: int = TRAIN_DEFAULTS.window  # HR window per crop, a model with a refiner
    lambda_grid: float = TRAIN_DEFAULTS.lambda_grid  # LR-grid phase loss on those windows
    lambda_phase: float = TRAIN_DEFAULTS.lambda_phase  # mean error per LR-grid phase
    lambda_harmonic: float = TRAIN_DEFAULTS.lambda_harmonic  # error near the LR harmonics
    phase_per_window: bool = TRAIN_DEFAULTS.phase_per_window  # each crop's phase bias
    teacher: str | None = None  # weights file or registry name: distil its output
    teacher_flips: int = TRAIN_DEFAULTS.teacher_flips  # flips its output is averaged over
    teacher_detail: float = TRAIN_DEFAULTS.teacher_detail  # gain of its fine detail
    dist_timeout: float = 600.0  # seconds a collective waits for a stopped rank (torchrun)
    tensorboard: bool = False  # also log to OUT/tensorboard (the tensorboard package)
    bar: bool = True  # a progress bar on stderr (tqdm: only when it is a terminal)


def check_sub_configs(setup: TrainSetup) -> None:
    """Adversarial and degradation settings out of range -> UsageError naming the option."""
    try:
        if setup.gan is not None:
            gan = GanConfig.from_dict(setup.gan)
            gan.validate()
            if round(setup.patch * setup.scale_min) < gan.min_side:
                raise UsageError(f"needs HR crops of at least {gan.min_side} pixels: raise "
                                 f"{mention('patch')} ({setup.patch}) or "
                                 f"{mention('scale_min')} ({setup.scale_min:g})", option="gan")
        if setup.degrade is not None:
            DegradeConfig.from_dict(setup.degrade).validate()
    except UsageError:
        raise  # about an option already (GanConfig's)
    except ValueError as error:
        raise UsageError(str(error)) from None


def resolve_weights(model: str | None, option: str) -> str | None:
    """--init or --teacher as a weights file or a registry name (sirenup-base) -> a file
    path."""
    if model is None:
        return None
    try:
        return str(resolve(model).path)
    except UsageError as error:  # said of --model, which --init and --teacher are here
        raise error.renamed("model", option) from None


def check_tensorboard() -> None:
    """--tensorboard needs the tensorboard package: UsageError (how to install it) if absent."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError(": the tensorboard package is not installed (pip install "
                         "'sirenup[tensorboard]')", option="tensorboard")


class RunRecords:
    """What follows each record of metrics.jsonl (rank 0): curves.png redrawn after each
    validation (and at the end), and TensorBoard scalars under --tensorboard."""

    def __init__(self, out: Path, *, tensorboard: bool, log: Callable[[str], None]):
        self.out, self.log = out, log
        self.plot = curves.available()
        if not self.plot:
            log(curves.MISSING_NOTE)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
            log(f"TensorBoard: tensorboard --logdir {out / 'tensorboard'}")

    def __call__(self, record: dict) -> None:
        if self.writer is not None:
            for tag, value in scalars(record):
                self.writer.add_scalar(tag, value, record["step"])
            self.writer.flush()
        if "psnr_y" in record:
            self.draw()

    def draw(self) -> None:
        if self.plot and (self.out / METRICS).is_file():
            curves.draw_curves(self.out / METRICS, self.out / curves.CURVES)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def scalars(record: dict) -> list[tuple[str, float]]:
    """A metrics.jsonl record -> (TensorBoard tag, value): train/loss, val/psnr_y/Set5/x4, ..."""
    found = [(f"train/{key}", value) for key, value in record.get("train", {}).items()]
    if "lr" in record:
        found.append(("train/lr", record["lr"]))
    for metric in ("psnr_y", "texture"):
        for name, scales in record.get(metric, {}).items():
            found += [(f"val/{metric}/{name}/{scale}", value)
                      for scale, value in scales.items() if value is not None]
    return found


def start_training(setup: TrainSetup, *, log: Callable[[str], None],
                   on_validate: Callable[[dict], None]):
    """Train as ``setup`` says -> the finished Trainer (None on ranks other than 0), its
    ``wall_seconds`` set to the whole run's time (loading, validation and saving included).
    The run folder is locked (``run_folder.RunLock``) for as long as the training writes to
    it."""
    started = time.perf_counter()
    from sirenup.inference.devices import resolve_device  # torch: see the top

    check_sub_configs(setup)
    if setup.tensorboard:
        check_tensorboard()
    check_run_folder(setup.out, setup.resume)  # (--out and --val: checked first, by train)
    device = resolve_device(setup.device)
    with contextlib.ExitStack() as stack:
        if os.environ.get("RANK", "0") == "0":  # rank 0 alone writes the run's files
            stack.enter_context(RunLock(setup.out))
        return _train(setup, device, started, log=log, on_validate=on_validate)


def check_start(setup: TrainSetup) -> None:
    """What ``train`` can check before torch is imported: the spelling of --device, the
    --gan/--degrade settings, the batch's split over torchrun's processes, the run folder
    (see ``run_folder.check_run_folder``) and that --val holds images."""
    check_device_spelling(setup.device)
    check_sub_configs(setup)
    if setup.tensorboard:
        check_tensorboard()
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1 and setup.batch % int(world):
        raise UsageError(f"{setup.batch} does not split evenly over {world} processes",
                         option="batch")
    check_run_folder(setup.out, setup.resume)
    if setup.val is not None:
        check_sets_hold_images(setup.val)


def _train(setup: TrainSetup, device, started: float, *, log: Callable[[str], None],
           on_validate: Callable[[dict], None]):
    # torch: see the top
    from sirenup.evaluation.evaluate import check_benchmark_folder
    from sirenup.models.weights import WeightsError
    from sirenup.training import distributed
    from sirenup.training.loop import Trainer

    info = distributed.init(device, setup.dist_timeout)
    try:
        info.share(setup.batch)  # the global batch must split evenly over the processes
    except OptionValueError:
        distributed.shutdown()
        raise
    lr = setup.lr if setup.lr is not None else (DEFAULT_GAN_LR if setup.gan else DEFAULT_LR)
    cfg = TrainConfig(
        data=[str(d) for d in setup.data], out=str(setup.out),
        val=str(setup.val) if setup.val else None, steps=setup.steps, batch=setup.batch,
        patch=setup.patch, queries=setup.queries, scale_min=setup.scale_min,
        scale_max=setup.scale_max, lr=lr, device=str(info.device), seed=setup.seed,
        val_every=setup.val_every, checkpoint_every=setup.checkpoint_every,
        init=resolve_weights(setup.init, "init"), name=setup.name, gan=setup.gan,
        degrade=setup.degrade,
        model=setup.model, window=setup.window, lambda_grid=setup.lambda_grid,
        lambda_phase=setup.lambda_phase, lambda_harmonic=setup.lambda_harmonic,
        phase_per_window=setup.phase_per_window,
        teacher=resolve_weights(setup.teacher, "teacher"), teacher_flips=setup.teacher_flips,
        teacher_detail=setup.teacher_detail,
    )
    try:
        if cfg.val:  # a bad image fails the run now, not at its first validation
            check_benchmark_folder(Path(cfg.val), cfg.val_scales)
        records = RunRecords(setup.out, tensorboard=setup.tensorboard, log=log) \
            if info.is_main else None
        try:
            trainer = Trainer(cfg, log=log, on_metrics=records)
        except WeightsError as error:
            raise SirenupError(f": {error}", option="init") from None
        except ValueError as error:  # no usable training image
            raise SirenupError(str(error)) from None
        if setup.resume:
            try:
                with warnings.catch_warnings():  # torch.load's notes on a refused pickle
                    warnings.simplefilter("ignore")
                    resumed = trainer.resume()
            except ValueError as error:  # the run's own words (not a --gan run, ...)
                words = error.message if isinstance(error, SirenupError) else str(error)
                raise SirenupError(f"cannot resume from {setup.out}: {words}") from None
            except Exception as error:  # a damaged checkpoint: whatever torch.load raised
                raise SirenupError(
                    f"cannot resume from {setup.out}: its checkpoint is damaged or not a "
                    f"sirenup checkpoint ({typed_line(error)})") from None
            if not resumed:
                log(f"warning: no checkpoint in {setup.out}: starting from scratch")
        try:
            trainer.run(progress=_progress_bar if setup.bar else None, on_validate=on_validate)
        finally:
            if records is not None:
                records.close()
        if records is not None:
            records.draw()  # the last losses too (a run without --val: its only drawing)
        trainer.wall_seconds = time.perf_counter() - started
        return trainer if info.is_main else None
    finally:
        distributed.shutdown()


def _progress_bar(total: int, initial: int):
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=None,
                mininterval=1.0)
