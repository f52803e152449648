"""The training loop and ``sirenup train`` on a tiny dataset."""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import warnings
import zlib
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PickledCode, no_traceback, one_error_line, train_args, write_png
from PIL import Image

from sirenup import files
from sirenup.errors import UsageError
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
from sirenup.training.loop import (
    CHECKPOINT,
    METRICS,
    WEIGHTS,
    TrainConfig,
    Trainer,
    learning_rate,
)


def photo(seed: int, width: int, height: int) -> Image.Image:
    """A random-ish image with smooth structure and some texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 10 + 1, width // 10 + 1, 3))
    smooth = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize(
        (width, height), Image.BICUBIC), dtype=np.float64)
    noise = rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    for i in range(3):
        photo(i, 120, 100).save(root / f"photo{i}.png")
    photo(9, 10, 10).save(root / "tiny.png")  # smaller than a training crop: skipped
    (root / "notes.png").write_text("this is not an image\n")  # unreadable: skipped
    (root / "readme.txt").write_text("ignored: not an image suffix\n")
    return root


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("val")
    (root / "Tiny").mkdir()
    for i in range(2):
        photo(20 + i, 48, 48).save(root / "Tiny" / f"img{i}.png")
    return root


def config(data_dir: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(data=[str(data_dir)], out=str(out), val=None, steps=6, batch=2, patch=16,
                  queries=64, warmup=2, checkpoint_every=3, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def test_data_loading_skips_bad_files_with_warnings(data_dir, tmp_path):
    messages = []
    trainer = Trainer(config(data_dir, tmp_path / "run"), log=messages.append)
    assert len(trainer.sampler.images) == 3
    assert all(tuple(im.shape) == (3, 100, 120) for im in trainer.sampler.images)
    warnings = [m for m in messages if m.startswith("warning: ")]
    assert len(warnings) == 2
    assert any("tiny.png" in w and "smaller" in w for w in warnings)
    assert any("notes.png" in w and "not a readable image" in w for w in warnings)


def test_batches_have_the_documented_shapes(data_dir, tmp_path):
    trainer = Trainer(config(data_dir, tmp_path / "run"), log=lambda m: None)
    batch = trainer.sampler.sample(torch.Generator().manual_seed(1))
    assert batch.lr.shape == (2, 3, 16, 16)
    assert batch.coords.shape == (2, 64, 2)
    assert batch.cell.shape == (2, 2)
    assert batch.target.shape == (2, 64, 3)
    assert 1.0 <= batch.scale <= 4.0
    assert batch.lr.min() >= 0 and batch.lr.max() <= 1
    assert torch.allclose(batch.lr * 255, (batch.lr * 255).round(), atol=1e-4)  # 8-bit levels
    assert batch.coords.min() >= -0.5 and batch.coords.max() <= 15.5
    assert torch.allclose(batch.cell, torch.full((2, 2), 1.0 / batch.scale), atol=1e-6)


def test_loss_decreases(data_dir, tmp_path):
    trainer = Trainer(config(data_dir, tmp_path / "run", lr=1e-3, warmup=1, steps=100),
                      log=lambda m: None)
    # real batches: the loop runs and gives finite losses
    losses = [trainer.train_step()["loss"] for _ in range(3)]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    # a fixed batch: the optimisation must fit it
    batch = trainer.sampler.sample(torch.Generator().manual_seed(7))
    trainer.sampler.sample = lambda gen: batch
    fixed = [trainer.train_step()["loss"] for _ in range(15)]
    assert fixed[-1] < 0.9 * fixed[0], fixed
    assert trainer.step == 18


def test_resume_continues_exactly(data_dir, tmp_path):
    quiet = lambda m: None  # noqa: E731
    straight = Trainer(config(data_dir, tmp_path / "A"), log=quiet)
    straight.run()
    assert straight.step == 6

    first = Trainer(config(data_dir, tmp_path / "B"), log=quiet)
    for _ in range(3):
        first.train_step()
    first.save_checkpoint()
    # a different global RNG state before resuming must not matter
    torch.manual_seed(1234)
    torch.rand(100)

    messages = []
    second = Trainer(config(data_dir, tmp_path / "B"), log=messages.append)
    assert second.resume()
    assert second.step == 3
    assert any("resumed" in m for m in messages)
    second.run()
    assert second.step == 6

    a = straight.model.state_dict()
    b = second.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert torch.equal(straight.gen.get_state(), second.gen.get_state())

    # the exported weights are those of the last step
    from sirenup.models.weights import load_weights

    model, metadata = load_weights(tmp_path / "B" / WEIGHTS)
    assert metadata["steps"] == 6
    for name, value in model.state_dict().items():
        assert torch.equal(value, b[name]), name


def test_fine_tuning_records_its_lineage(data_dir, tmp_path):
    """A run started with --init says in its weights what it started from, and the totals."""
    from sirenup.models.weights import load_weights

    parent = Trainer(config(data_dir, tmp_path / "parent", steps=3), log=lambda _: None)
    parent.run()
    child = Trainer(config(data_dir, tmp_path / "child", steps=2,
                           init=str(tmp_path / "parent" / WEIGHTS)), log=lambda _: None)
    child.run()
    _, meta = load_weights(tmp_path / "child" / WEIGHTS)
    assert meta["steps"] == 2
    assert meta["init"]["steps"] == 3
    assert meta["total_steps"] == 5
    assert meta["total_train_seconds"] >= meta["train_seconds"]


def test_deepened_encoder_starts_as_the_same_function():
    """Blocks added for --blocks start as the identity: same output, more parameters."""
    from sirenup.models.coords import cell_size, output_coords
    from sirenup.training.loop import deepen_encoder

    torch.manual_seed(0)
    model = LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=2, hidden=16)).eval()
    with torch.no_grad():
        model.decoder.out.weight.uniform_(-0.5, 0.5)
    deeper = deepen_encoder(model, 4).eval()
    assert deeper.config.n_blocks == 4 and len(deeper.encoder.blocks) == 4
    lr = torch.rand(1, 3, 9, 11)
    coords, cell = output_coords(18, 22, 9, 11), cell_size(18, 22, 9, 11)
    with torch.no_grad():
        assert torch.allclose(deeper(lr, coords, cell), model(lr, coords, cell), atol=1e-6)
    with pytest.raises(UsageError, match="blocks 1: the initial model has 2; it can be raised") \
            as refused:
        deepen_encoder(model, 1)
    assert refused.value.option == "blocks"  # the CLI spells it --blocks (test_..._cli below)


def test_widened_encoder_starts_as_the_same_function_and_then_learns():
    """Channels added for --channels leave the output unchanged, and the new paths get
    gradients (zero weights from new channels into old ones, not zero new channels)."""
    from sirenup.models.coords import cell_size, output_coords
    from sirenup.training.loop import widen_encoder

    torch.manual_seed(0)
    model = LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=2, hidden=16)).eval()
    with torch.no_grad():
        model.decoder.out.weight.uniform_(-0.5, 0.5)
    wider = widen_encoder(model, 12).eval()
    assert wider.config.channels == 12 and wider.encoder.head.out_channels == 12
    lr = torch.rand(1, 3, 9, 11)
    coords, cell = output_coords(18, 22, 9, 11), cell_size(18, 22, 9, 11)
    with torch.no_grad():
        assert torch.allclose(wider(lr, coords, cell), model(lr, coords, cell), atol=1e-6)
    wider(lr, coords, cell).square().mean().backward()
    into_old = wider.encoder.blocks[0].conv1.weight.grad[:8, 8:]
    assert into_old.abs().max() > 0  # the new channels' paths open at the first step
    with pytest.raises(UsageError, match="channels 4: the initial model has 8"):
        widen_encoder(model, 4)


def test_cli_train_blocks_deepens_an_init_model(data_dir, tmp_path):
    """--init with --blocks and --channels trains a deeper, wider model; its export upscales
    through the CLI."""
    from typer.testing import CliRunner

    from sirenup.cli.app import app
    from sirenup.models.weights import load_weights

    runner = CliRunner()
    parent = Trainer(config(data_dir, tmp_path / "parent", steps=1), log=lambda _: None)
    parent.run()
    run_dir = tmp_path / "deep"
    result = runner.invoke(app, [
        "train", str(data_dir), "--out", str(run_dir), "--steps", "2", "--batch", "2",
        "--patch", "16", "--queries", "32", "--init", str(tmp_path / "parent" / WEIGHTS),
        "--blocks", "6", "--channels", "40"])
    assert result.exit_code == 0, result.output
    model, _ = load_weights(run_dir / WEIGHTS)
    assert model.config.n_blocks == 6 and model.config.channels == 40
    shrink = runner.invoke(app, [
        "train", str(data_dir), "--out", str(tmp_path / "small"), "--steps", "1",
        "--init", str(run_dir / WEIGHTS), "--channels", "20"])
    assert shrink.exit_code == 2
    assert "--channels 20: the initial model has 40; it can be raised, not lowered" in shrink.output
    assert "Traceback" not in shrink.output
    result = runner.invoke(app, ["upscale", str(next(data_dir.glob("*.png"))), "-o",
                                 str(tmp_path / "out.png"), "--scale", "2",
                                 "--model", str(run_dir / WEIGHTS)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.png").is_file()


def test_resume_without_checkpoint_is_false(data_dir, tmp_path):
    trainer = Trainer(config(data_dir, tmp_path / "empty"), log=lambda m: None)
    assert not trainer.resume()
    assert trainer.step == 0


def test_learning_rate_schedule():
    cfg = TrainConfig(data=[], out="x", steps=1000, warmup=100, lr=1e-3, lr_final=1e-5)
    assert learning_rate(0, cfg) == pytest.approx(1e-3 / 100)
    assert learning_rate(49, cfg) == pytest.approx(1e-3 * 50 / 100)
    assert learning_rate(99, cfg) == pytest.approx(1e-3)
    assert learning_rate(100, cfg) == pytest.approx(1e-3)  # decay starts at the peak
    assert learning_rate(550, cfg) == pytest.approx((1e-3 + 1e-5) / 2)  # cosine midpoint
    assert learning_rate(1000, cfg) == pytest.approx(1e-5)
    assert learning_rate(5000, cfg) == pytest.approx(1e-5)  # past the end: stays at the floor
    rates = [learning_rate(s, cfg) for s in range(1001)]
    assert all(b > a for a, b in pairwise(rates[:100]))  # warm-up rises
    assert all(b <= a for a, b in pairwise(rates[100:]))  # decay never rises
    assert max(rates) == pytest.approx(1e-3)
    no_warmup = TrainConfig(data=[], out="x", steps=10, warmup=0, lr=2e-4, lr_final=0.0)
    assert learning_rate(0, no_warmup) == pytest.approx(2e-4)
    assert learning_rate(10, no_warmup) == pytest.approx(0.0)


# -- the CLI -----------------------------------------------------------------------------------

def test_cli_train(data_dir, val_dir, tmp_path):
    from typer.testing import CliRunner

    from sirenup.cli.app import app

    run_dir = tmp_path / "RUN"
    runner = CliRunner()
    args = ["train", str(data_dir), "--out", str(run_dir), "--steps", "4", "--batch", "2",
            "--patch", "16", "--queries", "32", "--val", str(val_dir), "--val-every", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (run_dir / WEIGHTS).is_file()
    assert (run_dir / CHECKPOINT).is_file()
    records = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]
    assert [r["step"] for r in records if "train" in r] == [1, 4]  # from the first step on
    records = [r for r in records if "psnr_y" in r]
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        table = r["psnr_y"]["Tiny"]
        assert set(table) == {"x2", "x3", "x4"}
        assert all(math.isfinite(v) and 10 < v < 60 for v in table.values())
        texture = r["texture"]["Tiny"]  # validation reports the texture ratio too
        assert set(texture) == {"x2", "x3", "x4"}
        assert all(math.isfinite(v) and 0 < v < 3 for v in texture.values())
    state = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["step"] == 4

    # --resume continues from the checkpoint
    result = runner.invoke(app, args[:4] + ["--steps", "6"] + args[6:] + ["--resume"])
    assert result.exit_code == 0, result.output
    state = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["step"] == 6
    records = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]
    assert [r["step"] for r in records if "psnr_y" in r] == [2, 4, 6]
    assert [r["step"] for r in records if "train" in r] == [1, 4, 5, 6]


def test_cli_train_usage_errors(data_dir, tmp_path):
    from typer.testing import CliRunner

    from sirenup.cli.app import app

    runner = CliRunner()
    base = ["train", "--out", str(tmp_path / "RUN"), "--steps", "1"]
    result = runner.invoke(app, base + [str(tmp_path / "missing")])
    assert result.exit_code == 2
    result = runner.invoke(app, base + [str(data_dir), "--val", str(tmp_path / "nope")])
    assert result.exit_code == 2
    result = runner.invoke(app, base + [str(data_dir), "--scale-min", "3", "--scale-max", "2"])
    assert result.exit_code == 2
    assert not (tmp_path / "RUN" / CHECKPOINT).exists()


# -- failures: one line, the right exit code, nothing partial, nothing of the user's replaced ------

def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A PNG whose header declares ``width`` x ``height`` over a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_training_data_skips_bombs_fifos_and_folders(tmp_path):
    from sirenup.training.data import list_images, load_images

    write_png(tmp_path / "good.png", size=(40, 40))
    bomb_png(tmp_path / "bomb.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "folder.png").mkdir()
    assert [p.name for p in list_images([tmp_path])] == ["bomb.png", "good.png"]
    images, warnings = load_images([tmp_path], min_side=16)
    assert len(images) == 1
    [warning] = warnings
    assert "bomb.png" in warning and "decompression bomb" in warning


TRAIN = ("train", "--steps", "1", "--batch", "2", "--patch", "16", "--queries", "16",
         "--device", "cpu")


def test_train_out_that_is_a_file_is_bad_usage(invoke, tmp_path):
    write_png(tmp_path / "data" / "a.png", size=(64, 64))
    out = tmp_path / "run"
    out.write_text("not a folder")
    result = invoke(*TRAIN, tmp_path / "data", "--out", out)
    assert result.exit_code == 2
    assert "--out" in one_error_line(result) and out.read_text() == "not a folder"


def test_bad_val_image_fails_before_training(invoke, tmp_path, monkeypatch):
    from sirenup.training import loop

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(loop.Trainer, "run", no_training)
    write_png(tmp_path / "data" / "a.png", size=(64, 64))
    val = tmp_path / "val"
    write_png(val / "good.png", size=(64, 64))
    (val / "broken.png").write_bytes(b"")
    result = invoke(*TRAIN, tmp_path / "data", "--out", tmp_path / "run", "--val", val)
    assert result.exit_code == 1
    line = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "broken.png" in line[0] and "--val" in line[0]
    no_traceback(result)


@pytest.mark.parametrize("content", ["empty", "code", "list"])
def test_damaged_checkpoint_is_one_clear_line(invoke, tmp_path, content):
    import torch

    marker = tmp_path / "ran"
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = run / "checkpoint.pt"
    if content == "empty":
        checkpoint.write_bytes(b"")
    elif content == "code":
        checkpoint.write_bytes(pickle.dumps(PickledCode(marker)))
    else:
        torch.save([1, 2], checkpoint)
    write_png(tmp_path / "data" / "a.png", size=(96, 96))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        result = invoke(*TRAIN, tmp_path / "data", "--out", run, "--resume")
    no_traceback(result)
    assert result.exit_code == 1
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "its checkpoint is damaged" in errors[0]
    assert [str(w.message) for w in shown if "pickle" in str(w.message)] == []
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.safetensors", "checkpoint.pt", "metrics.jsonl"])
def test_train_never_replaces_a_run_without_resume(invoke, tmp_path, name):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_bytes(b"hours of training")
    result = invoke(*train_args(tmp_path, out))
    assert result.exit_code == 2
    assert "--resume" in one_error_line(result)
    assert (out / name).read_bytes() == b"hours of training"
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_a_second_training_on_the_same_folder_fails_at_once(invoke, tmp_path):
    import filelock

    from sirenup.training.run_folder import LOCK

    out = tmp_path / "run"
    out.mkdir()
    with filelock.FileLock(str(out / LOCK)):  # a training holds the folder
        result = invoke(*train_args(tmp_path, out))
    assert result.exit_code == 1
    assert "another training" in one_error_line(result)
    assert not (out / "model.safetensors").exists()


def test_train_checks_val_and_metrics_at_its_start(invoke, tmp_path):
    val = tmp_path / "val"
    val.mkdir()
    (val / "notes.txt").write_text("no image here")
    result = invoke(*train_args(tmp_path, tmp_path / "run"), "--val", val)
    assert result.exit_code == 2
    assert "holds no image" in one_error_line(result)
    # a metrics log that is a FIFO fails at once, instead of blocking its first write
    fifo = tmp_path / "metrics.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(files.SirenupError, match="cannot write|regular"):
        files.append_line(fifo, "{}")
