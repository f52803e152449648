"""``sirenup compare``: outputs, montage, metrics with the protocol, usage errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import build_image
from PIL import Image

from sirenup.engine.metrics import protocol_pair, psnr_y
from sirenup.engine.montage import make_montage, most_detailed_region

SAMPLE = Path(__file__).resolve().parents[1] / "sirenup" / "assets" / "sample.png"


def test_self_on_a_photo(invoke, tmp_path):
    photo = tmp_path / "photo.png"
    shutil.copy(SAMPLE, photo)
    result = invoke("compare", photo, "--self", "--scale", "4", "--json", "-d", tmp_path / "c")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "self" and report["out_size"] == [256, 256]
    assert report["in_size"] == [64, 64]
    images = [Path(p) for p in report["images"]]
    assert len(images) >= 4 and Path(report["montage"]) in images
    for path in images:
        with Image.open(path) as im:
            im.load()
    methods = {r["method"]: r for r in report["methods"]}
    assert set(methods) == {"nearest", "bilinear", "bicubic", "lanczos", "sirenup-base"}
    for record in methods.values():
        assert record["psnr_rgb"] > 10 and record["psnr_y"] > 10 and 0 < record["ssim"] <= 1
        assert record["seconds"] >= 0 and Path(record["output"]).is_file()
        with Image.open(record["output"]) as im:
            assert im.size == (256, 256)
    # the numbers follow engine/metrics.py's protocol
    with Image.open(SAMPLE) as im:
        hr, _ = protocol_pair(im, 4)
    with Image.open(methods["bicubic"]["output"]) as im:
        assert methods["bicubic"]["psnr_y"] == pytest.approx(psnr_y(im, hr, 4), abs=1e-3)
    assert methods["bicubic"]["psnr_y"] > methods["nearest"]["psnr_y"]
    assert methods["sirenup-base"]["psnr_y"] > methods["bicubic"]["psnr_y"]
    assert methods["sirenup-base"]["psnr_rgb"] > methods["bicubic"]["psnr_rgb"]
    assert "PSNR" in result.stderr and "bicubic" in result.stderr  # the table, on stderr


def test_reference_mode(invoke, tmp_path):
    hr = build_image("RGB", (48, 40))
    hr.save(tmp_path / "hr.png")
    hr.resize((24, 20), Image.Resampling.BICUBIC).save(tmp_path / "lr.png")
    result = invoke("compare", tmp_path / "lr.png", "--reference", tmp_path / "hr.png",
                    "--methods", "nearest,bicubic", "--json", "-d", tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "reference" and report["out_size"] == [48, 40]
    assert report["scale"] == 2
    assert [r["method"] for r in report["methods"]] == ["nearest", "bicubic"]
    assert all("psnr_y" in r and "ssim" in r for r in report["methods"])
    assert Path(report["montage"]).is_file()


def test_plain_mode_with_crop(invoke, make_image, tmp_path):
    result = invoke("compare", make_image("in.png"), "--scale", "2", "--methods",
                    "bilinear,lanczos,sirenup-base", "--crop", "4,6,10,8", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "plain" and report["out_size"] == [48, 40]
    assert report["crop"] == [4, 6, 10, 8] and not report["crop_auto"]
    assert all("psnr_y" not in r for r in report["methods"])
    assert Path(report["output_dir"]) == tmp_path / "in_compare"
    assert len(report["images"]) == 4  # three methods and the montage


@pytest.mark.parametrize(("args", "fragment"), [
    (["--self", "--reference", "REF"], "either"),
    (["--methods", "bicubic,no-such-model"], "--methods"),
    (["--methods", ","], "--methods"),
    (["--crop", "1,2,3"], "--crop"),
    (["--crop", "90,70,20,20"], "--crop"),
    (["--self", "--width", "40"], "--self"),
    (["--reference", "REF", "--scale", "2"], "--reference"),
    (["--scale", "0.5"], "--scale"),
])
def test_bad_usage_exit_2(invoke, make_image, tmp_path, args, fragment):
    ref = make_image("ref.png", size=(48, 40))
    args = [str(ref) if a == "REF" else a for a in args]
    result = invoke("compare", make_image("in.png"), *args, "-d", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0]
    assert not (tmp_path / "out").exists()


def test_most_detailed_region_finds_the_texture():
    rng = np.random.default_rng(0)
    image = np.full((120, 160, 3), 128, np.uint8)
    image[70:102, 20:52] = rng.integers(0, 255, (32, 32, 3))
    x, y, w, h = most_detailed_region(image, 32)
    assert (w, h) == (32, 32)
    assert abs(x - 20) <= 2 and abs(y - 70) <= 2
    assert most_detailed_region(np.zeros((5, 7, 3), np.uint8)) == (0, 0, 5, 5)


def test_montage_layout():
    panels = [(f"m{i}", ["line"], Image.new("RGB", (40, 30), (i * 50, 0, 0))) for i in range(3)]
    montage = make_montage(panels, (5, 5, 10, 10))
    assert montage.mode == "RGB"
    assert montage.size[0] > 3 * 192  # small panels are enlarged to be readable
