"""The training loop behind ``sirenup train``.

L1 loss on random HR queries, Adam, cosine learning-rate decay after a short warm-up, periodic
validation with the scoring protocol, checkpoints that hold the model, optimizer and RNG states
(so ``--resume`` continues exactly), and a weights file exported at every checkpoint.

Options on top of that: ``--gan`` (adversarial fine-tuning on dense HR windows, ``gan.py``),
``--degrade real`` (realistic LR degradations, ``degrade.py``), and several processes under
torchrun (DistributedDataParallel, ``distributed.py``): each rank draws its own crops for its
share of the batch, gradients are averaged, and rank 0 alone logs, validates and writes files.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from sirenup.errors import OptionValueError, SirenupError, UsageError, mention
from sirenup.evaluation.evaluate import evaluate_table
from sirenup.files import append_line
from sirenup.models.grid_notch import DEFAULT_PERIODS as NOTCH_PERIODS
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
from sirenup.models.weights import WeightsError, load_weights, save_weights
from sirenup.text import plural
from sirenup.training import distributed
from sirenup.training.configs import TrainConfig
from sirenup.training.data import CropSampler, as_image, load_images
from sirenup.training.degrade import DegradeConfig, degrade
from sirenup.training.gan import Adversary, GanConfig, grid_phase_loss
from sirenup.training.grid_losses import harmonic_loss, phase_bias_loss
from sirenup.training.run_folder import CHECKPOINT, METRICS, WEIGHTS
from sirenup.training.teacher import Teacher

# Scored at each validation: PSNR-Y and texture ratio (means), grid-lock (median; x2, x3, x4)
VALIDATION_METRICS = ("psnr_y", "texture", "grid_lock")


def learning_rate(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * t))


def build_model(cfg: TrainConfig) -> tuple[LiifSiren, dict | None]:
    """The model to train, and the metadata of the weights it starts from (None: fresh)."""
    if cfg.init:
        model, metadata = load_weights(Path(cfg.init))
        model = widen_encoder(model, cfg.model.get("channels", model.config.channels))
        blocks = cfg.model.get("n_blocks", model.config.n_blocks)
        refiner = {k: cfg.model[k] for k in ("version", "refine_noise", "refine_features",
                                              "refine_hidden") if k in cfg.model}
        model = add_refiner(deepen_encoder(model, blocks), **refiner)
        model = add_adaptive_frequencies(model, cfg.model.get("adaptive_freqs", 0))
        model.config.notch_periods = cfg.model.get("notch_periods", model.config.notch_periods)
        model.config.dither = cfg.model.get("dither", model.config.dither)
        return model.train(), metadata
    overrides = dict(cfg.model)
    overrides.setdefault("max_cell_scale", cfg.scale_max)
    overrides.setdefault("notch_periods", NOTCH_PERIODS)
    return LiifSiren(config=LiifSirenConfig.from_dict(overrides)), None


def grown_model(model: LiifSiren, field: str, value: int, option: str) -> LiifSiren | None:
    """A fresh model like ``model`` with config ``field`` grown to ``value`` (None: no change);
    UsageError about ``option`` when ``value`` would shrink it (training can add capacity, not
    remove it)."""
    have = getattr(model.config, field)
    if value == have:
        return None
    if value < have:
        raise UsageError(f"{value}: the initial model has {have}; it can be raised, not lowered",
                         option=option)
    return LiifSiren(config=LiifSirenConfig.from_dict({**model.config.to_dict(), field: value}))


def deepen_encoder(model: LiifSiren, n_blocks: int) -> LiifSiren:
    """``model`` with ``n_blocks`` residual blocks in its encoder, computing the same function:
    the added blocks (after the existing ones) start with a zero second convolution, so each
    is the identity until training moves it (more capacity and context, the same start)."""
    deeper = grown_model(model, "n_blocks", n_blocks, "blocks")
    if deeper is None:
        return model
    missing, unexpected = deeper.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("encoder.blocks.") for k in missing), missing
    with torch.no_grad():
        for block in deeper.encoder.blocks[model.config.n_blocks:]:
            block.conv2.weight.zero_()
            block.conv2.bias.zero_()
    return deeper


def widen_encoder(model: LiifSiren, channels: int) -> LiifSiren:
    """``model`` with ``channels`` encoder feature channels, computing the same function
    (Net2Net-style): the old weights are kept, the weights from a new channel into an old one
    (or into the decoder) start at zero, and the new channels' own weights at their usual
    initialisation, so the first steps' gradients open the new paths."""
    wider = grown_model(model, "channels", channels, "channels")
    if wider is None:
        return model
    state = wider.state_dict()  # tensors that share the new model's storage
    with torch.no_grad():
        for name, old in model.state_dict().items():
            new = state[name]
            new[tuple(slice(0, n) for n in old.shape)] = old
            if new.dim() == 4 and new.shape[1] > old.shape[1]:  # a conv reading the features
                new[:old.shape[0], old.shape[1]:] = 0
    return wider


def add_refiner(model: LiifSiren, version: int = 1, refine_noise: int = 0,
                **sizes: int) -> LiifSiren:
    """``model`` as a version-2 model (decoder features + HR-space refiner), with the noise
    input if asked, computing the same function: the old weights are kept, the decoder's new
    feature outputs start at their initialisation, a new refiner's last convolution at zero
    (``HrRefiner``), and a noise input added to a trained refiner with zero weights.
    ``sizes``: refine_features / refine_hidden of a new refiner."""
    old = model.config
    version = max(version, 2 if refine_noise else 1, old.version)
    refine_noise = max(refine_noise, old.refine_noise)
    if version == old.version and refine_noise == old.refine_noise:
        return model
    if old.version >= 2:  # a trained refiner keeps its sizes
        sizes = {}
    refined = LiifSiren(config=LiifSirenConfig.from_dict(
        {**old.to_dict(), **sizes, "version": version, "refine_noise": refine_noise}))
    state = refined.state_dict()  # tensors that share the new model's storage
    with torch.no_grad():
        for name, value in model.state_dict().items():
            state[name][tuple(slice(0, n) for n in value.shape)] = value
        if old.version >= 2:  # inputs added to a trained refiner read nothing yet
            refined.refiner.conv1.weight[:, model.refiner.conv1.in_channels:] = 0
    return refined


def add_adaptive_frequencies(model: LiifSiren, pairs: int) -> LiifSiren:
    """``model`` with ``pairs`` content-adaptive frequency pairs (``AdaptiveFrequencies``),
    computing the same function: the old weights are kept and the new amplitudes start at
    zero. A model that already has them keeps its own (UsageError if asked for another K)."""
    have = model.config.adaptive_freqs
    if not pairs or pairs == have:
        return model
    if have:
        raise UsageError(f"{pairs}: the initial model has {have}; training does not change "
                         "their number", option="adaptive_freqs")
    grown = LiifSiren(config=LiifSirenConfig.from_dict(
        {**model.config.to_dict(), "adaptive_freqs": pairs}))
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("decoder.adaptive.") for name in missing)
    return grown


def atomic_torch_save(obj, path: Path) -> None:
    from sirenup.files import atomic_write

    atomic_write(path, lambda f: torch.save(obj, f))


def fine_tune_lineage(parent: dict, steps: int, train_seconds: float) -> dict:
    """Metadata of a run started from weights whose metadata is ``parent``: the parent's own
    record, and totals over the whole lineage (so a fine-tuned model's header tells how much
    training it really had)."""
    parent_steps = parent.get("total_steps", parent.get("steps", 0))
    parent_seconds = parent.get("total_train_seconds", parent.get("train_seconds", 0.0))
    keys = ("name", "steps", "train_seconds", "total_steps", "total_train_seconds")
    return {
        "init": {key: parent[key] for key in keys if key in parent},
        "total_steps": parent_steps + steps,
        "total_train_seconds": round(parent_seconds + train_seconds, 1),
    }


class Trainer:
    def __init__(self, cfg: TrainConfig, *, log: Callable[[str], None] = print,
                 on_metrics: Callable[[dict], None] | None = None):
        self.cfg = cfg
        self.on_metrics = on_metrics  # each record written to metrics.jsonl, after it
        self.dist = distributed.current()
        self.log = log if self.dist.is_main else (lambda message: None)
        self.out = Path(cfg.out)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.device = self.dist.device if self.dist.enabled else torch.device(cfg.device)
        model, self.parent_metadata = build_model(cfg)
        self.model = model.to(self.device)
        self.gan = GanConfig.from_dict(cfg.gan) if cfg.gan is not None else None
        self.degrade = DegradeConfig.from_dict(cfg.degrade) if cfg.degrade is not None else None
        # The adversary copies the generator for its EMA: build it before any DDP wrapper.
        self.adversary = Adversary(self.gan, self.model, device=self.device) if self.gan else None
        self.model_train = distributed.wrap(self.model, self.dist)  # what the steps call
        if self.adversary is not None:
            self.adversary.disc_train = distributed.wrap(self.adversary.disc, self.dist)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr,
                                          betas=(0.9, 0.99) if self.gan else (0.9, 0.999))
        # Each rank draws different crops: its own stream, seeded by seed and rank.
        self.gen = torch.Generator().manual_seed(cfg.seed + 1000003 * self.dist.rank)
        self.step = 0
        self.train_seconds = 0.0
        self.sampler = self._sampler()
        self.teacher = self._teacher()

    def _teacher(self) -> Teacher | None:
        """--teacher's frozen model (None without one). Its targets are dense windows, the
        student's halo wide: a student with a refiner, not under --gan (whose pixel losses are
        the photo's)."""
        cfg = self.cfg
        if cfg.teacher is None:
            return None
        if self.gan is not None:
            raise UsageError("cannot be combined with --gan: distillation replaces the photo "
                             "as the target", option="teacher")
        if not self.window:
            raise UsageError("needs a student with a refiner (decoder version 2: --refine), "
                             "whose training decodes dense windows", option="teacher")
        try:
            teacher = Teacher(cfg.teacher, flips=cfg.teacher_flips, detail=cfg.teacher_detail,
                              device=self.device)
        except WeightsError as error:
            raise SirenupError(f": {error}", option="teacher") from None
        if teacher.halo != self.model.halo:
            raise UsageError(f"its refiner needs {teacher.halo} output pixels of context, the "
                             f"student's {self.model.halo}: use a version-2 teacher",
                             option="teacher")
        return teacher

    def _sampler(self) -> CropSampler:
        cfg = self.cfg
        min_side = math.ceil(cfg.patch * cfg.scale_max) + 1
        images, warnings = load_images([Path(d) for d in cfg.data], min_side=min_side)
        for w in warnings:
            self.log(f"warning: {w}")
        self.log(f"{plural(len(images), 'training image')}, "
                 f"{sum(i[0].numel() for i in images) / 1e6:.1f} MP")
        degrade_fn = None
        if self.degrade is not None:
            degrade_fn = functools.partial(degrade, cfg=self.degrade)
        return CropSampler(images, patch=cfg.patch, batch=self.dist.share(cfg.batch),
                           queries=cfg.queries, scale_min=cfg.scale_min,
                           scale_max=cfg.scale_max, window=self.window, halo=self.model.halo,
                           degrade=degrade_fn)

    @property
    def window(self) -> int:
        """HR window side decoded per crop: --gan's, a refiner's, or 0 (random queries)."""
        if self.gan is not None:
            return self.gan.window
        return self.cfg.window if self.model.halo else 0

    @property
    def exported_model(self) -> LiifSiren:
        """What validation scores and export writes: the EMA of the generator under --gan."""
        if self.adversary is not None and self.gan.ema > 0:
            return self.adversary.ema.model
        return self.model

    # -- state -----------------------------------------------------------------------------
    def state(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "model_config": self.model.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "train_seconds": self.train_seconds,
            "gen": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "train_config": json.dumps(asdict(self.cfg)),
        }
        if self.dist.enabled:  # every rank's crop stream, so a resume continues all of them
            state["gen_per_rank"] = distributed.gather_states(self.gen.get_state(), self.dist)
        if self.adversary is not None:
            state["adversary"] = self.adversary.state_dict()
        return state

    def resume(self) -> bool:
        path = self.out / CHECKPOINT
        if not path.exists():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self._restore_generator(state)
        torch.set_rng_state(state["torch_rng"])
        if self.adversary is not None:
            if "adversary" not in state:
                raise OptionValueError(
                    f"{path} holds no discriminator: it is not a {mention('gan')} run (start a "
                    f"new run with {mention('init')} instead)")
            self.adversary.load_state_dict(state["adversary"])
        elif "adversary" in state:
            raise OptionValueError(f"{path} is a {mention('gan')} run: resume it with "
                                   f"{mention('gan')}")
        self._check_same_targets(path, json.loads(state.get("train_config", "{}")))
        self.log(f"resumed from {path} at step {self.step}")
        return True

    def _check_same_targets(self, path: Path, saved: dict) -> None:
        """A distillation run resumes with the teacher settings it started with, a run on
        the photos without any: else the targets would change half-way (OptionValueError)."""
        keys = ("teacher_flips", "teacher_detail")
        before = None if saved.get("teacher") is None else [saved.get(k) for k in keys]
        now = None if self.cfg.teacher is None else [getattr(self.cfg, k) for k in keys]
        if before != now:
            said = "no teacher" if before is None else \
                f"a teacher, flips {before[0]}, detail {before[1]:g}"
            raise OptionValueError(f"{path} was trained with {said}: resume it with the same "
                                   f"{mention('teacher')} settings")

    def _restore_generator(self, state: dict) -> None:
        per_rank = state.get("gen_per_rank")
        if self.dist.enabled and per_rank is not None and len(per_rank) == self.dist.world:
            self.gen.set_state(per_rank[self.dist.rank])
        elif self.dist.enabled:  # another number of processes: fresh, distinct streams
            self.gen.manual_seed(self.cfg.seed + 1000003 * self.dist.rank + self.step)
        else:
            self.gen.set_state(state["gen"])

    def save_checkpoint(self) -> None:
        state = self.state()  # collective under DDP: every rank takes part
        if self.dist.is_main:
            atomic_torch_save(state, self.out / CHECKPOINT)
            self.export(self.out / WEIGHTS)

    def export(self, path: Path, extra: dict | None = None) -> None:
        meta = {
            "name": self.cfg.name,
            "steps": self.step,
            "train_seconds": round(self.train_seconds, 1),
            "training_data": [str(d) for d in self.cfg.data],
            "scale_range": [self.cfg.scale_min, self.cfg.scale_max],
            "training": self.hyper_parameters(),
        }
        if self.parent_metadata is not None:
            meta.update(fine_tune_lineage(self.parent_metadata, self.step, self.train_seconds))
        meta.update(extra or {})
        save_weights(path, self.exported_model, meta)

    def hyper_parameters(self) -> dict:
        """Every setting of this run, for the exported weights' metadata."""
        cfg = self.cfg
        record = {key: getattr(cfg, key) for key in (
            "steps", "batch", "patch", "queries", "lr", "lr_final", "warmup", "grad_clip",
            "seed", "init")}
        record["processes"] = self.dist.world
        if self.gan is not None:
            record["gan"] = self.gan.to_dict()
        if self.degrade is not None:
            record["degrade"] = self.degrade.to_dict()
        if self.teacher is not None:
            record["teacher"] = {"name": self.teacher.metadata.get("name", cfg.teacher),
                                 "flips": cfg.teacher_flips, "detail": cfg.teacher_detail}
        return record

    # -- steps -----------------------------------------------------------------------------
    def train_step(self) -> dict:
        """One optimisation step -> its losses (and discriminator scores under --gan)."""
        batch = self.sampler.sample(self.gen)
        lr_img = batch.lr.to(self.device)
        queries, cell = batch.coords.to(self.device), batch.cell.to(self.device)
        pred = self.model_train(lr_img, queries, cell,
                                batch.window)  # (B, Q, 3), or (B, 3, w, w) for a window
        lr_now = learning_rate(self.step, self.cfg)
        if self.teacher is not None:  # (B, 3, w, w): the teacher's window instead of the photo
            target = self.teacher.target(lr_img, queries, cell, batch.window, batch.scale)
        else:
            target = batch.target.to(self.device)
            if batch.window:
                target = as_image(target, batch.window)
        coords = batch.window_coords() if batch.window else batch.coords
        coords = coords.to(self.device)  # the supervised pixels' LR coordinates
        if self.adversary is None:
            loss = torch.nn.functional.l1_loss(pred, target)
            parts = {"loss": loss.item()}
            if batch.window and self.cfg.lambda_grid > 0:
                grid = grid_phase_loss(pred, target, coords)
                loss = loss + self.cfg.lambda_grid * grid
                parts["grid"] = grid.item()
        else:
            loss, parts = self.adversary.generator_loss(pred, target, coords, batch.scale)
        if self.cfg.lambda_phase > 0:
            values = (pred.flatten(2).transpose(1, 2), target.flatten(2).transpose(1, 2)) \
                if batch.window else (pred, target)  # (B, N, 3) either way
            phase = phase_bias_loss(*values, coords, per_window=self.cfg.phase_per_window)
            loss = loss + self.cfg.lambda_phase * phase
            parts["phase"] = phase.item()
        if batch.window and self.cfg.lambda_harmonic > 0:
            harmonic = harmonic_loss(pred, target, batch.scale)
            loss = loss + self.cfg.lambda_harmonic * harmonic
            parts["harmonic"] = harmonic.item()
        for group in self.optimizer.param_groups:
            group["lr"] = lr_now
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        if self.adversary is not None:
            # D's schedule follows G's, scaled to its own peak learning rate.
            d_lr = lr_now * self.gan.lr_d / self.cfg.lr if self.cfg.lr > 0 else self.gan.lr_d
            parts.update(self.adversary.discriminator_step(target, pred, d_lr))
            self.adversary.ema.update(self.model)
        self.step += 1
        return parts

    def validate(self) -> dict:
        model = self.exported_model
        was_training = model.training
        model.eval()
        try:
            table = evaluate_table(model, Path(self.cfg.val), self.cfg.val_scales,
                                   device=self.device, metrics=VALIDATION_METRICS)
        finally:
            model.train(was_training)
        record = {"step": self.step, "train_seconds": round(self.train_seconds, 1)}
        for metric in VALIDATION_METRICS:  # {metric: {set: {"x2": mean}}}
            record[metric] = {name: {scale: row[metric] for scale, row in rows.items()}
                              for name, rows in table.items()}
        self.write_metrics(record)
        return record

    def write_metrics(self, record: dict) -> None:
        append_line(self.out / METRICS, json.dumps(record))  # a FIFO there: refused, no hang
        if self.on_metrics is not None:
            self.on_metrics(record)

    def log_losses(self, averages: dict) -> None:
        self.write_metrics({"step": self.step, "train_seconds": round(self.train_seconds, 1),
                            "lr": learning_rate(self.step, self.cfg),
                            "train": {k: round(v, 5) for k, v in averages.items()}})

    def validate_between_steps(self, bar, on_validate: Callable | None) -> None:
        """Validation with a line as it starts and as it ends, the bar cleared meanwhile (the
        table gets lines of its own) and its clock paused (the ETA counts steps only)."""
        if bar is not None:
            bar.clear()
        began = time.perf_counter()
        self.log(f"validating at step {self.step} on {self.cfg.val} ...")
        record = self.validate()
        self.log(f"validated in {time.perf_counter() - began:.1f} s")
        if on_validate:
            on_validate(record)
        if bar is not None:
            bar.unpause()
            bar.refresh()

    def run(self, *, progress: Callable | None = None, on_validate: Callable | None = None) -> None:
        cfg, main = self.cfg, self.dist.is_main
        self.model.train()
        bar = progress(total=cfg.steps, initial=self.step) if progress and main else None
        averages: dict[str, float] = {}
        saved_last = logged_last = logged_any = False
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            parts = self.train_step()
            self.train_seconds += time.perf_counter() - t0
            for key, value in parts.items():  # smoothed for display and the log
                averages[key] = 0.98 * averages.get(key, value) + 0.02 * value
            if bar is not None:
                bar.update(1)
                bar.set_postfix(self.postfix(averages), refresh=False)
            logged_last = (self.step % cfg.log_every == 0 or self.step == cfg.steps
                           or not logged_any)
            if main and logged_last:  # from a run's first step on, and its last
                self.log_losses(averages)
                logged_any = True
            saved_last = self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps
            if saved_last:
                self.save_checkpoint()
            if main and cfg.val and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                self.validate_between_steps(bar, on_validate)
        if bar is not None:
            bar.close()
        if main and not logged_last:  # a run with no steps (resumed at its end) logs its end
            self.log_losses(averages)
        if not saved_last:  # the loop saves its last step; this covers a run with no steps
            self.save_checkpoint()
        distributed.barrier(self.dist)  # no rank leaves before rank 0 has written the files

    def postfix(self, averages: dict) -> dict:
        """What the progress bar shows: the losses, and D's mean scores under --gan."""
        lr = f"{learning_rate(self.step, self.cfg):.1e}"
        if self.adversary is None:
            return {"loss": f"{averages['loss']:.4f}", "lr": lr}
        return {"G": f"{averages['g_total']:.4f}", "L1": f"{averages['g_pix']:.4f}",
                "D": f"{averages['d_loss']:.3f}", "D(real)": f"{averages['d_real']:+.2f}",
                "D(fake)": f"{averages['d_fake']:+.2f}", "lr": lr}
