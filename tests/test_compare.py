"""``sirenup compare``: outputs, montage (capped), metrics with the protocol (texture ratio too),
several models in one run, the report on stdout, usage errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_image
from helpers import BASE, one_error_line, png, write_png
from PIL import Image

from sirenup.evaluation.metrics import protocol_pair, psnr_y
from sirenup.evaluation.montage import (
    MAX_MONTAGE_PIXELS,
    MAX_PANEL_HEIGHT,
    layout,
    make_montage,
    most_detailed_region,
)
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
from sirenup.models.weights import save_weights

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
    # the numbers follow evaluation/metrics.py's protocol
    with Image.open(SAMPLE) as im:
        hr, _ = protocol_pair(im, 4)
    with Image.open(methods["bicubic"]["output"]) as im:
        assert methods["bicubic"]["psnr_y"] == pytest.approx(psnr_y(im, hr, 4), abs=1e-3)
    assert methods["bicubic"]["psnr_y"] > methods["nearest"]["psnr_y"]
    assert methods["sirenup-base"]["psnr_y"] > methods["bicubic"]["psnr_y"]
    assert methods["sirenup-base"]["psnr_rgb"] > methods["bicubic"]["psnr_rgb"]
    # the texture ratio: the model restores more fine detail than bicubic, less than the photo
    assert 0 < methods["bicubic"]["texture"] < methods["sirenup-base"]["texture"] < 1.2
    assert len(methods["bicubic"]["texture_bands"]) == len(report["texture_bands"]) == 3
    assert "PSNR" not in result.stderr  # with --json, stdout holds the JSON only


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


def test_reference_of_the_same_size_has_no_texture_ratio(invoke, make_image, tmp_path):
    image = make_image("same.png", size=(24, 20))
    result = invoke("compare", image, "--reference", image, "--methods", "bicubic", "--json",
                    "-d", tmp_path / "out")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)["methods"]
    assert record["psnr_y"] is None and "texture" not in record  # x1: nothing above Nyquist


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
    (["--model", "bicubic"], "--model"),
    (["--model", "no-such-model"], "--model"),
    (["--model", " , "], "--model"),
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


@pytest.mark.parametrize(("lr", "hr", "args"), [
    ((5, 5), (10, 10), ["--reference"]),  # x2: 6x6 left after the shave, under SSIM's 7x7
    ((10, 10), None, ["--self", "--scale", "2"]),  # the same through --self
])
def test_too_small_to_score_is_a_usage_error(invoke, make_image, tmp_path, lr, hr, args):
    if hr is not None:
        args = [*args, make_image("hr.png", size=hr)]
    result = invoke("compare", make_image("lr.png", size=lr), *args, "--methods", "bicubic",
                    "-d", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "too small" in result.stderr and "Traceback" not in result.output


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
    montage, note = make_montage(panels, (5, 5, 10, 10))
    assert montage.mode == "RGB" and note is None
    assert montage.size[0] > 3 * 192  # small panels are enlarged to be readable
    long = [("a/very/long/path/" * 20 + "model.safetensors", ["x" * 300], panels[0][2])]
    single, _ = make_montage(long, (5, 5, 10, 10))  # labels are cut to the column, not spilled
    assert single.size[0] < 300


@pytest.mark.parametrize(("size", "crop", "panels", "capped"), [
    ((1, 2000), (0, 0, 1, 1), 5, True),  # 1x2000: enlarged to 192 wide it would be 74 MP
    ((4, 8000), (0, 0, 4, 4), 6, True),
    ((4, 8000), (0, 0, 4, 8000), 2, True),  # a crop as tall as the image
    ((3000, 3000), (0, 0, 3000, 3000), 3, False),  # wide: reduced to 480, as always
    ((100, 80), (10, 10, 16, 16), 400, True),  # many panels: everything shrinks
])
def test_montage_is_capped(size, crop, panels, capped):
    plan = layout(size, crop, panels, 40)
    assert plan.size[0] * plan.size[1] <= MAX_MONTAGE_PIXELS
    assert plan.shown[1] <= MAX_PANEL_HEIGHT and plan.zoomed[1] <= MAX_PANEL_HEIGHT
    assert plan.capped is capped


def test_montage_note_when_reduced():
    images = [("a", [], Image.new("RGB", (2, 1000))), ("b", [], Image.new("RGB", (2, 1000)))]
    montage, note = make_montage(images, (0, 0, 2, 2), max_pixels=200_000)
    assert montage.size[0] * montage.size[1] <= 200_000
    assert note and "reduced" in note


def test_thin_image_gets_a_small_montage(invoke, tmp_path):
    Image.new("RGB", (1, 2000), (90, 120, 30)).save(tmp_path / "thin.png")
    result = invoke("compare", tmp_path / "thin.png", "--scale", "2", "--methods",
                    "nearest,bicubic", "--json", "-d", tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    with Image.open(report["montage"]) as im:
        assert im.size[0] * im.size[1] <= MAX_MONTAGE_PIXELS
    assert any("montage reduced" in w for w in report["warnings"])
    assert "montage reduced" in result.stderr


def save_tiny_model(path: Path, seed: int) -> Path:


    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(path, LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=1, hidden=16)))
    return path


def test_several_models_beside_bicubic(invoke, tmp_path):
    hr = Image.open(SAMPLE).convert("RGB").crop((0, 0, 64, 48))
    hr.save(tmp_path / "hr.png")
    hr.resize((32, 24), Image.Resampling.BICUBIC).save(tmp_path / "lr.png")
    one = save_tiny_model(tmp_path / "a" / "model.safetensors", 1)
    two = save_tiny_model(tmp_path / "b" / "model.safetensors", 2)  # the same file name
    models = f"sirenup-base,{one},{two}"
    args = ["compare", tmp_path / "lr.png", "--reference", tmp_path / "hr.png", "--model",
            models, "-d", tmp_path / "out"]
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    records = report["methods"]
    assert [r["method"] for r in records] == ["bicubic", "sirenup-base", str(one), str(two)]
    assert [r["label"] for r in records] == ["bicubic", "sirenup-base", "model.safetensors",
                                             "model.safetensors"]
    outputs = [Path(r["output"]).name for r in records]
    assert outputs == ["lr_bicubic.png", "lr_sirenup-base.png", "lr_model.png",
                       "lr_model-2.png"]  # two files of one name do not overwrite each other
    assert all(r["texture"] > 0 and "ssim" in r for r in records)
    with Image.open(report["montage"]) as im:
        assert im.size[0] > 5 * 192  # the reference and four methods, side by side

    human = invoke(*args)  # the report on stdout, progress on stderr
    assert human.exit_code == 0, human.output
    assert "texture" in human.stdout and "model.safetensors" in human.stdout
    assert "sirenup-base" in human.stdout and "montage:" in human.stdout
    assert "ratio" not in human.stderr and "-> " in human.stderr


@pytest.mark.parametrize("name", ["holiday [edited].png", "[bold]loud.png", "bad[/x].png",
                                  "x].png", "a[b.png"])
def test_bracketed_names_are_shown_as_they_are(invoke, make_image, tmp_path, name):
    (tmp_path / name).parent.mkdir(exist_ok=True)  # bad[/x].png: file x].png in bad[
    path = make_image(name)
    out = tmp_path / "out [red]x[/red]"
    result = invoke("compare", path, "--scale", "2", "--methods", "bicubic", "-d", out)
    assert result.exit_code == 0, result.output
    assert str(path) in result.stdout.replace("\n", "")  # the report's heading
    assert f"montage: {out}" in result.stdout.replace("\n", "")
    assert str(out) in result.stderr.replace("\n", "")  # the progress line names the output


# -- failures: one line, the right exit code, nothing partial, nothing of the user's replaced ------

def test_compare_model_file_with_a_comma_in_its_name(invoke, tmp_path):
    import shutil

    weights = tmp_path / "base, copy.safetensors"
    shutil.copy(BASE, weights)
    result = invoke("compare", write_png(tmp_path / "a.png"), "--model", weights,
                    "--device", "cpu", "-d", tmp_path / "cmp", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["methods"]) == 2  # bicubic and the file


def test_compare_never_replaces_the_users_files(invoke, tmp_path):
    src = png(tmp_path / "cat.png", size=(48, 40))
    out = tmp_path / "cmp"
    out.mkdir()
    mine = out / "cat_hr.png"
    png(mine, size=(5, 5))
    before = mine.read_bytes()
    result = invoke("compare", src, "--self", "--scale", "2", "--methods", "bicubic", "-d", out)
    assert result.exit_code == 1
    assert "cat_hr.png" in one_error_line(result) and "--overwrite" in result.stderr
    assert mine.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["cat_hr.png"]
    mine.unlink()
    args = ("compare", src, "--self", "--scale", "2", "--methods", "bicubic", "-d", out)
    assert invoke(*args).exit_code == 0
    assert invoke(*args).exit_code == 0  # its own earlier outputs are redone
    (out / "cat_montage.png").write_bytes(before)  # replaced by the user since
    assert invoke(*args).exit_code == 1
    assert (out / "cat_montage.png").read_bytes() == before
    assert invoke(*args, "--overwrite").exit_code == 0
