"""Decoder version 2, the HR-space refiner: it starts as the identity, old weights files compute
exactly what they always did, tiles and bands decode the refiner's halo (tiled = untiled), and
training's dense windows compute what inference computes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sirenup.inference.tiler import upscale_tensor
from sirenup.models.coords import cell_size, output_coords
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
from sirenup.models.weights import load_weights, save_weights
from sirenup.training.data import CropSampler
from sirenup.training.loop import add_refiner

ASSETS = Path(__file__).resolve().parents[1] / "sirenup" / "assets"
SMALL_V2 = LiifSirenConfig(channels=8, n_blocks=2, hidden=16, version=2, refine_features=4,
                           refine_hidden=8)


def moved_refiner(config: LiifSirenConfig = SMALL_V2, seed: int = 0) -> LiifSiren:
    """A version-2 model whose refiner does something (its last layer no longer zero)."""
    torch.manual_seed(seed)
    model = LiifSiren(config=config).eval()
    with torch.no_grad():
        model.refiner.conv2.weight.normal_(0, 0.05)
        model.decoder.out.weight.normal_(0, 0.01)
    return model


def lr_image(h: int = 30, w: int = 38, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def quantised_sha(image: torch.Tensor) -> str:
    return hashlib.sha256(image.mul(255).round().byte().numpy().tobytes()).hexdigest()[:16]


# Today's output of the three version-1 files bundled before version 2 (sample.png's top-left
# 56x40, tiles of 16 with overlap 4): a version-1 file must keep computing exactly this.
VERSION1_OUTPUTS = {
    ("sirenup-base", 3.0): "09d23fbba3d41eaa", ("sirenup-base", 3.7): "3b3a7fb653353750",
    ("sirenup-gan", 3.0): "55d0b7cbd363cf86", ("sirenup-gan", 3.7): "42c19b1a411ea5ae",
    ("sirenup-real", 3.0): "d365bd594cf4371d", ("sirenup-real", 3.7): "cd65e5b110f9692c",
}


def version1_file(name: str) -> Path:
    """The version-1 weights file of ``name``: in the package while it is bundled as version
    1, kept under tests/data once a version-2 file replaces it."""
    kept = Path(__file__).parent / "data" / f"{name}-v1.safetensors"
    return kept if kept.exists() else ASSETS / f"{name}.safetensors"


@pytest.mark.parametrize("name,scale", list(VERSION1_OUTPUTS))
def test_version1_files_compute_exactly_what_they_did(name, scale):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = load_weights(version1_file(name))
        assert model.config.version == 1 and model.halo == 0
        pixels = np.asarray(Image.open(ASSETS / "sample.png").convert("RGB"))[:40, :56]
        lr = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
        out = upscale_tensor(model.eval(), lr, (round(40 * scale), round(56 * scale)), tile=16,
                             overlap=4)
    finally:
        torch.set_num_threads(threads)
    assert quantised_sha(out) == VERSION1_OUTPUTS[(name, scale)]


def test_added_refiner_starts_as_the_identity():
    torch.manual_seed(0)
    v1 = LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=2, hidden=16)).eval()
    v2 = add_refiner(v1, 2).eval()
    assert v2.config.version == 2 and v2.halo == 2
    # The refiner adds exactly zero to what the decoder gives it...
    decoded = torch.rand(1, v2.refiner.conv1.in_channels, 20, 24)
    h = v2.refiner.HALO
    assert torch.equal(v2.refiner(decoded), decoded[:, :3, h:-h, h:-h])
    # ...and the whole output is v1's: the decoder now also decodes the halo, and a matrix
    # product of more rows may round its last bit differently on some CPUs (seen: 6e-8).
    lr = lr_image()
    for size in ((90, 114), (111, 141)):
        torch.testing.assert_close(upscale_tensor(v2, lr, size, tile=0),
                                   upscale_tensor(v1, lr, size, tile=0), rtol=0, atol=1e-6)
    assert add_refiner(v2, 2) is v2  # already version 2: unchanged


@pytest.mark.parametrize("scale", [2.0, 3.7, 4.0])
def test_refiner_tiled_equals_untiled(scale):
    model = moved_refiner()
    lr = lr_image()
    size = (round(30 * scale), round(38 * scale))
    whole = upscale_tensor(model, lr, size, tile=0)
    tiled = upscale_tensor(model, lr, size, tile=12, overlap=3)
    assert (whole - tiled).abs().max() < 1 / 255
    assert (whole - upscale_tensor(model, lr, size, tile=0)).abs().max() == 0


def test_refiner_bands_carry_their_halo(monkeypatch):
    """Bands of a few rows (the CPU's cache-sized bands) give the one-band result."""
    from sirenup.inference import devices

    model = moved_refiner()
    lr = lr_image()
    whole = upscale_tensor(model, lr, (90, 114), tile=0)
    monkeypatch.setattr(devices.DecodeSizes, "band_rows", lambda self, cols, rows: 3)
    banded = upscale_tensor(model, lr, (90, 114), tile=0)
    assert (whole - banded).abs().max() < 1e-5


@pytest.mark.parametrize("y0,x0", [(30, 50), (0, 0), (70, 94)])
def test_training_window_equals_inference(y0, x0):
    """forward_window (training: dense queries with the halo, random points' sampler) computes
    what the tiler's separable grid computes, at the image's borders too."""
    model = moved_refiner()
    lr = lr_image()
    out_h, out_w, side, halo = 90, 114, 20, model.halo
    coords = output_coords(out_h, out_w, 30, 38, y0=y0 - halo, y1=y0 + side + halo,
                           x0=x0 - halo, x1=x0 + side + halo)
    with torch.no_grad():
        window = model(lr, coords, cell_size(out_h, out_w, 30, 38), side).clamp(0, 1)
    whole = upscale_tensor(model, lr, (out_h, out_w), tile=0)
    assert (window - whole[..., y0:y0 + side, x0:x0 + side]).abs().max() < 1e-5


def test_refiner_gets_gradients_at_its_first_step():
    torch.manual_seed(0)
    model = add_refiner(LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=1, hidden=16)), 2)
    lr = lr_image(16, 16)
    coords = output_coords(40, 40, 16, 16, y0=8, y1=32, x0=8, x1=32)
    out = model(lr, coords, cell_size(40, 40, 16, 16), 20)
    out.sub(torch.rand_like(out)).abs().mean().backward()
    assert model.refiner.conv2.weight.grad.abs().sum() > 0
    assert out.shape == (1, 3, 20, 20)


def test_sampler_windows_keep_their_halo_inside_the_crop():
    images = [torch.randint(0, 256, (3, 200, 220), dtype=torch.uint8)]
    sampler = CropSampler(images, patch=16, batch=3, queries=10, scale_min=1.0, scale_max=3.0,
                          window=24, halo=2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        batch = sampler.sample(gen)
        hr_size = round(batch.scale * 16)
        side = batch.window
        assert side == min(24, hr_size - 4) and batch.halo == 2
        assert batch.coords.shape == (3, (side + 4) ** 2, 2)
        assert batch.target.shape == (3, side * side, 3)
        assert batch.window_coords().shape == (3, side * side, 2)
        # every query (halo included) is an HR pixel of the crop: in LR units, inside it
        assert batch.coords.min() >= -0.5 and batch.coords.max() <= 16 - 0.5


def test_version2_weights_round_trip(tmp_path):
    model = moved_refiner()
    save_weights(tmp_path / "v2.safetensors", model, {"name": "v2"})
    loaded, meta = load_weights(tmp_path / "v2.safetensors")
    assert loaded.config == model.config and meta["name"] == "v2"
    lr = lr_image()
    assert torch.equal(upscale_tensor(loaded.eval(), lr, (60, 76), tile=0),
                       upscale_tensor(model, lr, (60, 76), tile=0))


def test_train_refine_through_the_cli(tmp_path, invoke, make_image):
    """`sirenup train --init FILE --refine` exports a version-2 model that upscales."""
    data = tmp_path / "photos"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(
            data / f"p{i}.png")
    torch.manual_seed(0)
    init = tmp_path / "init.safetensors"
    save_weights(init, LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=1, hidden=16)))
    run = tmp_path / "run"
    result = invoke("train", str(data), "--out", str(run), "--init", str(init), "--refine",
                    "--steps", "2", "--batch", "2", "--patch", "16", "--window", "16",
                    "--lambda-grid", "0.1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    model, meta = load_weights(run / "model.safetensors")
    assert model.config.version == 2 and meta["steps"] == 2
    plain = tmp_path / "plain"  # without --refine, an --init model keeps its version
    result = invoke("train", str(data), "--out", str(plain), "--init", str(init), "--steps", "1",
                    "--batch", "2", "--patch", "16", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert load_weights(plain / "model.safetensors")[0].config.version == 1
    image = make_image("in.png", size=(24, 20))
    result = invoke("upscale", str(image), "--model", str(run / "model.safetensors"),
                    "--scale", "2.5", "-o", str(tmp_path / "out.png"))
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out.png").size == (60, 50)


def test_pixel_noise_is_a_function_of_the_pixel():
    from sirenup.models.patch_siren import pixel_noise

    whole = pixel_noise(torch.arange(-2, 30), torch.arange(-2, 40))
    part = pixel_noise(torch.arange(10, 20), torch.arange(5, 17))
    assert torch.equal(whole[12:22, 7:19], part)
    assert abs(float(whole.mean())) < 0.1 and abs(float(whole.var()) - 1) < 0.15
    assert not torch.equal(pixel_noise(torch.arange(4), torch.arange(4), seed=1),
                           pixel_noise(torch.arange(4), torch.arange(4), seed=2))


@pytest.mark.parametrize("scale", [2.0, 3.7])
def test_noise_refiner_is_deterministic_and_tiles_agree(scale):
    model = add_refiner(moved_refiner(), refine_noise=1).eval()
    with torch.no_grad():
        model.refiner.conv1.weight[:, -1].normal_(0, 0.3)  # the noise must show
    lr = lr_image()
    size = (round(30 * scale), round(38 * scale))
    whole = upscale_tensor(model, lr, size, tile=0)
    assert torch.equal(whole, upscale_tensor(model, lr, size, tile=0))
    assert (whole - upscale_tensor(model, lr, size, tile=12, overlap=3)).abs().max() < 1 / 255
    quiet = upscale_tensor(moved_refiner(), lr, size, tile=0)
    assert (whole - quiet).abs().max() > 1e-3  # the noise is used


def test_noise_input_added_to_a_trained_refiner_starts_silent():
    model = moved_refiner()
    noisy = add_refiner(model, refine_noise=1).eval()
    assert noisy.config.refine_noise == 1
    lr = lr_image()
    assert (upscale_tensor(model, lr, (60, 76), tile=0)
            - upscale_tensor(noisy, lr, (60, 76), tile=0)).abs().max() < 1e-6


def test_noise_channel_joins_the_band_channels_last():
    """At inference the noise channel is appended in the band's channels-last format (the
    refiner's convolutions run faster on it), with torch.cat's values."""
    from sirenup.models.patch_siren import _with_channel

    decoded = torch.rand(1, 13, 6, 9).contiguous(memory_format=torch.channels_last)
    noise = torch.rand(1, 1, 6, 9)
    expected = torch.cat([decoded, noise], dim=1)
    with torch.no_grad():
        joined = _with_channel(decoded, noise)
    assert joined.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(joined, expected)
    assert torch.equal(_with_channel(decoded, noise), expected)  # with gradients: cat
