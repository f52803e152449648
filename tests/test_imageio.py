"""Image I/O: modes, bit depth, EXIF orientation, metadata, errors, atomic writes."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from sirenup.errors import SirenupError, UsageError
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
    from conftest import deep_pattern, write_png16

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
    from conftest import deep_pattern, png_bit_depth, write_png16

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
    from conftest import deep_pattern, png_bit_depth, write_png16

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
    from conftest import deep_pattern

    values = deep_pattern(24, 20)
    for order in "<>":
        tifffile.imwrite(tmp_path / "t.tif", values.astype(f"{order}u2"), photometric="rgb",
                         compression="zlib", byteorder=order)
        image = read_image(tmp_path / "t.tif")
        assert image.bit_depth == 16
        assert np.array_equal(np.round(image.rgb * 65535).astype(np.uint16), values)


def test_sixteen_bit_colour_to_jpeg_is_8_bit(tmp_path):
    from conftest import deep_pattern, write_png16

    image = read_image(write_png16(tmp_path / "deep.png", deep_pattern(24, 20)))
    write_image(tmp_path / "out.jpg", image)
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.mode == "RGB" and im.size == (24, 20)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_orientation_matches_pillow(tmp_path, orientation):
    from conftest import deep_pattern, write_png16

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
