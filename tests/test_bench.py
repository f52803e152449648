"""`sirenup bench` and the benchmark scripts' core functions (tiny sizes: seconds, not minutes)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sirenup.cli.app import app

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """Import benchmarks/<name>.py (a folder of scripts, not a package)."""
    path = REPO / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_json_reports_every_field():
    result = CliRunner().invoke(app, ["bench", "--device", "cpu", "--sizes", "16", "--repeats",
                                      "1", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["torch_threads"] >= 1 and data["model"] and data["scales"] == [4.0]
    (device,) = data["devices"]
    assert device["device"] == "cpu" and device["precision"] == "fp32" and device["load_s"] > 0
    (row,) = data["cases"]
    assert row["device"] == "cpu" and row["scale"] == 4.0
    assert row["lr"] == [16, 16] and row["out"] == [64, 64]
    assert row["out_mp"] == pytest.approx(64 * 64 / 1e6)
    for method in ("model", "bicubic_torch", "bicubic_pillow"):
        m = row[method]
        assert m["median_s"] > 0 and m["min_s"] <= m["median_s"]
        assert m["mp_per_s"] > 0 and math.isfinite(m["mp_per_s"])
        assert m["peak_mem_mb"] is not None and m["peak_mem_mb"] >= 0 and m["memory_kind"]
    assert row["ratio_vs_bicubic_torch"] > 0 and row["ratio_vs_bicubic_pillow"] > 0


def test_bench_table_on_stdout_fits_80_columns_with_every_scale():
    result = CliRunner().invoke(app, ["bench", "--device", "cpu", "--sizes", "12,16",
                                      "--scales", "2,3.5", "--repeats", "1", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    text = result.stdout
    for header in ("model", "bicubic", "MP/s", "peak MB", "model t /", "bicubic t"):
        assert header in text
    for case in ("x2 ", "x3.5", "12\u00b2->24\u00b2", "16\u00b2->56\u00b2"):
        assert case in text, case


def test_bench_device_all_runs_every_available_device(monkeypatch):
    import sirenup.diagnostics.bench as bench

    monkeypatch.setattr(bench, "available_devices", lambda: ["cpu", "cpu"])
    steps = []
    result = bench.run_benchmark(device="all", sizes=[8], scales=[2.0], repeats=1, warmup=0,
                                 progress=lambda done, total, what: steps.append((done, total)))
    assert [d["device"] for d in result["devices"]] == ["cpu", "cpu"]
    assert len(result["cases"]) == 2
    assert steps[-1] == (6, 6)  # one step per run: 2 devices x 3 methods x 1 run
    assert bench.bench_devices("cpu") == ["cpu"]


def test_memory_probe_reports_each_case_own_peak():
    """Not monotonic like getrusage: a second, equal allocation reports the same peak."""
    import torch

    from sirenup.diagnostics.bench import MemoryProbe

    peaks = []
    for _ in range(2):
        probe = MemoryProbe(torch.device("cpu"))
        probe.start()
        block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
        time.sleep(0.05)
        del block
        peaks.append(probe.stop())
    assert all(p is not None and 48 <= p <= 200 for p in peaks), peaks


def test_bench_cuda_without_cuda_is_a_usage_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, ["bench", "--device", "cuda", "--sizes", "16",
                                      "--repeats", "1", "--warmup", "0"])
    assert result.exit_code == 2
    assert "CUDA is not available" in result.output


@pytest.mark.parametrize("args", [["--sizes", "abc"], ["--sizes", "0"], ["--sizes", ","],
                                  ["--scales", "x"], ["--scales", "0.5"]])
def test_bench_rejects_bad_sizes_and_scales(args):
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 2
    assert "expected comma-separated" in result.output


def test_synthetic_photo_is_deterministic_and_in_range():
    from sirenup.diagnostics.bench import synthetic_photo

    a, b = synthetic_photo(24, 40, seed=3), synthetic_photo(24, 40, seed=3)
    assert a.shape == (24, 40, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and 0.0 <= a.min() and a.max() <= 1.0
    assert a.std() > 0.02  # not flat
    assert not np.array_equal(a, synthetic_photo(24, 40, seed=4))


def test_eval_quality_core_on_a_tiny_folder(tmp_path):
    eval_quality = load_script("eval_quality")
    rng = np.random.default_rng(0)
    tiny = tmp_path / "val" / "Tiny"
    tiny.mkdir(parents=True)
    pixels = rng.integers(0, 256, (30, 36, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize((60, 72), Image.BICUBIC).save(tiny / "one.png")

    raw = eval_quality.evaluate(tmp_path / "val", sets=["Tiny"], scales=[2.5], device="cpu")
    scores = raw["per_image"]["Tiny"]["x2.5"]["one"]
    assert set(scores) == {"model", "bicubic", "lanczos"}
    assert all(math.isfinite(v) and v > 5 for v in scores.values())

    summary = eval_quality.summarize(raw)
    row = summary["means"]["Tiny"]["x2.5"]
    assert row["margin"] == pytest.approx(row["model"] - row["lanczos"])
    assert row["meets_bar"] is (row["margin"] >= eval_quality.BAR_DB)
    scale = summary["scales"]["x2.5"]
    assert scale["beats_bicubic_everywhere"] is (scores["model"] > scores["bicubic"])
    text = eval_quality.markdown(raw, summary)
    assert "| Tiny | x2.5 |" in text

    with pytest.raises(ValueError, match="no set"):
        eval_quality.evaluate(tmp_path / "val", sets=["Set5"], scales=[2])


def test_bench_speed_inputs_are_nested_crops(tmp_path):
    bench_speed = load_script("bench_speed")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)) \
        .save(photo)
    paths = bench_speed.make_inputs(photo, tmp_path, (32, 96))  # 96 > 50: enlarged first
    assert Image.open(paths[32]).size == (32, 32)
    assert Image.open(paths[96]).size == (96, 96)
    assert bench_speed.find_photo(tmp_path / "missing") == bench_speed.SAMPLE


def test_bench_speed_against_another_tree_interleaves_and_compares(tmp_path, monkeypatch):
    bench_speed = load_script("bench_speed")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 40), (90, 120, 150)).save(photo)
    other = tmp_path / "v1"
    calls = []

    def fake_run(cmd, tree=bench_speed.REPO):
        calls.append(tree)
        seconds = 0.5
        if "upscale" in cmd:
            out = Path(cmd[cmd.index("-o") + 1])
            side = Image.open(cmd[cmd.index("upscale") + 1]).size[0]
            Image.new("RGB", (side * 2, side * 2)).save(out)
            seconds = 1.0 + side / 10  # the same per-pixel cost ...
        return seconds * (1.25 if tree == other else 1.0), ""  # ... 25 % slower there

    monkeypatch.setattr(bench_speed, "run", fake_run)
    monkeypatch.setattr(bench_speed, "probe_python", lambda code: "False")
    args = bench_speed.argparse.Namespace(
        photo=photo, scale=2.0, repeats=2, warmup=1, device="cpu", model=None, tile=None,
        small=8, large=16, against=other)
    result = bench_speed.benchmark(args)
    per_round = 4  # --help, --version, two upscales
    trees = calls[::per_round]
    assert trees == [bench_speed.REPO, other, other, bench_speed.REPO, bench_speed.REPO, other]
    assert result["comparison"]["throughput_share"] == pytest.approx(1.25)
    assert result["comparison"]["large_speed_ratio_median"] == pytest.approx(1.25)
    assert result["against"]["runs"]["upscale_16"]["times_s"] == [pytest.approx(3.25)] * 2
    env = {"date": "d", "cpu": "c", "cpu_count": 2, "gpu": None, "python": "3", "torch": "t",
           "torch_threads": 2, "omp_num_threads": None, "device": "cpu"}
    text = bench_speed.markdown(result, env, "python bench_speed.py", (8, 16))
    assert f"From `{other}`" in text and "**1.25**" in text


def test_specks_tells_sparse_specks_from_grain():
    specks = load_script("specks")
    rng = np.random.default_rng(5)
    flat = np.full((80, 90), 120.0)
    mask = specks.flat_mask(flat)
    assert mask[specks.BORDER:-specks.BORDER, specks.BORDER:-specks.BORDER].all()
    assert not mask[:specks.BORDER].any() and not mask[:, -specks.BORDER:].any()
    grain = flat + rng.normal(0, 1.0, flat.shape)
    dotted = flat + 12.0 * (rng.random(flat.shape) < 0.01)
    assert abs(specks.detail_excess_kurtosis(grain, mask)) < 0.5
    assert specks.detail_excess_kurtosis(dotted, mask) > 20
    assert math.isnan(specks.detail_excess_kurtosis(flat, mask))  # no detail: no score
    assert not specks.flat_mask(grain + 40 * (np.indices(flat.shape)[1] % 2)).any()  # stripes
    result = {"per_image": {"A/x": {"HR": 1.0, "m": 30.0}, "A/y": {"HR": 3.0, "m": float("nan")}},
              "flat_share": {"A/x": 0.5, "A/y": 0.4}}
    table = specks.summary(result)
    assert table["HR"] == {"median": 2.0, "mean": 2.0, "images": 2}
    assert table["m"]["images"] == 1 and table["m"]["median"] == 30.0
    assert "| m | 30.0 | 30.0 | 1 |" in specks.markdown(table, 4.0)


def test_flip_ensemble_undoes_its_flips_and_raises_detail():
    flip_ensemble = load_script("flip_ensemble")
    rng = np.random.default_rng(3)
    lr = rng.random((6, 5, 3)).astype(np.float32)

    def repeat(rgb, size):  # nearest-neighbour x3: equivariant under flips
        return np.repeat(np.repeat(rgb, 3, axis=0), 3, axis=1)

    flips = [(False, False), (False, True), (True, False), (True, True)]
    outputs = flip_ensemble.flip_outputs(repeat, lr, (15, 18), flips)
    for flip in flips:
        assert np.array_equal(outputs[flip], repeat(lr, None)), flip
    plain = flip_ensemble.raised_mean(list(outputs.values()), 1.0, 3.0)
    assert np.array_equal(plain, np.round(repeat(lr, None) * 255).astype(np.uint8))
    raised = flip_ensemble.raised_mean(list(outputs.values()), 1.5, 3.0).astype(float)
    assert raised.std() > plain.astype(float).std()  # more detail, same picture
    assert abs(raised.mean() - plain.mean()) < 2
    result = {"Set5": {"1/1": {"psnr_y": [30.0, 32.0], "texture": [0.5, 0.7]}}}
    assert "| 1/1 | 31.000 (0.600) |" in flip_ensemble.markdown(result, "m", 4.0)
