"""Distillation (``sirenup train --teacher``): flips undone exactly, the detail gain, the
student's targets, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sirenup.cli.app import app
from sirenup.cli.console import error_text
from sirenup.models.weights import load_weights
from sirenup.training.data import as_image
from sirenup.training.loop import WEIGHTS, TrainConfig, Trainer
from sirenup.training.teacher import FLIPS, Teacher, flipped_queries, gaussian_blur, raise_detail
from tests.test_gan import high_frequency_energy

BUNDLED = Path(__file__).resolve().parents[1] / "sirenup" / "assets"


class Sampler(torch.nn.Module):
    """A 'model' that samples its LR bilinearly at the queries: flip-equivariant, so every
    flip, undone, must give the same window."""

    halo = 0

    def forward(self, lr, coords, cell, window):
        h, w = lr.shape[-2:]
        grid = (coords + 0.5) * coords.new_tensor([2.0 / w, 2.0 / h]) - 1.0
        grid = grid.view(coords.shape[0], window, window, 2)
        return torch.nn.functional.grid_sample(lr, grid, align_corners=False)


def window_queries(batch: int, side: int, x0: float, y0: float, step: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(side) * step + y0, torch.arange(side) * step + x0,
                            indexing="ij")
    return torch.stack([xs, ys], dim=-1).view(1, -1, 2).expand(batch, -1, -1).contiguous()


@pytest.mark.parametrize("flips", sorted(FLIPS))
def test_every_flip_is_undone(flips):
    teacher = Teacher.__new__(Teacher)  # the flip logic alone, around an equivariant model
    teacher.model, teacher.flips, teacher.detail = Sampler(), FLIPS[flips], 1.0
    lr = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    coords = window_queries(2, 9, 1.3, 2.1, 0.7)  # off-centre, off-grid, not square in LR
    expected = Sampler()(lr, coords, None, 9)
    assert torch.allclose(teacher.target(lr, coords, None, 9, 2.0), expected, atol=1e-6)


def test_flipped_queries_are_rows_major_in_the_flipped_crop():
    lr = torch.arange(12.0).view(1, 1, 3, 4)
    coords = window_queries(1, 2, 0.0, 0.0, 1.0)  # pixels (0,0) (1,0) / (0,1) (1,1)
    flipped_lr, flipped = flipped_queries(lr, coords, 2, vertical=True, horizontal=True)
    assert torch.equal(flipped_lr, lr.flip(-1).flip(-2))
    # the window's top-left query in the flipped crop is the old bottom-right, mirrored
    assert flipped.view(2, 2, 2)[0, 0].tolist() == [2.0, 1.0]
    assert flipped.view(2, 2, 2)[1, 1].tolist() == [3.0, 2.0]


def test_raise_detail_scales_fine_detail_and_keeps_the_rest():
    generator = torch.Generator().manual_seed(1)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 10, 10, generator=generator),
                                             size=(40, 40), mode="bilinear")
    image = smooth + 0.05 * torch.randn(1, 3, 40, 40, generator=generator)
    assert torch.equal(raise_detail(image, 1.0, 4.0), image)
    raised = raise_detail(image, 1.5, 4.0)
    ratio = high_frequency_energy(raised, 4.0) / high_frequency_energy(image, 4.0)
    assert 1.8 < ratio.item() < 2.3  # energy about x 1.5², less the blur's leak below
    coarse = (gaussian_blur(raised, 3.0) - gaussian_blur(image, 3.0)).abs().mean()
    assert coarse < 0.2 * (raised - image).abs().mean()  # the change is fine detail


def test_a_student_of_itself_starts_at_zero_loss(gan_photos, tmp_path):
    """Student = teacher, no flips, no gain: the targets are exactly the student's output, so
    the halo, the queries and the window are passed as the student decodes them (the base:
    no refiner noise, which training draws afresh per call)."""
    plain = BUNDLED / "sirenup-base.safetensors"  # version 2, no refiner noise
    cfg = TrainConfig(data=[str(gan_photos)], out=str(tmp_path / "run"), steps=1, batch=2,
                      patch=16, scale_min=2.0, scale_max=3.0, window=24, init=str(plain),
                      teacher=str(plain), teacher_flips=1, teacher_detail=1.0)
    trainer = Trainer(cfg, log=lambda _: None)
    batch = trainer.sampler.sample(torch.Generator().manual_seed(0))
    with torch.no_grad():
        student = trainer.model(batch.lr, batch.coords, batch.cell, batch.window)
    target = trainer.teacher.target(batch.lr, batch.coords, batch.cell, batch.window,
                                    batch.scale)
    assert torch.allclose(student, target, atol=1e-6)
    photo = as_image(batch.target, batch.window)
    assert (student - photo).abs().mean() > 100 * (student - target).abs().mean()


def test_cli_distils_and_records_the_teacher(gan_photos, tmp_path):
    run = tmp_path / "RUN"
    args = ["train", str(gan_photos), "--out", str(run), "--steps", "2", "--batch", "2",
            "--patch", "16", "--scale-min", "2", "--scale-max", "3", "--window", "24",
            "--init", "sirenup-gan", "--teacher", "sirenup-gan", "--teacher-flips", "2",
            "--teacher-detail", "1.1", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    _, meta = load_weights(run / WEIGHTS)
    assert meta["training"]["teacher"] == {"name": "sirenup-gan", "flips": 2, "detail": 1.1}


@pytest.mark.parametrize("extra, code, message", [
    (["--teacher", "sirenup-gan", "--gan"], 2, "cannot be combined with --gan"),
    (["--teacher", "sirenup-gan", "--teacher-flips", "3"], 2, "expected 1, 2 or 4"),
    (["--teacher", "no-such-model"], 2, "--teacher"),
    (["--teacher", "sirenup-gan", "--blocks", "2", "--channels", "8"], 2, "refiner"),
])
def test_cli_teacher_usage_errors(gan_photos, tmp_path, extra, code, message):
    args = ["train", str(gan_photos), "--out", str(tmp_path / "R"), "--steps", "1", "--batch",
            "2", "--patch", "16", "--scale-min", "2", "--scale-max", "3", "--device", "cpu",
            *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_resume_keeps_the_targets_it_started_with(gan_photos, tmp_path):
    base = BUNDLED / "sirenup-base.safetensors"
    settings = dict(data=[str(gan_photos)], out=str(tmp_path / "run"), steps=2, batch=2,
                    patch=16, scale_min=2.0, scale_max=3.0, window=24, init=str(base))
    first = Trainer(TrainConfig(**settings, teacher=str(base), teacher_flips=2), log=lambda _: None)
    first.train_step()
    first.save_checkpoint()
    same = Trainer(TrainConfig(**settings, teacher=str(base), teacher_flips=2), log=lambda _: None)
    assert same.resume() and same.step == 1
    for changed in ({}, {"teacher": str(base), "teacher_flips": 4},
                    {"teacher": str(base), "teacher_flips": 2, "teacher_detail": 1.1}):
        trainer = Trainer(TrainConfig(**settings, **changed), log=lambda _: None)
        with pytest.raises(ValueError, match="was trained with") as refused:
            trainer.resume()
        assert "resume it with the same --teacher settings" in error_text(refused.value)
