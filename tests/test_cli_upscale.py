"""``sirenup upscale`` and ``sirenup batch`` through the Typer app (bundled model, CPU).

The bundled weights may be a placeholder: these tests check sizes, modes, files and errors,
never the quality of the result.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import deep_pattern, write_png16
from helpers import make_input, no_traceback, one_error_line, png, temps_in, train_args, write_png
from PIL import Image

from sirenup import files
from sirenup.imaging import imageio

ORIENTATION = 0x0112  # EXIF tag


@pytest.mark.parametrize(("options", "size"), [
    (["--scale", "2"], (48, 40)),
    (["--scale", "1.5"], (36, 30)),
    (["--width", "48"], (48, 40)),
    (["--height", "30"], (36, 30)),
    (["--width", "50", "--height", "21"], (50, 21)),
])
def test_output_size(invoke, make_image, tmp_path, options, size):
    out = tmp_path / "out.png"
    result = invoke("upscale", make_image("in.png"), "-o", out, "--device", "cpu", *options)
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.size == size and im.mode == "RGB"


@pytest.mark.parametrize(("options", "name"), [
    (["--scale", "2"], "photo_x2.png"),
    (["--scale", "1.5"], "photo_x1.5.png"),
    (["--width", "30", "--height", "40"], "photo_x30x40.png"),
])
def test_default_output_name(invoke, make_image, tmp_path, options, name):
    result = invoke("upscale", make_image("photo.jpg"), *options)
    assert result.exit_code == 0, result.output
    assert (tmp_path / name).is_file()
    assert name in result.stderr  # the one-line summary names the output


def test_summary_line(invoke, make_image, tmp_path):
    result = invoke("upscale", make_image("in.png"), "-o", tmp_path / "o.png", "--scale", "2")
    assert result.exit_code == 0
    line = one_error_line(result)  # exactly one line on stderr
    assert "sirenup-base" in line and "cpu" in line and "24x20" in line and "48x40" in line


@pytest.mark.parametrize("options", [["--scale", "0.5"], ["--width", "10"],
                                     ["--width", "30", "--height", "10"],
                                     ["--scale", "2", "--width", "48"],
                                     ["--tile", "8"], ["--overlap", "-1"],
                                     ["--quality", "0"], ["--png-compression", "10"],
                                     ["--format", "gif"],
                                     ["--model", "no-such-model"]])
def test_bad_options_exit_2(invoke, make_image, tmp_path, options):
    result = invoke("upscale", make_image("in.png"), "-o", tmp_path / "o.png", *options)
    assert result.exit_code == 2, result.output
    one_error_line(result)
    assert not (tmp_path / "o.png").exists()


def test_png_compression(invoke, make_image, tmp_path):
    src = make_image("in.png")
    for level in ("0", "9"):
        result = invoke("upscale", src, "-o", tmp_path / f"l{level}.png", "--scale", "2",
                        "--png-compression", level)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "l0.png").stat().st_size > (tmp_path / "l9.png").stat().st_size
    with Image.open(tmp_path / "l0.png") as lo, Image.open(tmp_path / "l9.png") as hi:
        assert lo.size == (48, 40) and np.array_equal(np.asarray(lo), np.asarray(hi))
    result = invoke("upscale", src, "-o", tmp_path / "bad.png", "--png-compression", "10")
    assert result.exit_code == 2
    assert "--png-compression 10: must be between 0 and 9" in one_error_line(result)


def test_missing_file(invoke, tmp_path):
    result = invoke("upscale", tmp_path / "nope.png")
    assert result.exit_code == 1
    assert "nope.png" in one_error_line(result)


def test_text_file_named_png(invoke, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello\n")
    result = invoke("upscale", path, "--scale", "2")
    assert result.exit_code == 1
    assert "notes.png" in one_error_line(result)


def test_refuses_to_overwrite_the_input(invoke, make_image):
    path = make_image("in.png")
    before = path.read_bytes()
    result = invoke("upscale", path, "-o", path, "--scale", "2")
    assert result.exit_code == 1
    assert "input" in one_error_line(result)
    assert path.read_bytes() == before


def test_alpha_into_jpeg_is_refused(invoke, make_image, tmp_path):
    result = invoke("upscale", make_image("a.png", "RGBA"), "-o", tmp_path / "a.jpg")
    assert result.exit_code == 1
    assert "transparency" in one_error_line(result)


def test_rgba_keeps_alpha(invoke, make_image, tmp_path):
    out = tmp_path / "out.png"
    result = invoke("upscale", make_image("a.png", "RGBA"), "-o", out, "--scale", "2")
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.mode == "RGBA" and im.size == (48, 40)
        alpha = np.asarray(im)[..., 3].astype(np.float32)
    assert alpha[:, :20].min() >= 250  # opaque half stays opaque, away from the edge
    assert alpha[:, 28:].max() <= 5  # transparent half stays transparent
    assert abs(alpha.mean() - 127.5) < 8


def test_greyscale_stays_grey(invoke, make_image, tmp_path):
    out = tmp_path / "out.png"
    assert invoke("upscale", make_image("g.png", "L"), "-o", out, "--scale", "2").exit_code == 0
    with Image.open(out) as im:
        assert im.mode == "L" and im.size == (48, 40)


def test_sixteen_bit_grey_stays_16_bit(invoke, make_image, tmp_path):
    out = tmp_path / "out.png"
    result = invoke("upscale", make_image("g16.png", "I;16"), "-o", out, "--scale", "2")
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.mode == "I;16" and im.size == (48, 40)
        values = np.asarray(im).astype(np.int64)
    assert np.any(values % 257 != 0)  # finer than 8-bit levels


def test_exif_rotated_jpeg(invoke, make_image, tmp_path):
    out = tmp_path / "out.jpg"
    path = make_image("rot.jpg", orientation=6, quality=95)  # stored 24x20, upright 20x24
    result = invoke("upscale", path, "-o", out, "--scale", "2")
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.size == (40, 48)
        assert im.getexif().get(ORIENTATION) == 1


def test_json_report(invoke, make_image, tmp_path):
    out = tmp_path / "out.webp"
    result = invoke("upscale", make_image("in.png"), "-o", out, "--scale", "2", "--json",
                    "--quality", "80")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["output"] == str(out)
    assert report["in_size"] == [24, 20] and report["out_size"] == [48, 40]
    assert report["seconds"] >= 0
    assert Image.open(out).format == "WEBP"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_usage_error(invoke, make_image):
    result = invoke("upscale", make_image("in.png"), "--device", "cuda")
    assert result.exit_code == 2
    assert "CUDA" in one_error_line(result)


def test_tiled_matches_whole_image(invoke, make_image, tmp_path):
    path = make_image("in.png", size=(70, 50))
    outputs = {}
    for tile in (32, 0):
        out = tmp_path / f"t{tile}.png"
        result = invoke("upscale", path, "-o", out, "--scale", "2", "--tile", tile)
        assert result.exit_code == 0, result.output
        with Image.open(out) as im:
            assert im.size == (140, 100)
            outputs[tile] = np.asarray(im).astype(np.int16)
    assert np.abs(outputs[32] - outputs[0]).max() <= 1


def test_atomic_write_leaves_no_temp_file(invoke, make_image, tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"old")
    assert invoke("upscale", make_image("in.png"), "-o", out, "--scale", "2").exit_code == 0
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert Image.open(out).size == (48, 40)


def test_background_flattens_into_jpeg(invoke, make_image, tmp_path):
    out = tmp_path / "a.jpg"
    result = invoke("upscale", make_image("a.png", "RGBA"), "-o", out, "--scale", "2",
                    "--background", "white")
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.size == (48, 40)
        assert np.asarray(im)[:, 30:].min() >= 240  # the transparent half is now white


def test_bad_background_exit_2(invoke, make_image, tmp_path):
    result = invoke("upscale", make_image("a.png", "RGBA"), "-o", tmp_path / "a.jpg",
                    "--background", "nope")
    assert result.exit_code == 2
    assert "--background" in one_error_line(result)


@pytest.mark.parametrize(("options", "name"), [
    (["--max-input-pixels", "100"], "--max-input-pixels"),
    (["--max-output-pixels", "1000"], "--max-output-pixels"),
])
def test_pixel_limits_name_the_option(invoke, make_image, tmp_path, options, name):
    out = tmp_path / "o.png"
    result = invoke("upscale", make_image("in.png"), "-o", out, "--scale", "2", *options)
    assert result.exit_code == 1, result.output
    assert name in one_error_line(result)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_sixteen_bit_colour_stays_16_bit(invoke, tmp_path):
    from conftest import png_bit_depth

    from sirenup.imaging.imageio import read_image

    src = write_png16(tmp_path / "deep.png", deep_pattern(24, 20, 4))
    for ext in ("png", "tif"):
        out = tmp_path / f"out.{ext}"
        result = invoke("upscale", src, "-o", out, "--scale", "2")
        assert result.exit_code == 0, result.output
        image = read_image(out)
        assert image.bit_depth == 16 and image.size == (48, 40) and image.alpha is not None
        values = np.round(image.rgb * 65535).astype(np.int64)
        assert np.any(values % 257 != 0)  # finer than 8-bit levels
    assert png_bit_depth(tmp_path / "out.png") == 16


def test_one_pixel_image(invoke, make_image, tmp_path):
    out = tmp_path / "o.png"
    result = invoke("upscale", make_image("one.png", size=(1, 1)), "-o", out, "--scale", "3")
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (3, 3)


def test_help_does_not_import_torch():
    code = ("import sys; from sirenup.cli.app import app; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# -- failures: one line, the right exit code, nothing partial, nothing of the user's replaced ------

@pytest.mark.parametrize("how", ["enospc", "short"])
def test_disk_full_during_upscale_write(invoke, tmp_path, disk_full, how):
    src = make_input(tmp_path / "in", "jpg")
    out = tmp_path / "out" / "result.jpg"
    out.parent.mkdir()
    disk_full.set(100, how)
    result = invoke("upscale", src, "-o", out, "--device", "cpu", "--scale", "2")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "no space left on device" in line and str(out) in line
    assert not out.exists() and temps_in(out.parent) == []


def test_encoder_error_is_one_line(invoke, tmp_path, monkeypatch):
    src = make_input(tmp_path, "png")

    def broken(self, fp, format=None, **options):
        raise OSError("encoder error -2\nlibtiff: second line\nthird line")

    monkeypatch.setattr(Image.Image, "save", broken)
    result = invoke("upscale", src, "-o", tmp_path / "out.tif", "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "cannot encode (encoder error -2)" in line
    assert not (tmp_path / "out.tif").exists() and temps_in(tmp_path) == []


def test_250_character_names(invoke, tmp_path):
    src = make_input(tmp_path, "png", name="i" * 246)  # 250 with ".png"
    out = tmp_path / ("o" * 246 + ".png")
    result = invoke("upscale", src, "-o", out, "--device", "cpu", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (32, 24)
    batch = invoke("batch", src, tmp_path / "out", "--device", "cpu", "--scale", "2")
    assert batch.exit_code == 0, batch.output
    assert (tmp_path / "out" / src.name).exists()
    # a leftover temporary file of a killed run, with its cut name, is recognised
    name = src.name
    prefix = files.temp_prefix(name)
    assert len((prefix + "abcd1234.tmp").encode()) <= 255
    assert files.is_temp_of(prefix + "abcd1234.tmp", name)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused_without_hanging(invoke, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = invoke("upscale", fifo, "--device", "cpu")
    assert result.exit_code == 1
    assert "FIFO" in one_error_line(result)
    named = invoke("batch", fifo, tmp_path / "out", "--device", "cpu", "--json")
    no_traceback(named)
    assert named.exit_code == 1 and "FIFO" in json.loads(named.stdout)["failures"][0]["error"]
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "inner.png")
    make_input(folder, "png", name="ok")
    inside = invoke("batch", folder, tmp_path / "out2", "--device", "cpu", "--json",
                    "--scale", "2")
    assert inside.exit_code == 0, inside.output
    assert json.loads(inside.stdout)["done"] == 1
    model = invoke("upscale", make_input(tmp_path, "png"), "--model", fifo, "--device", "cpu")
    assert model.exit_code in (1, 2)
    one_error_line(model)


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e999", "1e308"])
def test_non_finite_scale_is_usage_error(invoke, make_image, value):
    result = invoke("upscale", make_image("in.png"), "--scale", value, "--device", "cpu")
    assert result.exit_code == 2
    assert "--scale" in one_error_line(result)
    batch = invoke("batch", make_image("in.png"), "out", "--scale", value, "--device", "cpu")
    assert batch.exit_code == 2
    one_error_line(batch)


@pytest.mark.parametrize("options", [["--width", "1" + "0" * 400],
                                     ["--width", "100", "--height", "9" * 40]])
def test_absurd_sizes_are_usage_errors(invoke, make_image, options):
    result = invoke("upscale", make_image("in.png"), *options, "--device", "cpu")
    assert result.exit_code == 2
    assert "pixels on a side" in one_error_line(result)


def test_output_limit_checked_before_decoding(invoke, make_image, monkeypatch):
    def no_decode(*args, **kwargs):
        raise AssertionError("decoded before the size was checked")

    monkeypatch.setattr(imageio, "_decode", no_decode)
    result = invoke("upscale", make_image("in.png"), "--max-output-pixels", "100",
                    "--device", "cpu")
    assert result.exit_code == 1
    assert "--max-output-pixels" in one_error_line(result)
    batch = invoke("batch", make_image("in.png"), "out", "--max-output-pixels", "100",
                   "--device", "cpu", "--json")
    assert batch.exit_code == 1 and "--max-output-pixels" in batch.stdout


def test_aspect_ratio_change_warns(invoke, make_image):
    stretched = invoke("upscale", make_image("in.png"), "--width", "96", "--height", "40",
                       "--device", "cpu")
    assert stretched.exit_code == 0
    assert "changes the aspect ratio" in stretched.stderr
    kept = invoke("upscale", make_image("in.png"), "--width", "48", "--height", "40",
                  "--device", "cpu")
    assert kept.exit_code == 0 and "changes the aspect ratio" not in kept.stderr


def test_output_that_is_a_looping_link(invoke, tmp_path):
    """Python 3.11's Path.resolve raises RuntimeError (not OSError) on a link loop."""
    loop = tmp_path / "out.png"
    loop.symlink_to(loop)
    result = invoke("upscale", write_png(tmp_path / "a.png"), "-o", loop, "--device", "cpu",
                    "--scale", "2")
    assert result.exit_code == 0, result.output  # the link named as output is replaced
    assert Image.open(loop).size == (48, 40)


def test_upscale_never_replaces_a_non_image_at_its_default_output(invoke, tmp_path):
    src = png(tmp_path / "photo.png")
    mine = tmp_path / "photo_x2.png"
    mine.write_text("my notes, not an image")
    result = invoke("upscale", src, "--scale", "2", "--device", "cpu")
    assert result.exit_code == 1
    assert "not an image" in one_error_line(result) and "--overwrite" in result.stderr
    assert mine.read_text() == "my notes, not an image"
    result = invoke("upscale", src, "--scale", "2", "--device", "cpu", "--overwrite")
    assert result.exit_code == 0, result.output
    assert Image.open(mine).size == (48, 40)
    # an earlier output (an image) is redone as before
    assert invoke("upscale", src, "--scale", "2", "--device", "cpu").exit_code == 0


@pytest.mark.parametrize("target", ["fifo", "device", "link_to_device"])
def test_outputs_go_only_to_regular_files(invoke, tmp_path, target):
    src = png(tmp_path / "in.png")
    out = tmp_path / "out.png"
    if target == "fifo":
        os.mkfifo(out)
    elif target == "link_to_device":  # (a link: even a broken sirenup replaces the link only)
        out.symlink_to("/dev/null")
    else:  # a device node of the test's own, never the system's /dev/null: if the check
        import stat  # failed as root, the system's would be replaced by a regular file

        try:
            os.mknod(out, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating a device node needs root")
    result = invoke("upscale", src, "-o", out, "--format", "png", "--scale", "2")
    assert result.exit_code == 1
    assert "regular file" in one_error_line(result)
    assert not out.is_file()
    with pytest.raises(files.SirenupError, match="regular file"):
        files.atomic_write_bytes(out, b"x")
    if target == "link_to_device":
        assert out.is_symlink()


def test_a_read_only_output_folder_fails_before_the_model_loads(invoke, tmp_path,
                                                               monkeypatch):
    from sirenup.inference import upscaler

    src = png(tmp_path / "in.png")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if (
        Path(path) == tmp_path / "ro" and mode & os.W_OK) else real_access(path, mode, **kw))
    monkeypatch.setattr(upscaler, "load_upscaler", lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "ro").mkdir()
    result = invoke("upscale", src, "-o", tmp_path / "ro" / "x.png")
    assert result.exit_code == 1
    assert "not writable" in one_error_line(result)
    result = invoke(*train_args(tmp_path, tmp_path / "ro"))
    assert result.exit_code == 1, result.output
    assert "not writable" in one_error_line(result)
