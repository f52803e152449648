"""The same guarantees on a CUDA GPU: run where one is present, skipped elsewhere (CI has none).

The CPU tests check the maths; these check that the GPU paths (the separable decoder's
index_put with accumulate, strided ``out=`` adds, fp16/bf16 autocast, training on the device)
give the same pictures.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from sirenup.inference.tiler import upscale_tensor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

LEVEL = 1 / 255
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.fixture(scope="module")
def bundled():
    from sirenup.hub.registry import resolve_model
    from sirenup.models.weights import load_weights

    model, _ = load_weights(resolve_model("sirenup-base")[1])
    return model.eval()


@pytest.fixture(scope="module")
def lr_image() -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16, generator=gen),
                                             size=(60, 80), mode="bilinear")
    noise = torch.rand(1, 3, 60, 80, generator=gen)
    return (0.7 * smooth + 0.3 * noise).clamp(0, 1)  # (1, 3, 60, 80)


def upscale_on(model, lr, out_hw, device, precision="fp32", **tiling) -> torch.Tensor:
    """Upscale on ``device``, moving the (shared) model there first; the result on the CPU."""
    from sirenup.inference.devices import autocast

    with torch.inference_mode(), autocast(device, precision):
        out = upscale_tensor(model.to(device), lr.to(device), out_hw, **tiling)
    return out.float().cpu()


@pytest.mark.parametrize("out_hw", [(120, 160), (222, 296), (131, 173)],
                         ids=["x2", "x3.7", "173x131"])
def test_cuda_matches_cpu(bundled, lr_image, out_hw):
    cpu = upscale_on(bundled, lr_image, out_hw, CPU, tile=0)
    gpu = upscale_on(bundled, lr_image, out_hw, CUDA, tile=0)
    assert gpu.shape == cpu.shape == (1, 3, *out_hw)
    assert (gpu - cpu).abs().max().item() <= LEVEL


@pytest.mark.parametrize("out_hw", [(150, 200), (222, 296)], ids=["x2.5", "x3.7"])
def test_cuda_tiled_equals_untiled(bundled, lr_image, out_hw):
    whole = upscale_on(bundled, lr_image, out_hw, CUDA, tile=0)
    for tile, overlap in ((32, 0), (32, 8), (40, 8)):
        tiled = upscale_on(bundled, lr_image, out_hw, CUDA, tile=tile, overlap=overlap)
        assert (tiled - whole).abs().max().item() <= LEVEL, (tile, overlap)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precisions_stay_close_to_fp32(bundled, lr_image, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    reference = upscale_on(bundled, lr_image, (240, 320), CUDA, tile=0)
    got = upscale_on(bundled, lr_image, (240, 320), CUDA, precision, tile=0)
    diff = (got - reference).abs()
    assert diff.mean().item() < LEVEL / 2 and diff.max().item() < 8 * LEVEL


def test_cli_upscale_on_cuda_matches_cpu(invoke, make_image, tmp_path):
    src = make_image("in.png", size=(70, 50))
    outputs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.png"
        result = invoke("upscale", src, "-o", out, "--scale", "3.5", "--device", device,
                        "--precision", "fp32")
        assert result.exit_code == 0, result.output
        assert device in result.output
        with Image.open(out) as im:
            assert im.size == (245, 175)
            outputs[device] = np.asarray(im).astype(np.int16)
    assert np.abs(outputs["cuda"] - outputs["cpu"]).max() <= 1


def test_training_steps_on_cuda_export_cpu_loadable_weights(tmp_path):
    from sirenup.models.weights import load_weights
    from sirenup.training.loop import WEIGHTS, TrainConfig, Trainer

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)).save(
            data / f"{i}.png")
    cfg = TrainConfig(data=[str(data)], out=str(tmp_path / "run"), steps=4, batch=2, patch=16,
                      queries=64, warmup=1, checkpoint_every=2, device="cuda")
    trainer = Trainer(cfg, log=lambda message: None)
    trainer.run()
    assert next(trainer.model.parameters()).is_cuda
    _, metadata = load_weights(tmp_path / "run" / WEIGHTS)
    assert metadata["steps"] == 4
    resumed = Trainer(dataclasses.replace(cfg, steps=6), log=lambda message: None)
    assert resumed.resume() and resumed.step == 4
    resumed.run()
    assert resumed.step == 6
