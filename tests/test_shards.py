"""``batch --shard K/N`` and ``--shard auto`` across separate processes: every file of one folder
done exactly once (the many-machines recipe of the README, on one machine), and how ``auto``
reads Slurm and Kubernetes array-job variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sirenup.errors import UsageError
from sirenup.inference.shards import resolve_shard, shard_from_environment

ROOT = Path(__file__).resolve().parents[1]
SCHEDULER_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                       "SLURM_ARRAY_TASK_STEP", "JOB_COMPLETION_INDEX", "SIRENUP_SHARD_COUNT")


def tiny_folder(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"photo{i:02d}.png" for i in range(count)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(folder / name)
    return names


def start_batch(src: Path, out: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k not in SCHEDULER_VARIABLES}
    environ.update(env, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "sirenup", "--quiet", "batch", str(src), str(out), "--scale", "2",
         "--json", *args], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return json.loads(stdout)


@pytest.mark.parametrize("how", ["explicit", "slurm"])
def test_three_shard_processes_do_every_file_once(tmp_path, how):
    names = tiny_folder(tmp_path / "in", 12)
    out = tmp_path / "out"  # shared by the three processes, like a cluster's shared storage
    if how == "explicit":
        runs = [(["--shard", f"{k}/3"], {}) for k in (1, 2, 3)]
    else:  # sbatch --array=1-3
        runs = [(["--shard", "auto"], {"SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_TASK_MIN": "1",
                                       "SLURM_ARRAY_TASK_COUNT": "3"}) for k in (1, 2, 3)]
    processes = [start_batch(tmp_path / "in", out, *args, env=env) for args, env in runs]
    reports = [finish(p) for p in processes]

    done = [Path(r["input"]).name for report in reports for r in report["results"]]
    assert sorted(done) == names  # every file once: none missed, none twice
    assert sorted(p.name for p in out.iterdir()) == names
    assert [report["shard"] for report in reports] == ["1/3", "2/3", "3/3"]
    assert all(report["failed"] == 0 for report in reports)


@pytest.mark.parametrize("environ, count, expected", [
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}, None, "1/4"),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4",
      "SLURM_ARRAY_TASK_MIN": "1"}, None, "4/4"),
    ({"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_STEP": "4"}, None, "3/3"),  # --array=0-8:4
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "5"}, 5, "3/5"),
    ({"JOB_COMPLETION_INDEX": "0"}, 10, "1/10"),
    ({"JOB_COMPLETION_INDEX": "9", "SIRENUP_SHARD_COUNT": "10"}, None, "10/10"),
])
def test_auto_reads_the_scheduler(environ, count, expected):
    assert resolve_shard("auto", count, environ) == expected


@pytest.mark.parametrize("environ, count, fragment", [
    ({}, None, "no array job in the environment"),
    ({"JOB_COMPLETION_INDEX": "3"}, None, "shard_count N or set SIRENUP_SHARD_COUNT"),
    ({"JOB_COMPLETION_INDEX": "3"}, 3, "not below the count 3"),
    ({"SLURM_ARRAY_TASK_ID": "5"}, None, "not SLURM_ARRAY_TASK_COUNT"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "3"}, None, "not an integer"),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "3"}, None, "evenly spaced"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, 4, "Slurm says"),
    ({"JOB_COMPLETION_INDEX": "0"}, 0, "must be 1 or more"),
])
def test_auto_without_a_usable_scheduler_is_a_usage_error(environ, count, fragment):
    with pytest.raises(UsageError, match=fragment):
        shard_from_environment(environ, count)


def test_explicit_shards_pass_through_and_refuse_a_count():
    assert resolve_shard("2/3", None, {}) == "2/3"
    assert resolve_shard(None, None, {}) is None
    with pytest.raises(UsageError, match="only with shard auto"):
        resolve_shard("2/3", 3, {})


def test_cli_auto_outside_a_scheduler_says_so(invoke, tmp_path, monkeypatch):
    for name in SCHEDULER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    tiny_folder(tmp_path / "in", 1)
    result = invoke("batch", tmp_path / "in", tmp_path / "out", "--shard", "auto")
    assert result.exit_code == 2
    assert "no array job in the environment" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_auto_with_kubernetes_index(invoke, tmp_path, monkeypatch):
    for name in SCHEDULER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    tiny_folder(tmp_path / "in", 4)
    result = invoke("--quiet", "batch", tmp_path / "in", tmp_path / "out", "--shard", "auto",
                    "--shard-count", "2", "--scale", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["shard"] == "2/2"
