"""The one-line hint towards sirenup-real for low-quality JPEG inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sirenup.diagnostics.hints import HintOnce, jpeg_quality, models_for, real_model_hint
from sirenup.hub.registry import REGISTRY, ModelEntry


def save_jpeg(path, quality: int) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
        path, "JPEG", quality=quality)


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_jpeg_quality_is_estimated_from_the_tables(tmp_path, quality):
    path = tmp_path / "photo.jpg"
    save_jpeg(path, quality)
    assert abs(jpeg_quality(path) - quality) <= 2


def test_not_a_jpeg_has_no_quality(tmp_path):
    png = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(png)
    assert jpeg_quality(png) is None
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert jpeg_quality(broken) is None


def test_hint_only_for_low_quality_jpegs_and_clean_models(tmp_path):
    low, high = tmp_path / "low [q].jpg", tmp_path / "high.jpg"
    save_jpeg(low, 70)
    save_jpeg(high, 95)
    hint = real_model_hint(low, "sirenup-base")
    assert hint is not None and "--model sirenup-real" in hint and "low [q].jpg" in hint
    assert real_model_hint(high, "sirenup-base") is None
    assert real_model_hint(low, "sirenup-real") is None
    assert real_model_hint(low, "my-own-model") is None
    once = HintOnce("sirenup-base")
    assert once(high) is None
    assert once(low) is not None
    assert once(low) is None  # once per run


def test_the_models_named_come_from_the_registry(tmp_path, monkeypatch):
    assert models_for("clean") == ["sirenup-base", "sirenup-gan"]
    assert models_for("degraded") == ["sirenup-real"]
    low = tmp_path / "low.jpg"
    save_jpeg(low, 70)
    monkeypatch.delitem(REGISTRY, "sirenup-real")
    assert real_model_hint(low, "sirenup-base") is None  # no model for degraded photos
    monkeypatch.setitem(REGISTRY, "my-real", ModelEntry("my-real", "r.safetensors",
                                                        inputs="degraded"))
    monkeypatch.setitem(REGISTRY, "my-clean", ModelEntry("my-clean", "c.safetensors",
                                                         inputs="clean"))
    assert "--model my-real" in real_model_hint(low, "my-clean")
    assert real_model_hint(low, "my-real") is None


def test_cli_upscale_and_batch_give_the_hint_once(tmp_path):
    from typer.testing import CliRunner

    from sirenup.cli.app import app

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        save_jpeg(folder / f"web{i}.jpg", 60)
    runner = CliRunner()
    result = runner.invoke(app, ["upscale", str(folder / "web0.jpg"), "-o",
                                 str(tmp_path / "a.png"), "--scale", "2"])
    assert result.exit_code == 0, result.output
    assert "--model sirenup-real" in result.output
    result = runner.invoke(app, ["batch", str(folder), str(tmp_path / "out"), "--scale", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.count("--model sirenup-real") == 1  # once per run
    png = tmp_path / "clean.png"
    Image.new("RGB", (16, 16)).save(png)
    result = runner.invoke(app, ["upscale", str(png), "-o", str(tmp_path / "b.png")])
    assert result.exit_code == 0 and "sirenup-real" not in result.output
