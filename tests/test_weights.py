"""Weights files: safetensors round trip, no pickle, clear errors for bad files."""

from __future__ import annotations

import json
import pickle
import struct
import warnings
from pathlib import Path

import pytest
import torch
from helpers import BASE, SMALL, PickledCode, one_error_line, temps_in, write_png

from sirenup.models.architectures import LIIF_SIREN
from sirenup.models.coords import cell_size, output_coords
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
from sirenup.models.weights import (
    FORMAT,
    WeightsError,
    load_weights,
    read_header,
    save_weights,
    update_metadata,
)

CONFIG = LiifSirenConfig(channels=8, n_blocks=1, hidden=16, n_hidden=2, w0_first=25.0,
                         max_cell_scale=3.0)
METADATA = {"name": "test-model", "steps": 123, "scale_range": [1.0, 3.0],
            "nested": {"a": "é"}}


def make_model(config: LiifSirenConfig = CONFIG, seed: int = 0) -> LiifSiren:
    torch.manual_seed(seed)
    model = LiifSiren(config=config).eval()
    with torch.no_grad():  # non-trivial output layer, so a lost tensor would show
        model.decoder.out.weight.uniform_(-0.2, 0.2)
    return model


def run(model: LiifSiren) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    lr = torch.rand(1, 3, 9, 11, generator=gen)
    with torch.no_grad():
        return model(lr, output_coords(20, 25, 9, 11), cell_size(20, 25, 9, 11))


def test_round_trip(tmp_path):
    model = make_model()
    path = tmp_path / "sub" / "model.safetensors"
    save_weights(path, model, METADATA)
    loaded, metadata = load_weights(path)
    assert metadata == METADATA
    assert loaded.config == CONFIG
    assert not loaded.training
    assert torch.equal(run(loaded), run(model))
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                  strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    header = read_header(path)
    assert header["config"] == CONFIG.to_dict()
    assert header["metadata"] == METADATA
    # written atomically: no temporary file left behind, and readable by others
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_overwrite_and_no_metadata(tmp_path):
    path = tmp_path / "model.safetensors"
    save_weights(path, make_model(seed=1), {"name": "old"})
    model = make_model(seed=2)
    save_weights(path, model)
    loaded, metadata = load_weights(path)
    assert metadata == {}
    assert torch.equal(run(loaded), run(model))


def test_file_is_plain_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    model = make_model()
    save_weights(path, model, METADATA)
    data = path.read_bytes()
    assert not data.startswith(b"\x80")  # not a pickle
    assert not data.startswith(b"PK")  # not a torch zip archive
    (n,) = struct.unpack("<Q", data[:8])  # little-endian header length
    assert 8 + n <= len(data)
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__")
    assert meta["format"] == FORMAT and meta["architecture"] == LIIF_SIREN.name
    assert json.loads(meta["config"]) == CONFIG.to_dict()
    assert json.loads(meta["metadata"]) == METADATA
    state = model.state_dict()
    assert set(header) == set(state)
    for name, info in header.items():
        assert info["dtype"] == "F32"
        assert info["shape"] == list(state[name].shape)
    # the payload is exactly the tensors after the header
    end = max(info["data_offsets"][1] for info in header.values())
    assert 8 + n + end == len(data)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\xff" * 8 + b"{}",
                                     struct.pack("<Q", 10) + b"{not json}"])
def test_garbage_file_raises(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError):
        load_weights(path)


def test_truncated_file_raises(tmp_path):
    path = tmp_path / "model.safetensors"
    save_weights(path, make_model(), METADATA)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 100])
    with pytest.raises(WeightsError):
        load_weights(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(WeightsError):
        load_weights(tmp_path / "nope.safetensors")


def test_other_architecture_raises(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(path), metadata={"architecture": "esrgan"})
    with pytest.raises(WeightsError, match="esrgan"):
        load_weights(path)
    save_file({"w": torch.zeros(2, 2)}, str(path))  # no metadata at all
    with pytest.raises(WeightsError):
        load_weights(path)


def test_tensors_not_matching_the_config_raise(tmp_path):
    from safetensors.torch import save_file

    model = make_model()
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    header = {"format": FORMAT, "architecture": LIIF_SIREN.name,
              "config": json.dumps(LiifSirenConfig(channels=16).to_dict()), "metadata": "{}"}
    path = tmp_path / "mismatch.safetensors"
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(WeightsError):
        load_weights(path)
    tensors.pop("decoder.out.bias")  # missing tensor, right config
    header["config"] = json.dumps(CONFIG.to_dict())
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(WeightsError):
        load_weights(path)


# -- legacy .pt files --------------------------------------------------------------------------

def test_pt_file_round_trip(tmp_path):
    model = make_model()
    path = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict(), "config": CONFIG.to_dict(),
                "metadata": {"name": "legacy"}}, path)
    loaded, metadata = load_weights(path)
    assert metadata == {"name": "legacy"}
    assert loaded.config == CONFIG
    assert torch.equal(run(loaded), run(model))


def test_pt_file_without_state_dict_raises(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(WeightsError):
        load_weights(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError):
        load_weights(path)


class Payload:
    """Unpickling this calls Path.touch(marker): code execution, if the loader allowed it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pt_file_is_never_unpickled_with_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    model = make_model()
    torch.save({"state_dict": model.state_dict(), "config": CONFIG.to_dict(),
                "payload": Payload(marker)}, path)
    with pytest.raises(WeightsError):
        load_weights(path)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def _bad_header_config(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path),
              metadata={"format": FORMAT, "architecture": LIIF_SIREN.name, "config": "{bad json"})


def _bad_config_types(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path),
              metadata={"format": FORMAT, "architecture": LIIF_SIREN.name,
                        "config": json.dumps({"channels": "x"})})


@pytest.mark.parametrize("make", [_bad_header_config, _bad_config_types])
def test_corrupt_header_raises_weights_error(tmp_path, make):
    path = tmp_path / "corrupt.safetensors"
    make(path)
    with pytest.raises(WeightsError):
        load_weights(path)


def test_update_metadata_keeps_tensors(tmp_path):
    path = tmp_path / "m.safetensors"
    model = make_model()
    save_weights(path, model, {"name": "x", "steps": 3})
    merged = update_metadata(path, {"measured_quality": {"Set5": {"x4": 30.1}}})
    assert merged == {"name": "x", "steps": 3, "measured_quality": {"Set5": {"x4": 30.1}}}
    loaded, metadata = load_weights(path)
    assert metadata == merged
    assert torch.equal(run(loaded), run(model))


# -- failures: one line, the right exit code, nothing partial, nothing of the user's replaced ------

def weights_with(tmp_path: Path, *, config: dict | None = None, metadata=None,
                 tensors=None, name: str = "w.safetensors") -> Path:
    from safetensors.torch import save_file

    model = LiifSiren(config=SMALL)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if tensors is not None:
        state = tensors(state)
    header = {"format": "sirenup-weights/1", "architecture": "liif-siren",
              "config": json.dumps({**SMALL.to_dict(), **(config or {})}),
              "metadata": json.dumps({} if metadata is None else metadata)}
    path = tmp_path / name
    save_file(state, str(path), metadata=header)
    return path


def nan_weights(state):
    state["decoder.out.weight"] = torch.full_like(state["decoder.out.weight"], float("nan"))
    return state


def wrong_shape(state):
    state["encoder.head.weight"] = torch.zeros(9, 3, 3, 3)
    return state


def extra_tensor(state):
    state["sneaky.weight"] = torch.zeros(2)
    return state


def int_tensor(state):
    state["decoder.out.bias"] = torch.zeros(3, dtype=torch.int32)
    return state


@pytest.mark.parametrize(("options", "fragment"), [
    ({"config": {"n_blocks": 10**7}}, "n_blocks = 10000000"),
    ({"config": {"channels": -4}}, "channels = -4"),
    ({"config": {"hidden": "64"}}, 'hidden = "64"'),
    ({"config": {"w0_first": True}}, "w0_first = true"),
    ({"config": {"res_scale": 1e308 * 10}}, "res_scale"),
    ({"metadata": {"name": 5}}, "name is a int"),
    ({"metadata": {"scale_range": "1-4"}}, "scale_range"),
    ({"metadata": {"scale_range": [4, 1]}}, "scale_range"),
    ({"metadata": ["not", "a", "dict"]}, "invalid metadata"),
    ({"tensors": nan_weights}, "decoder.out.weight holds NaN"),
    ({"tensors": wrong_shape}, "encoder.head.weight has shape [9, 3, 3, 3]"),
    ({"tensors": extra_tensor}, "unexpected tensor sneaky.weight"),
    ({"tensors": int_tensor}, "decoder.out.bias is not a floating-point"),
])
def test_hostile_weights_fail_fast_in_one_line(invoke, make_image, tmp_path, options,
                                               fragment):
    weights = weights_with(tmp_path, **options)
    result = invoke("upscale", make_image("in.png"), "--model", weights, "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert fragment in line, line
    assert not list(tmp_path.glob("in_x*"))


def test_unknown_metadata_entries_are_allowed(invoke, make_image, tmp_path):
    weights = weights_with(tmp_path, metadata={
        "name": "gan-test", "gan": {"lambda_adv": 0.005, "layers": [1, 2]},
        "degrade": {"jpeg": [30, 95]}, "notes": "free text", "steps": 3})
    result = invoke("upscale", make_image("in.png"), "--model", weights, "--device", "cpu",
                    "--scale", "2")
    assert result.exit_code == 0, result.output


def test_html_page_as_local_weights(invoke, make_image, tmp_path):
    page = tmp_path / "model.safetensors"
    page.write_text("<!doctype html><html><body>Please log in to the Wi-Fi</body></html>")
    result = invoke("upscale", make_image("in.png"), "--model", page, "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "not a safetensors weights file" in line and "HTML page" in line


def test_weights_and_checkpoints_write_atomically(tmp_path, disk_full):
    from sirenup.errors import SirenupError
    from sirenup.training.loop import atomic_torch_save

    model = LiifSiren(config=SMALL)
    disk_full.set(1000)
    with pytest.raises(SirenupError, match="no space left"):
        save_weights(tmp_path / "w.safetensors", model)
    with pytest.raises(SirenupError, match="no space left"):
        atomic_torch_save({"x": torch.zeros(1000)}, tmp_path / "ckpt.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_pickle_with_code_is_one_line_and_never_run(invoke, tmp_path, suffix):
    marker = tmp_path / "ran"
    weights = tmp_path / f"evil{suffix}"
    weights.write_bytes(pickle.dumps(PickledCode(marker)))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        result = invoke("upscale", write_png(tmp_path / "a.png"), "--model", weights,
                        "--device", "cpu")
    assert result.exit_code == 1
    assert str(weights) in one_error_line(result)
    assert [str(w.message) for w in shown] == []  # torch.load's notes on the pickle
    assert not marker.exists()


def test_weights_that_overflow_write_no_black_image(invoke, tmp_path):
    """Finite weights that pass every check, but so large that the model's output overflows:
    an error, not an all-black image (NaN clamped to 0) with exit code 0."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(BASE), "pt") as f:
        header = f.metadata()
    tensors = {name: value * 1e4 if name.startswith("encoder") and value.ndim > 1 else value
               for name, value in load_file(str(BASE)).items()}
    weights = tmp_path / "overflow.safetensors"
    save_file(tensors, str(weights), metadata=header)
    out = tmp_path / "out.png"
    result = invoke("upscale", write_png(tmp_path / "a.png"), "-o", out, "--model", weights,
                    "--device", "cpu", "--scale", "2")
    assert result.exit_code == 1
    assert "NaN or infinite" in one_error_line(result)
    assert not out.exists() and temps_in(tmp_path) == []
