"""The training loop behind ``sirenup train``.

L1 loss on random HR queries, Adam, cosine learning-rate decay after a short warm-up, periodic
validation with the scoring protocol, checkpoints that hold the model, optimizer and RNG states
(so ``--resume`` continues exactly), and a weights file exported at every checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sirenup.engine.evaluate import evaluate_sets
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
from sirenup.models.weights import load_weights, save_weights
from sirenup.training.data import CropSampler, load_images

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    val: str | None = None
    steps: int = 20000
    batch: int = 16
    patch: int = 48  # LR crop side, pixels
    queries: int = 2304  # HR pixels supervised per crop
    scale_min: float = 1.0
    scale_max: float = 4.0
    lr: float = 5e-4
    lr_final: float = 5e-6  # cosine decay ends here
    warmup: int = 300
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    val_every: int = 1000
    val_scales: tuple[float, ...] = (2.0, 3.0, 4.0)
    checkpoint_every: int = 500
    init: str | None = None  # start from these weights (fine-tuning), instead of random
    name: str = "sirenup-custom"  # model name written into the exported weights
    model: dict = field(default_factory=dict)  # LiifSirenConfig overrides


def learning_rate(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * t))


def build_model(cfg: TrainConfig) -> tuple[LiifSiren, dict | None]:
    """The model to train, and the metadata of the weights it starts from (None: fresh)."""
    if cfg.init:
        model, metadata = load_weights(Path(cfg.init))
        return model.train(), metadata
    overrides = dict(cfg.model)
    overrides.setdefault("max_cell_scale", cfg.scale_max)
    return LiifSiren(config=LiifSirenConfig.from_dict(overrides)), None


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
    def __init__(self, cfg: TrainConfig, *, log: Callable[[str], None] = print):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.device = torch.device(cfg.device)
        model, self.parent_metadata = build_model(cfg)
        self.model = model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.train_seconds = 0.0
        min_side = math.ceil(cfg.patch * cfg.scale_max) + 1
        images, warnings = load_images([Path(d) for d in cfg.data], min_side=min_side)
        for w in warnings:
            self.log(f"warning: {w}")
        self.log(f"{len(images)} training images, {sum(i[0].numel() for i in images) / 1e6:.1f} MP")
        self.sampler = CropSampler(images, patch=cfg.patch, batch=cfg.batch, queries=cfg.queries,
                                   scale_min=cfg.scale_min, scale_max=cfg.scale_max)

    # -- state -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "model_config": self.model.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "train_seconds": self.train_seconds,
            "gen": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "train_config": json.dumps(asdict(self.cfg)),
        }

    def resume(self) -> bool:
        path = self.out / CHECKPOINT
        if not path.exists():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        self.log(f"resumed from {path} at step {self.step}")
        return True

    def save_checkpoint(self) -> None:
        atomic_torch_save(self.state(), self.out / CHECKPOINT)
        self.export(self.out / WEIGHTS)

    def export(self, path: Path, extra: dict | None = None) -> None:
        meta = {
            "name": self.cfg.name,
            "steps": self.step,
            "train_seconds": round(self.train_seconds, 1),
            "training_data": [str(d) for d in self.cfg.data],
            "scale_range": [self.cfg.scale_min, self.cfg.scale_max],
        }
        if self.parent_metadata is not None:
            meta.update(fine_tune_lineage(self.parent_metadata, self.step, self.train_seconds))
        meta.update(extra or {})
        save_weights(path, self.model, meta)

    # -- steps -----------------------------------------------------------------------------
    def train_step(self) -> float:
        batch = self.sampler.sample(self.gen)
        lr_img = batch.lr.to(self.device)
        pred = self.model(lr_img, batch.coords.to(self.device), batch.cell.to(self.device))
        loss = torch.nn.functional.l1_loss(pred, batch.target.to(self.device))
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        return loss.item()

    def validate(self) -> dict:
        self.model.eval()
        try:
            table = evaluate_sets(self.model, Path(self.cfg.val), self.cfg.val_scales,
                                  device=self.device)
        finally:
            self.model.train()
        record = {"step": self.step, "train_seconds": round(self.train_seconds, 1),
                  "psnr_y": table}
        with open(self.out / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def run(self, *, progress: Callable | None = None, on_validate: Callable | None = None) -> None:
        cfg = self.cfg
        self.model.train()
        bar = progress(total=cfg.steps, initial=self.step) if progress else None
        loss_avg = None
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            loss = self.train_step()
            self.train_seconds += time.perf_counter() - t0
            loss_avg = loss if loss_avg is None else 0.98 * loss_avg + 0.02 * loss
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_avg:.4f}", lr=f"{learning_rate(self.step, cfg):.1e}")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
            if cfg.val and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                record = self.validate()
                if on_validate:
                    on_validate(record)
        if bar is not None:
            bar.close()
        self.save_checkpoint()
