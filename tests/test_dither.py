"""The output dither (``config.dither``): +-half an 8-bit level hashed from the absolute pixel,
so tiles agree and the same image always gives the same file; rounded to 8 bits, a smooth
gradient no longer bands on the LR pixel grid; old files have none; `sirenup train` records it."""

from __future__ import annotations

import numpy as np
import torch

from sirenup.evaluation.metrics import grid_lock
from sirenup.inference.tiler import output_stages, upscale_tensor
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
from sirenup.models.weights import load_weights, save_weights

SMALL = LiifSirenConfig(channels=8, n_blocks=1, hidden=16, notch_periods=8)


def small_model(dither: int) -> LiifSiren:
    torch.manual_seed(0)
    return LiifSiren(config=LiifSirenConfig.from_dict({**SMALL.to_dict(), "dither": dither})).eval()


def test_dither_is_half_a_level_and_a_function_of_the_pixel():
    model = small_model(1)
    whole = model.dither_output(torch.zeros(1, 3, 64, 80), 0, 0) * 255
    assert float(whole.abs().max()) <= 0.5
    assert abs(float(whole.mean())) < 0.02 and abs(float(whole.std()) - 12 ** -0.5) < 0.02
    assert torch.equal(whole[:, 0], whole[:, 2])  # one value per pixel: no colour noise
    part = model.dither_output(torch.zeros(1, 3, 20, 30), 10, 25) * 255
    assert torch.equal(part, whole[..., 10:30, 25:55])


def test_a_16_bit_output_gets_half_a_16_bit_level(tmp_path):
    """The dither is half a level of the integers the output is stored in: a 16-bit image is
    not given the noise of an 8-bit one (+-128 of its levels), an 8-bit one keeps it."""
    from sirenup.inference.upscaler import Upscaler

    model = small_model(1)
    assert float((model.dither_output(torch.zeros(1, 3, 8, 8), 0, 0, 65535) * 65535)
                 .abs().max()) <= 0.5
    upscalers = {}
    for dither in (0, 1):
        save_weights(tmp_path / f"d{dither}.safetensors", small_model(dither))
        upscalers[dither] = Upscaler(str(tmp_path / f"d{dither}.safetensors"), device="cpu")
    rng = np.random.default_rng(3)
    deep = rng.integers(20000, 40000, (24, 30, 3), dtype=np.uint16)
    plain = (deep // 257).astype(np.uint8)
    for image, levels in ((deep, 65535), (plain, 255)):
        a = upscalers[0](image, scale=3).astype(np.int64)
        b = upscalers[1](image, scale=3).astype(np.int64)
        assert b.dtype == a.dtype and np.abs(a - b).max() <= 1  # at most one level ...
        assert (a != b).mean() > (0.01 if levels == 65535 else 0.2)  # ... of its own depth


def test_old_files_have_no_dither():
    assert LiifSirenConfig.from_dict({"channels": 8}).dither == 0
    model = small_model(0)
    assert all(stage.run != model.dither_output for stage in output_stages(model, (90, 120),
                                                                           (30, 40)))


def test_tiled_equals_untiled_with_the_dither():
    model = small_model(1)
    lr = torch.rand(1, 3, 30, 38, generator=torch.Generator().manual_seed(1))
    for scale in (2.0, 3.7, 4.0):
        size = (round(30 * scale), round(38 * scale))
        whole = upscale_tensor(model, lr, size, tile=0)
        torch.testing.assert_close(upscale_tensor(model, lr, size, tile=12, overlap=4), whole,
                                   rtol=0, atol=2e-5)
        assert (whole - upscale_tensor(small_model(0), lr, size, tile=0)).abs().max() > 0.3 / 255


def test_a_smooth_gradient_does_not_band_on_the_lr_grid():
    """An 8-bit LR sky: a gradient over a few levels has its steps on LR pixel edges; rounded
    to the nearest level, the x3 output keeps them there (grid-locked), dithered it does not."""
    y, x = np.mgrid[0:48, 0:64]
    sky = np.round(120 + 4 * x / 63 + 2 * y / 47).astype(np.uint8)  # a few levels
    lr = torch.from_numpy(np.repeat(sky[None], 3, 0))[None].float() / 255
    scores = {}
    for dither in (0, 1):
        out = upscale_tensor(small_model(dither), lr, (144, 192), tile=0)
        eight_bit = out[0, 0].clamp(0, 1).mul(255).round().numpy()
        scores[dither] = grid_lock(eight_bit, 3)
    assert scores[0] > 4 and scores[1] < 2, scores


def test_train_records_the_dither(tmp_path, invoke, gan_photos):
    init = tmp_path / "init.safetensors"
    save_weights(init, small_model(0))
    small = ["--steps", "1", "--batch", "2", "--patch", "16", "--lr", "0", "--device", "cpu"]

    def dither_after(name: str, start, *flags) -> int:
        result = invoke("train", str(gan_photos), "--out", str(tmp_path / name), "--init",
                        str(start), *flags, *small)
        assert result.exit_code == 0, result.output
        return load_weights(tmp_path / name / "model.safetensors")[0].config.dither

    assert dither_after("on", init, "--dither") == 1
    dithered = tmp_path / "on" / "model.safetensors"
    assert dither_after("kept", dithered) == 1  # an --init model keeps its own
    assert dither_after("off", dithered, "--no-dither") == 0


def test_upscale_batch_and_compare_turn_the_dither_on_or_off(tmp_path, invoke, make_image):
    """--no-dither rounds plainly whatever the file records, --dither dithers a file that
    records none; the default is the file's. Through the CLI: upscale, batch and compare."""
    import json

    from PIL import Image

    for dither in (0, 1):
        save_weights(tmp_path / f"d{dither}.safetensors", small_model(dither))
    photo = make_image("photo.png", size=(30, 24))

    def upscaled(name: str, model: str, *flags) -> np.ndarray:
        out = tmp_path / f"{name}.png"
        result = invoke("upscale", photo, "-o", out, "--scale", 3, "--model",
                        tmp_path / f"{model}.safetensors", *flags)
        assert result.exit_code == 0, result.output
        return np.asarray(Image.open(out), dtype=np.int64)

    plain, dithered = upscaled("plain", "d0"), upscaled("dithered", "d1")
    assert np.abs(plain - dithered).max() <= 1 and (plain != dithered).mean() > 0.2
    assert np.array_equal(upscaled("off", "d1", "--no-dither"), plain)
    assert np.array_equal(upscaled("on", "d0", "--dither"), dithered)
    folder = tmp_path / "in"
    folder.mkdir()
    photo.rename(folder / "photo.png")
    result = invoke("batch", folder, tmp_path / "out", "--scale", 3, "--model",
                    tmp_path / "d1.safetensors", "--no-dither")
    assert result.exit_code == 0, result.output
    written = next((tmp_path / "out").glob("photo*"))
    assert np.array_equal(np.asarray(Image.open(written), dtype=np.int64), plain)
    result = invoke("compare", folder / "photo.png", "--scale", 3, "--methods", "bicubic",
                    "--model", tmp_path / "d1.safetensors", "--no-dither", "-d", tmp_path / "c",
                    "--json")
    assert result.exit_code == 0, result.output
    compared = json.loads(result.stdout)["methods"][-1]["output"]
    assert np.array_equal(np.asarray(Image.open(compared), dtype=np.int64), plain)
