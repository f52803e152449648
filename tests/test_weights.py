"""Weights files: safetensors round trip, no pickle, clear errors for bad files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig, cell_size, output_coords
from sirenup.models.weights import (
    ARCHITECTURE,
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
    assert meta["format"] == FORMAT and meta["architecture"] == ARCHITECTURE
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
    header = {"format": FORMAT, "architecture": ARCHITECTURE,
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
              metadata={"format": FORMAT, "architecture": ARCHITECTURE, "config": "{bad json"})


def _bad_config_types(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path),
              metadata={"format": FORMAT, "architecture": ARCHITECTURE,
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
