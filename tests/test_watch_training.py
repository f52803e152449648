"""Training you can watch: lines around validation, metrics.jsonl from the first step,
wall and training time in the summary, curves.png, --tensorboard."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from sirenup.cli.app import app
from sirenup.training import curves
from sirenup.training.loop import METRICS
from sirenup.training.session import scalars
from tests.test_training import data_dir, val_dir  # noqa: F401  (module fixtures)

SMALL = ["--batch", "2", "--patch", "16", "--queries", "32", "--device", "cpu"]


def test_three_steps_with_val_leave_metrics_and_curves(data_dir, val_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(data_dir), "--out", str(run), "--steps", "3",
                                      "--val", str(val_dir), "--val-every", "2", *SMALL])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    assert [r["step"] for r in records if "train" in r] == [1, 3]
    assert [r["step"] for r in records if "psnr_y" in r] == [2, 3]
    with Image.open(run / curves.CURVES) as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 3 * im.size[1] / 2  # three panels
    err = result.stderr
    assert "validating at step 2 on" in err and "validated in" in err
    lines = err.splitlines()
    title = next(i for i, line in enumerate(lines) if "validation, step 2" in line)
    assert lines[title].lstrip().startswith("validation, step 2")  # the table's own line
    assert "validated in" in lines[title - 1]
    summary = lines[-1]
    assert "(3 steps; wall time " in summary and "of which training" in summary


def test_one_step_summary_says_step(data_dir, tmp_path):  # noqa: F811
    result = CliRunner().invoke(app, ["train", str(data_dir), "--out", str(tmp_path / "r"),
                                      "--steps", "1", *SMALL])
    assert result.exit_code == 0, result.output
    assert "(1 step; wall time" in result.stderr
    records = (tmp_path / "r" / METRICS).read_text().splitlines()
    assert len(records) == 1 and json.loads(records[0])["step"] == 1
    assert (tmp_path / "r" / curves.CURVES).is_file()  # drawn at the end, without --val


def test_without_matplotlib_a_note_not_a_failure(data_dir, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(curves, "available", lambda: False)
    result = CliRunner().invoke(app, ["train", str(data_dir), "--out", str(tmp_path / "r"),
                                      "--steps", "1", *SMALL])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "sirenup[plot]" in notes[0]
    assert not (tmp_path / "r" / curves.CURVES).exists()


def test_tensorboard_missing_is_a_clear_usage_error(data_dir, tmp_path, monkeypatch):  # noqa: F811
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else find(name, *a))
    result = CliRunner().invoke(app, ["train", str(data_dir), "--out", str(tmp_path / "r"),
                                      "--steps", "1", "--tensorboard", *SMALL])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tensorboard package is not installed" in lines[0]
    assert not (tmp_path / "r").exists()


def test_tensorboard_scalars():
    record = {"step": 5, "lr": 1e-4, "train": {"loss": 0.1, "d_real": 0.5},
              "psnr_y": {"Set5": {"x2": 30.0, "x4": None}}}
    assert scalars(record) == [("train/loss", 0.1), ("train/d_real", 0.5), ("train/lr", 1e-4),
                               ("val/psnr_y/Set5/x2", 30.0)]


def test_gan_curves_add_the_discriminator_panel(tmp_path):
    metrics = tmp_path / METRICS
    lines = [{"step": s, "train": {"g_total": 0.5 / s, "g_pix": 0.1 / s, "d_loss": 0.6,
                                   "d_real": 0.3, "d_fake": -0.3}} for s in (1, 50, 100)]
    lines.append({"step": 100, "psnr_y": {"Set5": {"x4": 28.0}},
                  "texture": {"Set5": {"x4": 0.9}}})
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    curves.draw_curves(metrics, tmp_path / "gan.png")
    metrics.write_text(json.dumps({"step": 1, "train": {"loss": 0.1}}) + "\n")
    curves.draw_curves(metrics, tmp_path / "plain.png")
    with Image.open(tmp_path / "gan.png") as gan, Image.open(tmp_path / "plain.png") as plain:
        assert gan.size[0] > plain.size[0]  # four panels, not three


@pytest.mark.parametrize("extra", ["plot", "test"])
def test_matplotlib_is_an_extra(extra):
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert any(d.startswith("matplotlib") for d in project["project"]["optional-dependencies"][
        extra])
