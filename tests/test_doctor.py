"""``sirenup doctor``: the --json schema, problems and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sirenup.hub import cache
from sirenup.inference import devices

SECTIONS = {"versions", "cpu", "cuda", "mps", "auto", "cache", "bundled", "smoke", "problems",
            "notes", "ok"}


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """No CUDA, no MPS, no NVIDIA driver; a cache with one model fetched from a file URL."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_driver_version", lambda: None)
    monkeypatch.setenv("SIRENUP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SIRENUP_OFFLINE", raising=False)
    source = tmp_path / "w.safetensors"
    source.write_bytes((Path(__file__).parents[1] / "sirenup" / "assets"
                        / "sirenup-base.safetensors").read_bytes())
    return cache.ensure(source.as_uri())


def doctor(invoke, *args):
    result = invoke("doctor", "--json", *args)
    assert "Traceback" not in result.output
    return result, json.loads(result.stdout)


def test_doctor_json_schema(invoke, machine):
    result, report = doctor(invoke)
    assert result.exit_code == 0, report["problems"]
    assert set(report) == SECTIONS and report["ok"] is True and report["problems"] == []
    v = report["versions"]
    for key in ("sirenup", "python", "torch", "torchvision", "pillow"):
        assert isinstance(v[key], str) and v[key]
    assert v["torch"] == torch.__version__
    cpu = report["cpu"]
    assert cpu["model"] and cpu["cores"] >= 1 and cpu["torch_threads"] >= 1
    cuda = report["cuda"]
    for key in ("built", "build_version", "available", "driver", "device_count", "devices",
                "error"):
        assert key in cuda
    assert cuda["available"] is False and cuda["devices"] == []
    assert report["mps"] == {"built": devices.mps_built(), "available": False}
    assert report["auto"]["device"] == "cpu" and report["auto"]["precision"] == "fp32"
    assert "no CUDA or MPS" in report["auto"]["reason"]
    store = report["cache"]
    assert store["dir"] == str(cache.cache_dir()) and store["writable"] is True
    assert store["size_bytes"] >= 700 and store["offline"] is False
    [model] = store["models"]
    # fetched without a sha256 to check it against: intact, but unpinned, never "verified"
    assert model["id"] == machine.id and model["problem"] is None
    assert model["verified"] is None and model["pinned"] is False
    assert model["sha256"] == machine.sha256 and model["path"] == str(machine.path)
    bundled = {entry["name"]: entry for entry in report["bundled"]}
    assert set(bundled) == {"sirenup-base", "sirenup-gan", "sirenup-real"}
    for entry in bundled.values():
        assert entry["ok"] is True and entry["sha256"] == entry["recorded_sha256"]
    [smoke] = report["smoke"]
    assert smoke["device"] == "cpu" and smoke["ok"] is True and smoke["precision"] == "fp32"
    assert smoke["upscale_s"] > 0


def test_doctor_lists_problems_and_exits_1(invoke, machine, monkeypatch):
    machine.path.write_bytes(b"corrupted")
    monkeypatch.setattr(devices, "nvidia_driver_version", lambda: "550.54.15")
    result, report = doctor(invoke, "--quick")
    assert result.exit_code == 1
    assert report["ok"] is False and report["smoke"] == []
    messages = " | ".join(p["message"] for p in report["problems"])
    assert "fails verification" in messages and "550.54.15" in messages
    assert all(p["hint"] for p in report["problems"])
    assert report["cache"]["models"][0]["verified"] is False


def test_doctor_human_report(invoke, machine):
    result = invoke("doctor", "--quick")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # the report is a result: stdout (sirenup doctor > report.txt)
    for text in ("Versions", "CPU", "CUDA", "MPS", "auto picks", "Cache", "sirenup-base",
                 "no problems found"):
        assert text in result.stdout
