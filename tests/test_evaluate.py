"""``evaluation/evaluate.py`` (per-image PSNR-Y, SSIM, texture ratio; the training loop's table)
and ``evaluation/degrade_eval.py`` (deterministic JPEG / noise / blur of the protocol's LR)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sirenup.evaluation.degrade_eval import Degradation, parse_degradation
from sirenup.evaluation.evaluate import (
    evaluate_table,
    pillow_upscaler,
    protocol_case,
    score_cases,
    score_output,
)
from sirenup.evaluation.metrics import protocol_pair, psnr_y, texture_bands, texture_energies
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig


def textured(seed: int, width: int, height: int) -> Image.Image:
    """A photo-like test image: smooth colour gradients plus fine random texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 150 + 50
    texture = rng.normal(0, 25, (height, width, 1))
    return Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("val")
    for set_name, seeds in (("SetA", (1, 2)), ("SetB", (3,))):
        (root / set_name).mkdir()
        for seed in seeds:
            textured(seed, 40 + seed * 4, 36).save(root / set_name / f"im{seed}.png")
    return root


def tiny_model() -> LiifSiren:
    torch.manual_seed(0)
    return LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=1, hidden=16)).eval()


# -- degradations ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,kind,amount", [
    ("jpeg75", "jpeg", 75), ("JPEG90", "jpeg", 90), ("noise5", "noise", 5),
    ("noise2.5", "noise", 2.5), ("blur1", "blur", 1.0), ("blur0.5", "blur", 0.5),
])
def test_parse_degradation(text, kind, amount):
    degradation = parse_degradation(text)
    assert degradation == Degradation(kind, amount)
    assert parse_degradation(degradation.name) == degradation


@pytest.mark.parametrize("text", [None, "", "none", "clean"])
def test_no_degradation(text):
    assert parse_degradation(text) is None


@pytest.mark.parametrize("text", ["jpeg0", "jpeg101", "jpeg7.5", "noise0", "blur", "sharpen2",
                                  "noise-1", "jpeg75x"])
def test_bad_degradation_names(text):
    with pytest.raises(ValueError, match="degradation"):
        parse_degradation(text)


def test_jpeg_is_pillows_encoder_in_memory_and_deterministic():
    image = textured(4, 48, 40)
    out = parse_degradation("jpeg75")(image)
    assert out.size == image.size and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(parse_degradation("jpeg75")(image)))
    difference = np.abs(np.asarray(out, np.float64) - np.asarray(image, np.float64)).mean()
    assert 0.5 < difference < 20
    better = np.abs(np.asarray(parse_degradation("jpeg95")(image), np.float64)
                    - np.asarray(image, np.float64)).mean()
    assert better < difference


def test_noise_has_the_requested_sigma_and_a_fixed_seed():
    grey = Image.new("RGB", (128, 128), (128, 128, 128))  # mid-grey: no clipping
    out = parse_degradation("noise10")(grey)
    noise = np.asarray(out, np.float64) - 128
    assert noise.std() == pytest.approx(10, rel=0.03) and abs(noise.mean()) < 0.2
    assert np.array_equal(np.asarray(out), np.asarray(parse_degradation("noise10")(grey)))
    assert np.asarray(out).dtype == np.uint8


def test_blur_lowers_fine_detail_and_keeps_flat_areas():
    image = textured(5, 64, 64)
    out = parse_degradation("blur1")(image)
    assert texture_energies(out, 2)[0] < 0.2 * texture_energies(image, 2)[0]
    flat = Image.new("RGB", (20, 20), (10, 200, 90))
    assert np.array_equal(np.asarray(parse_degradation("blur1")(flat)), np.asarray(flat))


# -- scoring -----------------------------------------------------------------------------------

def test_protocol_case_degrades_only_the_lr(val_dir):
    path = val_dir / "SetA" / "im1.png"
    clean = protocol_case(path, 2.0)
    noisy = protocol_case(path, 2.0, parse_degradation("noise5"))
    assert np.array_equal(np.asarray(clean.hr), np.asarray(noisy.hr))
    assert not np.array_equal(np.asarray(clean.lr), np.asarray(noisy.lr))
    with Image.open(path) as im:
        hr, lr = protocol_pair(im, 2)
    assert np.array_equal(np.asarray(clean.lr), np.asarray(lr)) and clean.name == "im1"
    assert protocol_case(path, 2.0) is clean  # cached: validation decodes once


def test_score_output_of_the_hr_itself(val_dir):
    case = protocol_case(val_dir / "SetA" / "im2.png", 3.0)
    scores = score_output(case.hr, case)
    assert scores["psnr_y"] == math.inf and scores["ssim"] == pytest.approx(1.0)
    assert scores["texture"] == pytest.approx(1.0)
    assert scores["texture_bands"] == pytest.approx([1.0] * len(texture_bands(3)))
    assert set(score_output(case.hr, case, ("ssim",))) == {"ssim"}
    with pytest.raises(ValueError, match="unknown"):
        score_output(case.hr, case, ("lpips",))


def test_bicubic_rows_follow_the_protocol(val_dir):
    paths = sorted((val_dir / "SetA").iterdir())
    bicubic = pillow_upscaler(Image.BICUBIC)
    cases = [protocol_case(p, 2.0) for p in paths]
    rows = score_cases(bicubic, cases)
    assert [r["image"] for r in rows] == ["im1", "im2"]
    for row, case in zip(rows, cases, strict=True):
        assert row["psnr_y"] == pytest.approx(psnr_y(case.lr.resize(case.hr.size, Image.BICUBIC),
                                                     case.hr, 2))
        assert 0 < row["ssim"] < 1 and 0 < row["texture"] < 0.6  # bicubic is smooth


def test_evaluate_table_has_one_row_per_set_and_scale_and_every_metric(val_dir):
    plain = evaluate_table(tiny_model(), val_dir, [2, 3.5], metrics=("psnr_y",))
    assert set(plain) == {"SetA", "SetB"}
    assert set(plain["SetA"]) == {"x2", "x3.5"}
    assert all(set(row) == {"psnr_y"} and math.isfinite(row["psnr_y"])
               for row in plain["SetB"].values())

    rich = evaluate_table(tiny_model(), val_dir, [2])
    row = rich["SetA"]["x2"]
    assert set(row) == {"psnr_y", "ssim", "texture", "texture_bands", "grid_lock",
                        "grid_lock_max"}
    assert 0 < row["grid_lock"] <= row["grid_lock_max"]
    assert row["psnr_y"] == pytest.approx(plain["SetA"]["x2"]["psnr_y"], abs=1e-3)
    fractional = evaluate_table(tiny_model(), val_dir, [3.5], metrics=("grid_lock",))
    assert math.isnan(fractional["SetA"]["x3.5"]["grid_lock"])  # integer scales only
    assert len(row["texture_bands"]) == len(texture_bands(2))
    baseline = evaluate_table(pillow_upscaler(Image.BICUBIC), val_dir, [2],
                              metrics=("texture",), degradation=parse_degradation("jpeg75"))
    assert set(baseline["SetB"]["x2"]) == {"texture", "texture_bands"}
