"""What keeps an upscale's peak memory down, with the very same output pixels as before:

- the upscaler reads an image as the file's integers (uint8/uint16) and converts it to float
  one tile at a time (a quarter of the float image's memory): the output equals the float
  image's, for every kind of input, tiled or not;
- on the CPU the encoder runs over a tile in slabs of rows: the same map, value for value;
- ``prepare_write`` holds the encoder's copy of the pixels, not the image: the output array
  can be freed while the file is encoded.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from sirenup.imaging.imageio import DecodedImage, _encode_png16, as_float, prepare_write, read_image
from sirenup.inference import tiler
from sirenup.inference.tiler import encode_tile, float_tile
from sirenup.inference.upscaler import Upscaler, load_upscaler
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig


def _pattern(height: int, width: int, top: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(height * width + channels)
    smooth = np.linspace(0, top, height * width * channels).reshape(height, width, channels)
    noise = rng.integers(0, top // 8, size=(height, width, channels))
    return np.clip(smooth + noise, 0, top).astype(np.uint16 if top > 255 else np.uint8)


def _inputs(tmp_path) -> dict:
    """One file per kind of input the decoder distinguishes."""
    h, w = 23, 31
    rgb8, rgba8 = _pattern(h, w, 255, 3), _pattern(h, w, 255, 4)
    grey8 = rgb8[..., 0]
    files = {}

    def save(name, image, **options):
        files[name] = tmp_path / name
        image.save(files[name], **options)

    save("rgb.png", Image.fromarray(rgb8))
    save("rgba.png", Image.fromarray(rgba8, "RGBA"))
    save("grey.png", Image.fromarray(grey8))
    save("grey_alpha.png", Image.fromarray(np.dstack([grey8, rgba8[..., 3]]), "LA"))
    save("palette.png", Image.fromarray(rgb8).quantize(64))
    save("grey16.png", Image.fromarray(_pattern(h, w, 65535, 1)[..., 0]))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the upright image is w x h
    save("rotated.jpg", Image.fromarray(rgb8), exif=exif.tobytes(), quality=90)
    for name, channels in (("rgb16.png", 3), ("rgba16.png", 4)):  # Pillow cannot write these
        files[name] = tmp_path / name
        files[name].write_bytes(_encode_png16(_pattern(h, w, 65535, channels)))
    return files


@pytest.fixture(scope="module")
def upscalers() -> dict[str, Upscaler]:
    return {"tiled": load_upscaler(device="cpu", tile=32, overlap=4),
            "untiled": load_upscaler(device="cpu", tile=0)}


def test_read_image_integers_are_the_float_samples_times_their_maximum(tmp_path):
    for name, path in _inputs(tmp_path).items():
        floats, ints = read_image(path), read_image(path, integers=True)
        expected = np.uint16 if floats.bit_depth == 16 else np.uint8
        assert ints.rgb.dtype == expected, name
        assert ints.rgb.flags.writeable and ints.rgb.flags.c_contiguous, name
        assert np.array_equal(as_float(ints.rgb), floats.rgb), name
        assert (ints.alpha is None) == (floats.alpha is None), name
        if ints.alpha is not None:
            assert ints.alpha.dtype == expected, name
            assert np.array_equal(as_float(ints.alpha), floats.alpha), name
        assert (ints.size, ints.grey, ints.bit_depth, ints.mode) == \
            (floats.size, floats.grey, floats.bit_depth, floats.mode), name
    assert read_image(tmp_path / "rotated.jpg", integers=True).size == (23, 31)


@pytest.mark.parametrize("tiling", ["tiled", "untiled"])
def test_integer_input_gives_the_same_output_pixels_as_float_input(tmp_path, upscalers,
                                                                    tiling):
    upscaler = upscalers[tiling]
    for name, path in _inputs(tmp_path).items():
        floats, ints = read_image(path), read_image(path, integers=True)
        size = (floats.width * 2 + 1, floats.height * 2)  # a fractional scale along x
        a, b = upscaler.upscale_image(floats, size), upscaler.upscale_image(ints, size)
        assert a.rgb.dtype == b.rgb.dtype and np.array_equal(a.rgb, b.rgb), name
        assert (a.alpha is None) == (b.alpha is None), name
        if a.alpha is not None:
            assert a.alpha.dtype == b.alpha.dtype and np.array_equal(a.alpha, b.alpha), name


def test_the_api_takes_integer_arrays_as_before(upscalers):
    upscaler = upscalers["tiled"]
    rgb = _pattern(40, 36, 255, 3)
    out = upscaler(rgb, scale=2)
    float_in = upscaler.upscale_rgb(as_float(rgb), (72, 80))
    assert out.dtype == np.uint8 and out.shape == (80, 72, 3)
    assert np.array_equal(out, np.rint(np.clip(float_in, 0, 1) * 255).astype(np.uint8))


@pytest.mark.parametrize("dtype, torch_dtype", [(np.uint8, torch.uint8),
                                                (np.uint16, torch.uint16)])
def test_float_tile_divides_exactly_as_numpy(dtype, torch_dtype):
    values = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
    tile = float_tile(torch.from_numpy(values.reshape(1, 1, 1, -1)))
    assert tile.dtype == torch.float32
    assert np.array_equal(tile.reshape(-1).numpy(), as_float(values))


def test_float_tile_is_a_channels_last_copy():
    image = torch.rand(20, 30, 3).permute(2, 0, 1).unsqueeze(0)  # how the upscaler holds it
    tile = float_tile(image)
    assert torch.equal(tile, image) and tile.data_ptr() != image.data_ptr()
    assert tile.stride() == (20 * 30 * 3, 1, 30 * 3, 3)  # channels-last, batch stride too


# -- the encoder in slabs ----------------------------------------------------------------------

def _model() -> LiifSiren:
    torch.manual_seed(0)
    model = LiifSiren(config=LiifSirenConfig()).eval()
    with torch.no_grad():  # a residual far from zero: a wrong slab would show
        model.decoder.out.weight.uniform_(-0.3, 0.3)
    return model


def test_encoding_in_slabs_gives_the_whole_tiles_map_exactly(monkeypatch):
    model, calls = _model(), []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda lr: calls.append(lr.shape[-2]) or encode(lr))
    image = float_tile(torch.rand(1, 3, 300, 900))  # 270 k pixels: two slabs of 150 rows
    with torch.no_grad():
        whole = encode(image).float()
        slabs = encode_tile(model, image)
    context = model.receptive_radius
    assert calls == [150 + context, 150 + context]
    assert torch.equal(slabs, whole)
    assert slabs.is_contiguous(memory_format=torch.channels_last)


def test_small_slabs_stay_within_float_rounding(monkeypatch):
    """Slabs of a few rows may round a last bit differently (oneDNN picks its kernels by
    shape); the default slabs are far larger (above)."""
    model = _model()
    image = float_tile(torch.rand(1, 3, 45, 61))
    with torch.no_grad():
        whole = model.encode(image).float()
        for pixels in (61 * 20, 61 * 7):  # 3 and 7 slabs
            monkeypatch.setattr(tiler, "CPU_ENCODE_SLAB_PIXELS", pixels)
            assert torch.allclose(encode_tile(model, image), whole, rtol=0, atol=1e-5)


# -- writing ------------------------------------------------------------------------------------

def test_prepare_write_lets_the_output_array_go_before_encoding(tmp_path):
    rgb = _pattern(30, 40, 255, 3)
    image = DecodedImage(rgb=rgb.copy())
    array = weakref.ref(image.rgb)
    write = prepare_write(tmp_path / "out.png", image)
    del image
    assert array() is None  # only Pillow's copy is left
    write()
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "RGB" and np.array_equal(np.asarray(out), rgb)


def test_release_freed_memory_is_harmless():
    from sirenup.inference.tiler import release_freed_memory

    release_freed_memory()
    release_freed_memory()


def test_sixteen_bit_samples_go_to_an_accelerator_as_floats():
    from sirenup.inference.upscaler import _model_input

    deep = _pattern(5, 6, 65535, 3)
    assert _model_input(deep, torch.device("cpu")).dtype == np.uint16
    assert np.array_equal(_model_input(deep, torch.device("mps")), as_float(deep))
    assert _model_input(_pattern(5, 6, 255, 3), torch.device("cuda")).dtype == np.uint8
