"""Image I/O: modes, bit depth, EXIF orientation, metadata, errors, atomic writes."""

from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import build_image, deep_pattern, write_png16
from helpers import one_error_line, temps_in, write_png
from PIL import Image, ImageCms, ImageOps

from sirenup import files
from sirenup.errors import SirenupError, UsageError
from sirenup.imaging import imageio
from sirenup.imaging.imageio import (
    DecodedImage,
    check_output_size,
    is_temp_of,
    parse_color,
    probe_image,
    read_image,
    write_image,
)

ORIENTATION = 0x0112  # EXIF tag


@pytest.mark.parametrize(("mode", "grey", "has_alpha"), [
    ("RGB", False, False),
    ("RGBA", False, True),
    ("L", True, False),
    ("LA", True, True),
    ("P", False, False),
    ("P-transparent", False, True),
    ("CMYK", False, False),
    ("1", True, False),
    ("I;16", True, False),
])
def test_read_modes(make_image, mode, grey, has_alpha):
    ext = "tif" if mode == "CMYK" else "png"
    image = read_image(make_image(f"im.{ext}", mode))
    assert image.rgb.shape == (20, 24, 3)
    assert image.rgb.dtype == np.float32
    assert 0.0 <= image.rgb.min() and image.rgb.max() <= 1.0
    assert image.grey is grey
    assert (image.alpha is not None) is has_alpha
    if has_alpha:
        assert image.alpha.shape == (20, 24) and image.alpha.dtype == np.float32
    assert image.bit_depth == (16 if mode == "I;16" else 8)
    if grey:
        assert np.array_equal(image.rgb[..., 0], image.rgb[..., 2])


def test_sixteen_bit_grey_values_are_not_rounded_to_8_bits(make_image):
    path = make_image("g16.png", "I;16")
    assert Image.open(path).mode == "I;16"
    expected = np.asarray(Image.open(path)).astype(np.float32) / 65535
    image = read_image(path)
    assert np.allclose(image.rgb[..., 0], expected, atol=1e-7)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_sixteen_bit_grey_written_as_16_bit(make_image, tmp_path, ext):
    path = make_image(f"g16.{ext}", "I;16")
    out = tmp_path / f"out.{ext}"
    write_image(out, read_image(path))
    with Image.open(out) as im:
        assert im.mode.startswith("I;16")
        assert np.array_equal(np.asarray(im), np.asarray(Image.open(path)))


def test_sixteen_bit_grey_to_jpeg_is_8_bit_grey(make_image, tmp_path):
    out = tmp_path / "out.jpg"
    write_image(out, read_image(make_image("g16.png", "I;16")))
    assert Image.open(out).mode == "L"


@pytest.mark.parametrize(("mode", "out_mode"), [("L", "L"), ("LA", "LA"), ("RGB", "RGB"),
                                                ("RGBA", "RGBA"), ("1", "L")])
def test_round_trip_png_is_lossless(make_image, tmp_path, mode, out_mode):
    path = make_image("in.png", mode)
    out = tmp_path / "out.png"
    write_image(out, read_image(path))
    with Image.open(out) as im, Image.open(path) as src:
        assert im.mode == out_mode
        assert np.array_equal(np.asarray(im), np.asarray(src.convert(out_mode)))


def test_exif_orientation_applied_and_reset_on_write(make_image, tmp_path):
    path = make_image("rot.jpg", orientation=6, quality=95)  # stored 24x20, shown 20x24
    image = read_image(path)
    assert image.size == (20, 24)
    assert image.exif
    out = tmp_path / "out.jpg"
    write_image(out, image)
    with Image.open(out) as im:
        assert im.size == (20, 24)
        assert im.getexif().get(ORIENTATION) == 1


def test_icc_profile_carried_over(make_image, tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = make_image("icc.png", icc_profile=icc)
    image = read_image(path)
    assert image.icc_profile == icc
    for ext in ("png", "jpg", "webp", "tif"):
        out = tmp_path / f"out.{ext}"
        write_image(out, image)
        with Image.open(out) as im:
            assert im.info.get("icc_profile") == icc, ext


def test_animated_gif_first_frame_and_warning(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (24, 20), c) for c in ("red", "blue", "green")]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    image = read_image(path)
    assert image.size == (24, 20)
    assert image.rgb[0, 0, 0] > 0.9 and image.rgb[0, 0, 2] < 0.1  # red: the first frame
    assert len(image.warnings) == 1 and "3 frames" in image.warnings[0]


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    with pytest.raises(SirenupError, match="notes.png"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(SirenupError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_truncated_png(make_image, tmp_path):
    data = make_image("ok.png", size=(64, 48)).read_bytes()
    path = tmp_path / "broken.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SirenupError, match="broken.png") as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_decompression_bomb_limit(make_image):
    saved = Image.MAX_IMAGE_PIXELS
    with pytest.raises(SirenupError, match="over max_input_pixels 100"):
        read_image(make_image("big.png"), max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == saved
    assert read_image(make_image("ok.png"), max_pixels=480).size == (24, 20)


def test_alpha_into_jpeg_or_bmp_is_refused(make_image, tmp_path):
    image = read_image(make_image("a.png", "RGBA"))
    for ext in ("jpg", "bmp"):
        with pytest.raises(SirenupError, match="transparency"):
            write_image(tmp_path / f"out.{ext}", image)
    assert not list(tmp_path.glob("out.*"))


def test_unknown_extension_and_format_override(make_image, tmp_path):
    image = read_image(make_image("a.png"))
    with pytest.raises(UsageError, match="format"):
        write_image(tmp_path / "out.xyz", image)
    write_image(tmp_path / "out.xyz", image, format="png")
    assert Image.open(tmp_path / "out.xyz").format == "PNG"


def test_quality_applies_to_lossy_formats(make_image, tmp_path):
    image = read_image(make_image("a.png", size=(64, 48)))
    write_image(tmp_path / "lo.jpg", image, quality=10)
    write_image(tmp_path / "hi.jpg", image, quality=95)
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size


def test_png_compression_level(make_image, tmp_path):
    image = read_image(make_image("a.png", size=(64, 48)))
    for level in (0, 9, 4):
        write_image(tmp_path / f"l{level}.png", image, png_compression=level)
    write_image(tmp_path / "default.png", image)
    assert (tmp_path / "l0.png").stat().st_size > (tmp_path / "l9.png").stat().st_size
    assert (tmp_path / "default.png").read_bytes() == (tmp_path / "l4.png").read_bytes()
    with Image.open(tmp_path / "l0.png") as lo, Image.open(tmp_path / "l9.png") as hi:
        assert np.array_equal(np.asarray(lo), np.asarray(hi))


@pytest.mark.parametrize("level", [-1, 10])
def test_png_compression_out_of_range(make_image, tmp_path, level):
    image = read_image(make_image("a.png"))
    with pytest.raises(UsageError, match=f"png_compression {level}: must be between 0 and 9"):
        write_image(tmp_path / "out.png", image, png_compression=level)
    assert not list(tmp_path.glob("out.*"))


def test_atomic_write_mode_and_no_temp_left(make_image, tmp_path):
    image = read_image(make_image("a.png"))
    out = tmp_path / "out.png"
    write_image(out, image)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_failed_write_removes_temp_and_keeps_old_file(make_image, tmp_path, monkeypatch):
    image = read_image(make_image("a.png"))
    out = tmp_path / "out.png"
    out.write_bytes(b"old")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(SirenupError, match="disk full"):
        write_image(out, image)
    assert out.read_bytes() == b"old"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_missing_output_folder(make_image, tmp_path):
    image = read_image(make_image("a.png"))
    with pytest.raises(SirenupError, match="does not exist"):
        write_image(tmp_path / "nope" / "out.png", image)


def test_grey_written_grey_from_rgb_planes(tmp_path):
    rgb = np.zeros((4, 5, 3), np.float32)
    rgb[..., 1] = 1.0  # pure green -> Y = 0.587
    write_image(tmp_path / "g.png", DecodedImage(rgb=rgb, grey=True))
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L"
        assert np.all(np.asarray(im) == round(0.587 * 255))



# --------------------------------------------------------------------------------------------
# 16-bit colour, orientation, flattening, limits


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_png_read_exactly(tmp_path, channels):

    values = deep_pattern(24, 20, channels)
    image = read_image(write_png16(tmp_path / "deep.png", values))
    assert image.bit_depth == 16 and not image.grey
    assert np.array_equal(np.round(image.rgb * 65535).astype(np.uint16), values[..., :3])
    if channels == 4:
        assert np.array_equal(np.round(image.alpha * 65535).astype(np.uint16), values[..., 3])
    else:
        assert image.alpha is None


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("ext", ["png", "tif"])
def test_sixteen_bit_colour_round_trip(tmp_path, channels, ext):
    from conftest import png_bit_depth

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    values = deep_pattern(24, 150, channels)  # PNG: rows in 3 blocks, the filter crossing them
    image = read_image(write_png16(tmp_path / "deep.png", values))
    image.icc_profile = icc
    out = tmp_path / f"out.{ext}"
    write_image(out, image)
    again = read_image(out)
    assert again.bit_depth == 16 and again.icc_profile == icc
    assert np.array_equal(np.round(again.rgb * 65535).astype(np.uint16), values[..., :3])
    assert (again.alpha is not None) is (channels == 4)
    if ext == "png":
        assert png_bit_depth(out) == 16
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_sixteen_bit_png_compression_level(tmp_path):
    from conftest import png_bit_depth

    values = deep_pattern(32, 24)
    image = read_image(write_png16(tmp_path / "deep.png", values))
    for level in (0, 9, 4):
        write_image(tmp_path / f"l{level}.png", image, png_compression=level)
    write_image(tmp_path / "default.png", image)
    assert (tmp_path / "l0.png").stat().st_size > (tmp_path / "l9.png").stat().st_size
    assert (tmp_path / "default.png").read_bytes() == (tmp_path / "l4.png").read_bytes()
    for level in (0, 9):
        out = tmp_path / f"l{level}.png"
        assert png_bit_depth(out) == 16
        again = read_image(out)
        assert np.array_equal(np.round(again.rgb * 65535).astype(np.uint16), values)


def test_sixteen_bit_colour_tiff_from_tifffile(tmp_path):
    import tifffile

    values = deep_pattern(24, 20)
    for order in "<>":
        tifffile.imwrite(tmp_path / "t.tif", values.astype(f"{order}u2"), photometric="rgb",
                         compression="zlib", byteorder=order)
        image = read_image(tmp_path / "t.tif")
        assert image.bit_depth == 16
        assert np.array_equal(np.round(image.rgb * 65535).astype(np.uint16), values)


def test_sixteen_bit_colour_to_jpeg_is_8_bit(tmp_path):

    image = read_image(write_png16(tmp_path / "deep.png", deep_pattern(24, 20)))
    write_image(tmp_path / "out.jpg", image)
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.mode == "RGB" and im.size == (24, 20)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_orientation_matches_pillow(tmp_path, orientation):

    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = write_png16(tmp_path / "o.png", deep_pattern(24, 20), exif=exif.tobytes())
    image = read_image(path)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))  # 8-bit: the high bytes
    assert np.array_equal((np.round(image.rgb * 65535).astype(np.uint16) >> 8), expected)


def test_colour_key_transparency_becomes_alpha(tmp_path):
    path = tmp_path / "key.png"
    im = Image.new("RGB", (8, 6), (10, 20, 30))
    im.putpixel((0, 0), (200, 100, 50))
    im.save(path, transparency=(10, 20, 30))
    image = read_image(path)
    assert image.alpha is not None
    assert image.alpha[0, 0] == 1.0 and image.alpha[3, 3] == 0.0


def test_one_pixel_image(make_image, tmp_path):
    image = read_image(make_image("one.png", size=(1, 1)))
    assert image.size == (1, 1)
    write_image(tmp_path / "out.png", image)
    assert Image.open(tmp_path / "out.png").size == (1, 1)


@pytest.mark.parametrize(("mode", "color", "out_mode"), [
    ("RGBA", "white", "RGB"), ("LA", "white", "L"), ("LA", "#ff0000", "RGB")])
def test_background_flattens_alpha(make_image, tmp_path, mode, color, out_mode):
    image = read_image(make_image("a.png", mode))
    out = tmp_path / "out.jpg"
    write_image(out, image, background=parse_color(color), quality=100)
    with Image.open(out) as im:
        assert im.mode == out_mode
        right = np.asarray(im.convert("RGB"))[:, 16:].reshape(-1, 3)  # transparent half
    expected = np.array(parse_color(color))
    assert np.abs(right.astype(int) - expected).max() <= 8


def test_background_is_not_applied_where_alpha_fits(make_image, tmp_path):
    image = read_image(make_image("a.png", "RGBA"))
    write_image(tmp_path / "out.png", image, background=(255, 255, 255))
    assert Image.open(tmp_path / "out.png").mode == "RGBA"


def test_alpha_error_names_background(make_image, tmp_path):
    with pytest.raises(SirenupError, match="background"):
        write_image(tmp_path / "out.jpg", read_image(make_image("a.png", "RGBA")))


def test_bad_colour():
    with pytest.raises(UsageError, match="background"):
        parse_color("not-a-colour")


def test_input_limit_names_the_option(make_image):
    with pytest.raises(SirenupError, match="max_input_pixels 100"):
        read_image(make_image("big.png"), max_pixels=100)
    assert read_image(make_image("ok.png"), max_pixels=0).size == (24, 20)  # 0: no limit


def test_output_limit_names_the_option():
    with pytest.raises(SirenupError, match="max_output_pixels"):
        check_output_size((1000, 1000), 999_999)
    check_output_size((1000, 1000), 1_000_000)
    check_output_size((100_000, 100_000), 0)  # 0: no limit
    with pytest.raises(SirenupError, match="max_output_pixels"):
        check_output_size((30_000, 20_000))  # 600 MP > the 400 MP default


def test_pillow_limit_untouched_after_reads(make_image):
    saved = Image.MAX_IMAGE_PIXELS
    read_image(make_image("a.png"))
    with pytest.raises(SirenupError):
        read_image(make_image("b.png"), max_pixels=10)
    assert Image.MAX_IMAGE_PIXELS == saved


def test_probe_and_temp_names(make_image, tmp_path):
    assert probe_image(make_image("a.png"))["format"] == "PNG"
    (tmp_path / "x.png").write_text("text")
    assert probe_image(tmp_path / "x.png") is None
    assert is_temp_of(".photo.png.ab_cd123.tmp", "photo.png")
    assert not is_temp_of(".photo.png.ab_cd123.tmp", "photo")
    assert not is_temp_of("photo.png.tmp", "photo.png")


# -- failures: one line, the right exit code, nothing partial, nothing of the user's replaced ------

FORMATS = ["png", "jpg", "bmp", "tif", "webp", "png16", "tif16"]


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("how", ["enospc", "short"])
@pytest.mark.parametrize("room", [0, 100, 3000])
def test_disk_full_during_each_format(tmp_path, disk_full, kind, how, room):
    from sirenup.errors import SirenupError

    noise = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    image = imageio.DecodedImage(rgb=noise, bit_depth=16 if kind.endswith("16") else 8)
    out = tmp_path / f"result.{'tif' if kind == 'tif16' else kind.removesuffix('16')}"
    disk_full.set(room, how)
    with pytest.raises(SirenupError, match="no space left on device") as caught:
        imageio.write_image(out, image)
    assert "\n" not in str(caught.value)
    assert not out.exists() and temps_in(tmp_path) == []


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("cut", [1, 12, 0.5])
def test_truncated_outputs_are_not_complete(tmp_path, kind, cut):
    noise = np.random.default_rng(0).random((40, 48, 3), dtype=np.float32)
    image = imageio.DecodedImage(rgb=noise, bit_depth=16 if kind.endswith("16") else 8)
    out = tmp_path / f"out.{'tif' if kind == 'tif16' else kind.removesuffix('16')}"
    imageio.write_image(out, image)
    assert imageio.is_complete_image(out)
    data = out.read_bytes()
    out.write_bytes(data[: int(len(data) * cut) if cut < 1 else len(data) - cut])
    assert not imageio.is_complete_image(out)


def test_float_tiff_with_nan_is_mapped_with_a_note(invoke, tmp_path, recwarn):
    values = np.linspace(-0.5, 2.0, 16 * 12, dtype=np.float32).reshape(12, 16)
    values[3, 4] = np.nan
    values[5, 6] = np.inf
    src = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(src)
    decoded = imageio.read_image(src)
    assert np.isfinite(decoded.rgb).all() and decoded.rgb.min() >= 0 and decoded.rgb.max() <= 1
    assert decoded.rgb[3, 4, 0] == 0.0 and decoded.rgb[5, 6, 0] == 1.0
    [note] = decoded.warnings
    assert "2 NaN/inf" in note and "clipped" in note
    result = invoke("upscale", src, "-o", tmp_path / "out.png", "--device", "cpu",
                    "--scale", "2")
    assert result.exit_code == 0, result.output
    assert "floating-point image" in result.stderr and "RuntimeWarning" not in result.output
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_temporary_names_fit_with_multibyte_names(tmp_path):
    name = "é" * 123 + ".png"  # 250 bytes in UTF-8
    prefix = files.temp_prefix(name)
    assert len(f"{prefix}abcd1234.tmp".encode()) <= 255 and name.startswith(prefix[1:-1])
    files.atomic_write_bytes(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data" and temps_in(tmp_path) == []


def test_truncated_tiff_input_is_one_line(invoke, tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buffer, "TIFF", compression="tiff_deflate")
    src = tmp_path / "cut.tif"
    src.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    result = invoke("upscale", src, "-o", tmp_path / "out.png", "--device", "cpu")
    assert result.exit_code == 1
    assert str(src) in one_error_line(result)


def test_corrupt_exif_in_a_png_is_ignored_with_a_warning(invoke, tmp_path):
    src = write_png(tmp_path / "a.png", exif=bytes(range(7, 67)))  # not a TIFF structure
    result = invoke("upscale", src, "-o", tmp_path / "out.png", "--device", "cpu",
                    "--scale", "2")
    assert result.exit_code == 0, result.output
    assert "unreadable EXIF data ignored" in result.stderr
    assert Image.open(tmp_path / "out.png").size == (48, 40)


def test_postscript_is_never_handed_to_ghostscript(invoke, tmp_path, monkeypatch):
    """Pillow decodes EPS by running Ghostscript (a PostScript interpreter: a crafted file is a
    program). upscale and batch refuse such a file in one line, train skips it, and no
    subprocess is ever started."""

    from sirenup.training.data import load_images

    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or 1 / 0)
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: started.append(a) or 1 / 0)
    eps = tmp_path / "in" / "figure.eps"
    eps.parent.mkdir()
    build_image("RGB", (40, 32)).save(eps, "EPS")  # Pillow writes EPS without Ghostscript
    result = invoke("upscale", eps, "-o", tmp_path / "out.png", "--device", "cpu")
    assert result.exit_code == 1 and "Ghostscript" in one_error_line(result)
    result = invoke("batch", eps.parent, tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 1 and "Ghostscript" in result.output
    disguised = tmp_path / "data" / "figure.png"  # train lists images by extension
    disguised.parent.mkdir()
    disguised.write_bytes(eps.read_bytes())
    images, warned = load_images([disguised.parent], min_side=8)
    assert images == [] and "Ghostscript" in warned[0]
    assert started == [] and not (tmp_path / "out.png").exists()


def test_exif_too_long_for_jpeg_is_dropped_with_a_warning_before_the_work(invoke, tmp_path):
    exif = Image.Exif()
    exif[0x010E] = "x" * 70_000  # ImageDescription
    src = tmp_path / "in.png"
    Image.new("RGB", (20, 16), "red").save(src, exif=exif.tobytes())
    result = invoke("upscale", src, "-o", tmp_path / "out.jpg", "--scale", "2",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "EXIF" in result.stderr and "too long" in result.stderr
    assert Image.open(tmp_path / "out.jpg").size == (40, 32)


def write_png_la16(path: Path, array: np.ndarray) -> Path:
    """(H, W, 2) uint16 -> a 16-bit grey+alpha PNG (colour type 4)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    height, width, _ = array.shape
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16_bit_grey_alpha_stays_grey_alpha(invoke, tmp_path, ext):
    import tifffile

    array = np.zeros((12, 16, 2), np.uint16)
    array[..., 0] = np.arange(16) * 4001 + 3
    array[..., 1] = 40_000
    src = write_png_la16(tmp_path / "in.png", array)
    out = tmp_path / f"out.{ext}"
    result = invoke("upscale", src, "-o", out, "--scale", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    if ext == "png":
        with Image.open(out) as im:
            assert im.tile[0].args == "LA;16B"  # grey+alpha, 16 bits
    else:
        back = tifffile.imread(out)
        assert back.shape == (24, 32, 2) and back.dtype == np.uint16
        assert abs(int(back[..., 1].mean()) - 40_000) <= 2
    # 8 bits: grey+alpha too
    Image.fromarray((array >> 8).astype(np.uint8), "LA").save(tmp_path / "la8.png")
    assert invoke("upscale", tmp_path / "la8.png", "-o", tmp_path / "la8_out.png",
                  "--scale", "2").exit_code == 0
    assert Image.open(tmp_path / "la8_out.png").mode == "LA"


def test_colour_profile_range_and_chunks(invoke, tmp_path):
    from PIL import ImageCms, PngImagePlugin

    from sirenup.imaging import imageio

    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.new("LAB", (12, 10), (50, 10, 20)).save(tmp_path / "lab.tif", icc_profile=lab)
    result = invoke("upscale", tmp_path / "lab.tif", "-o", tmp_path / "lab.png", "--scale", "2",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "ICC profile (Lab)" in result.stderr
    assert "icc_profile" not in Image.open(tmp_path / "lab.png").info

    values = (np.arange(120).reshape(10, 12) * 1500).astype(np.int32)  # up to 178 500
    Image.fromarray(values, "I").save(tmp_path / "wide.tif")
    image = imageio.read_image(tmp_path / "wide.tif")
    assert any("clipped" in w for w in image.warnings)

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    info = PngImagePlugin.PngInfo()
    info.add_text("big", "x" * 3_000_000, zip=True)
    Image.new("RGB", (12, 10), "red").save(tmp_path / "text.png", pnginfo=info)
    Image.new("RGB", (12, 10), "red").save(tmp_path / "icc.png",
                                           icc_profile=srgb + bytes(3_000_000))
    for name in ("text.png", "icc.png"):
        image = imageio.read_image(tmp_path / name)
        assert image.size == (12, 10) and any("chunk" in w for w in image.warnings)
    assert imageio.read_image(tmp_path / "icc.png").icc_profile is None
