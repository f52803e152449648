"""Training on 2 CPU processes under torchrun (DistributedDataParallel over gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sirenup.cli.app import app
from sirenup.training.loop import CHECKPOINT, WEIGHTS
from tests.test_training import photo

ROOT = Path(__file__).resolve().parents[1]

# Each rank trains a few steps and saves a digest of its weights, so the test can check that
# both ranks end with identical weights (DDP averages gradients) while drawing their own crops.
RANK_SCRIPT = textwrap.dedent("""
    import sys, torch
    from sirenup.training import distributed
    from sirenup.training.loop import TrainConfig, Trainer

    data, out, digests = sys.argv[1:4]
    gan = {"window": 32, "d_channels": 8} if sys.argv[4] == "gan" else None
    info = distributed.init(torch.device("cpu"))
    cfg = TrainConfig(data=[data], out=out, steps=3, batch=4, patch=16, queries=32, warmup=1,
                      scale_min=2.0, scale_max=3.0, checkpoint_every=2, seed=0, gan=gan)
    trainer = Trainer(cfg, log=lambda m: None)
    first = trainer.sampler.sample(torch.Generator().manual_seed(cfg.seed + 1000003 * info.rank))
    trainer.run()
    torch.save({"weights": trainer.model.state_dict(), "lr": first.lr, "share":
                trainer.sampler.batch}, f"{digests}/rank{info.rank}.pt")
    distributed.shutdown()
""")


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def data_dir(gan_photos) -> Path:
    return gan_photos


@pytest.mark.parametrize("mode", ["l1", "gan"])
def test_two_ranks_end_with_identical_weights(data_dir, tmp_path, mode):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    digests = tmp_path / "digests"
    digests.mkdir()
    result = torchrun(str(script), str(data_dir), str(tmp_path / "run"), str(digests), mode,
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(digests / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["share"] == ranks[1]["share"] == 2  # the global batch of 4, split
    assert not torch.equal(ranks[0]["lr"], ranks[1]["lr"])  # each rank its own crops
    for name, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][name]), name
    # rank 0 alone wrote the run's files; the export matches the weights the ranks hold
    state = torch.load(tmp_path / "run" / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["step"] == 3 and len(state["gen_per_rank"]) == 2


def test_torchrun_cli_gan_from_base_then_resume_and_upscale(data_dir, tmp_path):
    """The issue's command: torchrun -m sirenup train ... --gan --init sirenup-base, resumed."""
    run = tmp_path / "RUN"
    args = ["-m", "sirenup", "train", str(data_dir), "--out", str(run),
            "--batch", "2", "--patch", "16", "--scale-min", "2", "--scale-max", "3",
            "--gan", "--gan-window", "32", "--d-channels", "8", "--init", "sirenup-base",
            "--device", "cpu"]
    result = torchrun(*args, "--steps", "2", cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    result = torchrun(*args, "--steps", "3", "--resume", cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("resumed from") == 1  # rank 0 alone speaks
    state = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["step"] == 3

    small = tmp_path / "small.png"
    photo(5, 24, 20).save(small)
    out = tmp_path / "big.png"
    upscaled = CliRunner().invoke(app, ["upscale", str(small), "-o", str(out), "--scale", "2",
                                        "--model", str(run / WEIGHTS), "--device", "cpu"])
    assert upscaled.exit_code == 0, upscaled.output
    assert out.is_file()


# -- failures: one line, the right exit code, nothing partial, nothing of the user's replaced ------

def test_dist_timeout_reaches_the_process_group(monkeypatch):
    import datetime

    import torch

    from sirenup.training import distributed

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda **kwargs: seen.update(kwargs))
    distributed.init(torch.device("cpu"), 42)
    assert seen["timeout"] == datetime.timedelta(seconds=42)
    distributed._current = distributed.Distributed()
