"""--device resolution, --precision (auto: fp16 on CUDA, fp32 elsewhere), autocast for fp16/bf16,
device selection with CUDA and MPS reported unavailable, and the hardware report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sirenup.errors import UsageError
from sirenup.hub.registry import REGISTRY
from sirenup.inference import devices
from sirenup.inference.devices import autocast, resolve_device, resolve_precision
from sirenup.inference.tiler import upscale_tensor
from sirenup.models.architectures import LIIF_SIREN
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.fixture
def fake_cuda(monkeypatch):
    """CUDA 'available' for the decisions only (nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(devices, "_check_autocast", lambda *args: None)


def test_auto_precision_per_device():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("auto", CUDA) == "fp16"
    assert resolve_precision("auto", MPS) == "fp32"
    assert resolve_precision("", CPU) == "fp32"


def test_explicit_precisions_on_the_cpu():
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("FP32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("bfloat16", CPU) == "bf16"
    with pytest.raises(UsageError, match="fp16: not supported on the CPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(UsageError, match="expected auto, fp32, fp16 or bf16"):
        resolve_precision("int8", CPU)


def test_cuda_precisions(fake_cuda):
    assert resolve_precision("fp16", CUDA) == "fp16"
    assert resolve_precision("half", CUDA) == "fp16"
    with pytest.raises(UsageError, match="bfloat16"):
        resolve_precision("bf16", CUDA)  # a GPU without bf16


def test_autocast_matches_fp32(no_accelerators):
    from sirenup.hub.registry import resolve_model
    from sirenup.models.weights import load_weights

    model, _ = load_weights(resolve_model("sirenup-base")[1])
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        with autocast(CPU, "fp32"):
            ref = upscale_tensor(model, lr, (32, 32), tile=0)
        with autocast(CPU, "bf16"):
            low = upscale_tensor(model, lr, (32, 32), tile=0)
            tiled = upscale_tensor(model, lr, (32, 32), tile=32)
    assert low.dtype == torch.float32 and tiled.dtype == torch.float32
    assert (low - ref).abs().max() < 0.05
    assert (tiled - ref).abs().max() < 0.05


def test_upscaler_precision(no_accelerators):
    from sirenup.inference.upscaler import load_upscaler

    upscaler = load_upscaler(None, device="auto", precision="auto", tile=0)
    assert upscaler.device == CPU and upscaler.precision == "fp32"
    bf16 = load_upscaler(None, device="cpu", precision="bf16", tile=0)
    assert bf16.precision == "bf16"
    out = bf16.upscale_rgb(np.full((8, 8, 3), 0.5, np.float32), (16, 16))
    assert out.shape == (16, 16, 3) and out.dtype == np.float32


def one_line(result) -> str:
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_cli_unavailable_device_is_exit_2(invoke, make_image, tmp_path, no_accelerators,
                                          device):
    result = invoke("upscale", make_image("in.png", size=(16, 16)), "-o", tmp_path / "o.png",
                    "--device", device)
    assert result.exit_code == 2
    assert "not available" in one_line(result)
    assert not (tmp_path / "o.png").exists()


def test_cli_auto_reports_the_cpu(invoke, make_image, tmp_path, no_accelerators):
    result = invoke("upscale", make_image("in.png", size=(16, 16)), "-o", tmp_path / "o.png",
                    "--scale", "2", "--device", "auto", "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert " on cpu" in result.stderr


def test_cli_fp16_on_cpu_is_exit_2(invoke, make_image, tmp_path):
    result = invoke("upscale", make_image("in.png", size=(16, 16)), "-o", tmp_path / "o.png",
                    "--device", "cpu", "--precision", "fp16")
    assert result.exit_code == 2
    assert "--precision fp16" in one_line(result)


def test_hardware_report_without_accelerators(no_accelerators, monkeypatch):
    monkeypatch.setattr(devices, "nvidia_driver_version", lambda: None)
    cuda = devices.cuda_report()
    assert cuda["available"] is False and cuda["devices"] == [] and cuda["driver"] is None
    assert set(cuda) >= {"built", "build_version", "available", "driver", "devices"}
    assert devices.mps_report()["available"] is False
    assert devices.available_devices() == ["cpu"]
    cpu = devices.cpu_report()
    assert cpu["cores"] >= 1 and cpu["torch_threads"] >= 1 and cpu["model"]
    device, why = devices.auto_device()
    assert device == CPU and "no CUDA or MPS" in why


def test_available_devices_lists_each_gpu(fake_cuda, monkeypatch):
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert devices.available_devices() == ["cpu", "cuda:0", "cuda:1"]
    assert devices.auto_device()[0] == CUDA


# -- --device -----------------------------------------------------------------------------------

@pytest.fixture
def one_cuda_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(devices, "mps_available", lambda: False)


def test_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_auto_without_accelerators_is_cpu(no_accelerators):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("") == torch.device("cpu")
    device, why = devices.auto_device()
    assert device == torch.device("cpu") and why


def test_auto_on_this_machine():
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if devices.mps_available() else "cpu")
    assert resolve_device("auto").type == expected


def test_auto_prefers_cuda_then_mps(monkeypatch, one_cuda_gpu):
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "mps"])
def test_unavailable_device_is_an_error(no_accelerators, spec):
    with pytest.raises(UsageError, match="not available"):
        resolve_device(spec)


def test_mps_unavailable_through_torch_backend(monkeypatch):
    backend = getattr(torch.backends, "mps", None)
    if backend is not None:
        monkeypatch.setattr(backend, "is_available", lambda: False)
    assert devices.mps_available() is False
    with pytest.raises(UsageError):
        resolve_device("mps")


def test_cuda_index(one_cuda_gpu):
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    for spec in ("cuda:7", "cuda:1", "cuda:x", "cuda:-1"):
        with pytest.raises(UsageError):
            resolve_device(spec)


@pytest.mark.parametrize("spec", ["tpu", "gpu", "cuda0", "xla", "metal"])
def test_unknown_device_is_an_error(spec):
    with pytest.raises(UsageError):
        resolve_device(spec)


# -- GPU tile size from the architecture's costs --------------------------------------------------

def test_tile_cost_follows_the_config():
    cost = LIIF_SIREN.tile_cost(LiifSirenConfig())
    # the constants devices.py held before (32 channels, 64 hidden), the bundled models' width
    assert (cost.bytes_per_lr_pixel, cost.bytes_per_query) == (6 * 32 * 4 + 64 * 4, 1024 + 12)
    for entry in REGISTRY.values():
        assert LIIF_SIREN.tile_cost(LiifSirenConfig.from_dict(entry.config)) == cost, entry.name
    for n_blocks in (0, 1, 4, 9):
        config = LiifSirenConfig(channels=8, n_blocks=n_blocks, hidden=16)
        assert LIIF_SIREN.tile_cost(config).receptive_radius == \
            LiifSiren(config=config).receptive_radius
    wide = LIIF_SIREN.tile_cost(LiifSirenConfig(channels=64, hidden=128))
    assert wide.bytes_per_lr_pixel > cost.bytes_per_lr_pixel
    assert wide.bytes_per_query > cost.bytes_per_query


def test_a_wider_model_gets_a_smaller_gpu_tile(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(devices, "free_memory", lambda device: 80 * 2**30)
    with torch.device("meta"):  # nothing allocated: only the config matters
        bundled = LiifSiren(config=LiifSirenConfig())
        wide = LiifSiren(config=LiifSirenConfig(channels=128, hidden=256))
    tile = devices.auto_tile(cuda, 4.0, None)
    assert tile == 1536  # 80 GB free, x4: as before the descriptor
    assert devices.auto_tile(cuda, 4.0, None, bundled) == tile
    assert 512 < devices.auto_tile(cuda, 4.0, None, wide) < tile
