"""The streaming output path: each output pixel handed over once, assembled in its final dtype,
the same pixels as before (golden files written by the code before streaming), and the
per-device decode sizes (GPU paths tested on the CPU with fakes: no GPU in CI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sirenup.inference import devices, tiler
from sirenup.inference.devices import DecodeSizes, auto_tile, decode_sizes
from sirenup.inference.tiler import plan_axis, stream_tiles, upscale_tensor
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig

DATA = Path(__file__).parent / "data"


def small_model() -> LiifSiren:
    torch.manual_seed(0)
    model = LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=1, hidden=16)).eval()
    with torch.no_grad():
        model.decoder.out.weight.uniform_(-0.3, 0.3)  # a residual far from zero
    return model


class CountingSink:
    def __init__(self, out_hw):
        self.count = np.zeros(out_hw, dtype=np.int64)
        self.order = []

    def __call__(self, y0, y1, x0, x1, values):
        assert values.shape == (y1 - y0, x1 - x0, 3)
        self.count[y0:y1, x0:x1] += 1
        self.order.append(y0)


@pytest.mark.parametrize("lr_hw, out_hw, tile, overlap", [
    ((37, 53), (74, 106), 16, 4),
    ((37, 53), (111, 170), 20, 8),
    ((37, 53), (50, 200), 16, 30),  # overlap capped at half the tile; non-uniform scale
    ((37, 53), (74, 106), 64, 8),  # one tile: the untiled case
])
def test_every_output_pixel_is_handed_over_once(lr_hw, out_hw, tile, overlap):
    sink = CountingSink(out_hw)
    stream_tiles(small_model(), torch.rand(1, 3, *lr_hw), out_hw, sink, tile=tile,
                 overlap=overlap)
    assert (sink.count == 1).all()


def test_plan_axis_weights_sum_to_one_and_finish_each_pixel_once():
    for length, out_len, tile, overlap in [(53, 170, 20, 8), (101, 101, 32, 8), (5, 9, 2, 8)]:
        tiles = plan_axis(length, out_len, tile, overlap, context=3)
        total = torch.zeros(out_len)
        for t in tiles:
            total[t.out0:t.out1] += t.weights
        assert torch.allclose(total, torch.ones(out_len), atol=1e-6)
        done = [(t.done0, t.done1) for t in tiles]
        assert done[0][0] == 0 and done[-1][1] == out_len
        assert all(a[1] == b[0] for a, b in zip(done, done[1:], strict=False))


@pytest.mark.parametrize("name, source, args", [
    ("golden_x3_tile32.png", "golden_input.png", ["--scale", "3", "--tile", "32"]),
    ("golden_x2.png", "golden_input.png", ["--scale", "2"]),
    ("golden_rgba_x2.png", "golden_input_rgba.png", ["--scale", "2"]),
    ("golden_grey16_x2.png", "golden_input_grey16.png", ["--scale", "2"]),
])
def test_outputs_match_the_files_written_before_streaming(invoke, tmp_path, name, source, args):
    out = tmp_path / name
    # written by sirenup-base's version-1 file, which tests/data keeps
    result = invoke("upscale", DATA / source, "-o", out, *args,
                    "--model", DATA / "sirenup-base-v1.safetensors")
    assert result.exit_code == 0, result.output
    with Image.open(out) as new, Image.open(DATA / name) as old:
        assert (new.mode, new.size) == (old.mode, old.size)
        a, b = np.asarray(new).astype(np.int64), np.asarray(old).astype(np.int64)
    level = 257 if old.mode == "I;16" else 1
    assert np.abs(a - b).max() <= level  # within one 8-bit level


def test_upscale_image_assembles_integers_of_the_image_depth():
    from sirenup.imaging.imageio import DecodedImage
    from sirenup.inference.upscaler import load_upscaler

    upscaler = load_upscaler(device="cpu")
    rgb = np.random.default_rng(0).random((12, 10, 3), dtype=np.float32)
    alpha = np.linspace(0, 1, 120, dtype=np.float32).reshape(12, 10)
    out = upscaler.upscale_image(DecodedImage(rgb=rgb, alpha=alpha), (20, 24))
    assert out.rgb.dtype == np.uint8 and out.rgb.shape == (24, 20, 3)
    assert out.alpha.dtype == np.uint8 and out.alpha.shape == (24, 20)
    reference = np.rint(upscaler.upscale_rgb(rgb, (20, 24)) * 255)
    assert np.abs(out.rgb.astype(np.int64) - reference).max() <= 1
    deep = upscaler.upscale_image(DecodedImage(rgb=rgb, bit_depth=16, grey=True), (20, 24))
    assert deep.rgb.dtype == np.uint16 and deep.rgb.shape == (24, 20)


# -- per-device decode sizes (fakes: no GPU here) -----------------------------------------------

def test_cpu_decodes_in_cache_sized_bands():
    sizes = decode_sizes(torch.device("cpu"), 4.0)
    assert sizes.rows == 32 and sizes.block_queries == devices.CPU_BLOCK_QUERIES
    assert sizes.band_rows(2048, 2000) == 32
    assert decode_sizes(torch.device("cpu"), 1.0).rows == devices.MIN_BAND_ROWS


def test_gpu_decodes_whole_tiles_within_free_memory(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(devices, "free_memory", lambda device: 80 * 2**30)
    sizes = decode_sizes(cuda, 4.0)
    assert sizes.rows is None and sizes.block_queries is None  # one block per band
    assert sizes.band_rows(2112, 2112) == 2112  # a whole 512-px tile at x4 in one band
    monkeypatch.setattr(devices, "free_memory", lambda device: 64 * 2**20)  # 64 MB free
    assert decode_sizes(cuda, 4.0).band_rows(2112, 2112) == 16384 // 2112


def test_gpu_tile_grows_with_free_memory_and_keeps_a_chosen_one(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(devices, "free_memory", lambda device: 80 * 2**30)
    big = auto_tile(cuda, 4.0, None)
    assert 1024 <= big <= devices.MAX_AUTO_TILE and big % 64 == 0
    assert auto_tile(cuda, 2.0, None) >= big  # fewer queries per LR pixel
    assert auto_tile(cuda, 4.0, 256) == 256  # the user's tile
    assert auto_tile(cpu, 4.0, None) == 512
    monkeypatch.setattr(devices, "free_memory", lambda device: 2**20)
    assert auto_tile(cuda, 4.0, None) == 512  # never below the default: OOM halves it


def test_cpu_decodes_a_small_image_as_one_tile():
    cpu = torch.device("cpu")
    assert auto_tile(cpu, 4.0, None, image_hw=(768, 768)) == 768  # CPU_ONE_TILE_PIXELS
    assert auto_tile(cpu, 4.0, None, image_hw=(1100, 400)) == 1100  # by area, not by side
    assert auto_tile(cpu, 4.0, None, image_hw=(200, 100)) == 512
    assert auto_tile(cpu, 4.0, None, image_hw=(769, 768)) == 512  # larger: the default tile
    assert auto_tile(cpu, 4.0, 256, image_hw=(768, 768)) == 256  # the user's tile


def test_upscaler_starts_a_small_image_as_one_tile():
    from sirenup.inference.upscaler import load_upscaler

    upscaler = load_upscaler(device="cpu")
    assert upscaler.tile_for((700, 800), (2800, 3200)) == 800
    assert upscaler.tile_for((1000, 800), (2000, 1600)) == 512


def test_whole_tile_bands_give_the_same_image(monkeypatch):
    """The GPU's sizes (one band and one block per tile), run on the CPU: same pixels, one
    decode_grid call per tile."""
    model, lr = small_model(), torch.rand(1, 3, 30, 44)
    reference = upscale_tensor(model, lr, (90, 132), tile=24, overlap=4)
    whole = DecodeSizes(rows=None, band_queries=None, block_queries=None)
    monkeypatch.setattr(tiler, "decode_sizes", lambda device, scale: whole)
    calls = []
    decode_grid = model.decode_grid
    monkeypatch.setattr(model, "decode_grid",
                        lambda *a, **k: calls.append(k) or decode_grid(*a, **k))
    out = upscale_tensor(model, lr, (90, 132), tile=24, overlap=4)
    assert len(calls) == 4 and all(k["block_queries"] is None for k in calls)  # 2 x 2 tiles
    assert (out - reference).abs().max() <= 1e-5


def test_out_of_memory_on_a_fake_gpu_halves_the_tile(monkeypatch):
    model, lr = small_model(), torch.rand(1, 3, 96, 96)
    reference = upscale_tensor(model, lr, (192, 192), tile=0)
    encode, sizes = model.encode, []

    def limited(crop):  # a device that holds at most 80 LR pixels on a side
        sizes.append(max(crop.shape[-2:]))
        if max(crop.shape[-2:]) > 80:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(crop)

    monkeypatch.setattr(model, "encode", limited)
    out = upscale_tensor(model, lr, (192, 192), tile=0, overlap=4)
    assert sizes[0] == 96 and len(sizes) > 2 and max(sizes[1:]) <= 80
    assert (out - reference).abs().max() <= 1 / 255


def test_python_api_call_keeps_the_kind_of_image():
    from sirenup.inference.upscaler import Upscaler

    upscaler = Upscaler(device="cpu")
    pixels = np.random.default_rng(1).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    out = upscaler(pixels, scale=2)
    assert out.dtype == np.uint8 and out.shape == (20, 24, 3)
    assert upscaler(pixels.astype(np.uint16) * 257, size=(30, 25)).dtype == np.uint16
    floats = upscaler(pixels / 255.0, scale=2)
    assert floats.dtype == np.float32 and np.abs(floats * 255 - out).max() <= 1
    pil = upscaler(Image.fromarray(pixels).convert("RGBA"))  # default x4, alpha dropped
    assert pil.size == (48, 40) and pil.mode == "RGB"
