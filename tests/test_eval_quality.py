"""``benchmarks/eval_quality.py``: several models, degraded inputs, SSIM and texture columns,
per-image wins (tiny folder and tiny random models: seconds)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def load_eval_quality():
    path = REPO / "benchmarks" / "eval_quality.py"
    spec = importlib.util.spec_from_file_location("_bench_eval_quality_models", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


eval_quality = load_eval_quality()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
    from sirenup.models.weights import save_weights

    root = tmp_path_factory.mktemp("evalq")
    tiny = root / "val" / "Tiny"
    tiny.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, (18, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((40, 36), Image.BICUBIC).save(tiny / f"im{i}.png")
    models = []
    for seed, name in ((1, "a"), (2, "b")):
        torch.manual_seed(seed)
        path = root / f"{name}.safetensors"
        save_weights(path, LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=1, hidden=16)))
        models.append(str(path))
    return root, models


def test_model_labels():
    assert eval_quality.model_labels(["sirenup-base"]) == ["model"]  # the historic name
    assert eval_quality.model_labels(["sirenup-base", "runs/x/model.safetensors",
                                      "other/model.safetensors", "bicubic"]) == \
        ["sirenup-base", "model", "model-2", "bicubic-2"]


def test_two_models_on_degraded_inputs(setup):
    root, models = setup
    raw = eval_quality.evaluate(root / "val", sets=["Tiny"], scales=[2], models=models,
                                degrade="noise5", device="cpu")
    assert raw["methods"] == ["a", "b", "bicubic", "lanczos"] and raw["degrade"] == "noise5"
    scores = raw["scores"]["Tiny"]["x2"]["im0"]
    assert set(scores) == {"a", "b", "bicubic", "lanczos"}
    for row in scores.values():
        assert set(row) == {"psnr_y", "ssim", "texture", "texture_bands", "grid_lock"}
        assert math.isfinite(row["psnr_y"]) and 0 < row["ssim"] <= 1 and row["texture"] > 0
        assert row["grid_lock"] > 0
    assert raw["per_image"]["Tiny"]["x2"]["im0"]["a"] == scores["a"]["psnr_y"]

    clean = eval_quality.evaluate(root / "val", sets=["Tiny"], scales=[2], models=models[:1],
                                  device="cpu")
    assert clean["methods"] == ["model", "bicubic", "lanczos"] and clean["degrade"] is None
    assert clean["per_image"]["Tiny"]["x2"]["im0"]["bicubic"] != scores["bicubic"]["psnr_y"]

    summary = eval_quality.summarize(raw)
    images = raw["per_image"]["Tiny"]["x2"]
    wins = summary["scales"]["x2"]["wins_vs_bicubic"]
    assert wins["b"] == sum(v["b"] > v["bicubic"] for v in images.values())
    pairs = summary["scales"]["x2"]["wins_between_models"]
    assert pairs["a > b"] == sum(v["a"] > v["b"] for v in images.values())
    assert pairs["a > b"] + pairs["b > a"] <= 3
    row = summary["means"]["Tiny"]["x2"]
    assert row["texture"]["bicubic"] == pytest.approx(
        np.mean([v["bicubic"]["texture"] for v in raw["scores"]["Tiny"]["x2"].values()]))
    assert row["margin"] == pytest.approx(row["a"] - row["lanczos"])  # the first model's
    text = eval_quality.markdown(raw, summary)
    assert "noise5" in text and "| Tiny | x2 | b |" in text and "texture ratio" in text
    assert "a > b" in text


def test_main_writes_json_and_refuses_bad_options(setup, tmp_path, capsys):
    root, models = setup
    out = tmp_path / "q.json"
    code = eval_quality.main(["--val", str(root / "val"), "--sets", "Tiny", "--scales", "2",
                              "--models", ",".join(models), "--degrade", "jpeg75",
                              "--device", "cpu", "--json", str(out)])
    assert code == 0
    assert "| Tiny | x2 | a |" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["degrade"] == "jpeg75" and "wins_vs_bicubic" in data["summary"]["scales"]["x2"]
    for bad in (["--degrade", "sharpen3"], ["--degrade", "jpeg75", "--stamp"],
                ["--models", ","], ["--models", ",".join(models), "--stamp"]):
        with pytest.raises(SystemExit) as exit_info:
            eval_quality.main(["--val", str(root / "val"), *bad])
        assert exit_info.value.code == 2
