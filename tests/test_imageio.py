"""Image I/O: modes, bit depth, EXIF orientation, metadata, errors, atomic writes."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from PIL import Image, ImageCms

from sirenup.engine.imageio import DecodedImage, read_image, write_image
from sirenup.errors import SirenupError, UsageError

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
    with pytest.raises(SirenupError, match="100 pixels"):
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

