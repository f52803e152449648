"""``sirenup doctor``: what this machine has, what sirenup would do on it, and what is wrong.

``collect()`` returns one JSON-ready dict (schema below); every problem found is listed in
``problems`` with a hint, and ``ok`` is False when there is any.

    versions     sirenup, python, torch, torchvision, pillow, numpy, safetensors, platform
    cpu          model, arch, cores, usable_cores, torch_threads
    cuda         built, build_version, cudnn_version, available, driver, device_count,
                 devices [{index, name, capability, memory_gib, bf16}], visible_devices, error
    mps          built, available
    auto         device, reason, precision
    cache        dir, exists, writable, size_bytes, offline, partial_downloads,
                 models [{id, name, url, path, size, sha256, downloaded, pinned, verified,
                 problem}]  (verified: None when intact but unpinned)
    bundled      [{name, path, size, sha256, recorded_sha256, recorded_size, ok, problem}]
    smoke        [{device, precision, load_s, upscale_s, ok, error}]  (a 16x16 -> 32x32 upscale)
    problems     [{message, hint}]
    notes        [{message, hint}]  (advice that is not a fault: a CUDA build with no GPU)
    ok           bool
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from importlib import metadata

import numpy as np
import torch

from sirenup import __version__
from sirenup.files import sha256_file
from sirenup.hub import cache, download, registry
from sirenup.inference import devices
from sirenup.inference.upscaler import Upscaler

SMOKE_SIZE = 16


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    return {
        "sirenup": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "pillow": _version("Pillow"),
        "numpy": _version("numpy"),
        "safetensors": _version("safetensors"),
        "platform": platform.platform(),
    }


def cache_report() -> dict:
    root = cache.cache_dir()
    models = [entry.to_dict(verify=True) for entry in cache.entries()]
    partial = sorted(str(p) for p in cache.models_dir().glob("*/*.incomplete")) \
        if cache.models_dir().is_dir() else []
    return {
        "dir": str(root),
        "exists": root.is_dir(),
        "writable": _writable(root),
        "size_bytes": cache.folder_size(root) if root.is_dir() else 0,
        "offline": download.offline(),
        "partial_downloads": partial,
        "models": models,
    }


def _writable(root) -> bool:
    """Whether the cache folder (or the nearest folder above it that exists) is writable."""
    probe = root
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return False
    try:
        with tempfile.TemporaryFile(dir=probe):
            return True
    except OSError:
        return False


def bundled_report() -> list[dict]:
    rows = []
    for entry in registry.REGISTRY.values():
        if not entry.bundled:
            continue
        path = registry.bundled_path(entry)
        row = {"name": entry.name, "path": str(path), "size": None, "sha256": None,
               "recorded_sha256": entry.sha256, "recorded_size": entry.size, "ok": False,
               "problem": None}
        if not path.is_file():
            row["problem"] = "file missing"
        else:
            row["size"] = path.stat().st_size
            row["sha256"] = sha256_file(path)
            if entry.size is not None and row["size"] != entry.size:
                row["problem"] = f"size {row['size']} bytes, registry says {entry.size}"
            elif entry.sha256 and row["sha256"] != entry.sha256:
                row["problem"] = f"sha256 {row['sha256']}, registry says {entry.sha256}"
            else:
                row["ok"] = True
        rows.append(row)
    return rows


def smoke_test(device: str) -> dict:
    """Load the default model on ``device`` and upscale a 16x16 image x2, timed."""
    row = {"device": device, "precision": None, "load_s": None, "upscale_s": None,
           "ok": False, "error": None}
    try:
        t0 = time.perf_counter()
        upscaler = Upscaler(registry.DEFAULT_MODEL, device=device, precision="auto", tile=0)
        row["precision"] = getattr(upscaler, "precision", None)
        row["load_s"] = round(time.perf_counter() - t0, 4)
        y, x = np.mgrid[0:SMOKE_SIZE, 0:SMOKE_SIZE].astype(np.float32) / (SMOKE_SIZE - 1)
        rgb = np.stack([x, y, (x + y) / 2], axis=-1)
        t0 = time.perf_counter()
        out = upscaler.upscale_rgb(rgb, (2 * SMOKE_SIZE, 2 * SMOKE_SIZE))
        row["upscale_s"] = round(time.perf_counter() - t0, 4)
        if out.shape != (2 * SMOKE_SIZE, 2 * SMOKE_SIZE, 3) or not np.isfinite(out).all():
            row["error"] = f"bad output: shape {out.shape}, finite {bool(np.isfinite(out).all())}"
        else:
            row["ok"] = True
    except Exception as error:  # a diagnosis must go on
        row["error"] = f"{type(error).__name__}: {error}"
    return row


def problems_of(report: dict) -> list[dict]:
    found = []

    def problem(message: str, hint: str) -> None:
        found.append({"message": message, "hint": hint})

    cuda = report["cuda"]
    if cuda["error"]:
        problem(f"CUDA: {cuda['error']}",
                "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")
    elif cuda["driver"] and not cuda["available"]:
        if not cuda["built"]:
            problem(f"an NVIDIA driver ({cuda['driver']}) is installed but torch "
                    f"{report['versions']['torch']} is a CPU-only build",
                    "install a CUDA build of torch (see https://pytorch.org/get-started)")
        else:
            problem(f"an NVIDIA driver ({cuda['driver']}) is installed but torch (built for "
                    f"CUDA {cuda['build_version']}) cannot use it",
                    "the driver may be older than the CUDA version torch was built for, or "
                    "CUDA_VISIBLE_DEVICES hides the GPUs")
    mps = report["mps"]
    if sys.platform == "darwin" and platform.machine() == "arm64" and not mps["available"]:
        problem("this Mac has Apple silicon but MPS is not available",
                "MPS needs macOS 12.3+ and an arm64 build of Python and torch"
                if mps["built"] else "install a torch build with MPS support")
    store = report["cache"]
    if not store["writable"]:
        problem(f"the cache folder {store['dir']} is not writable",
                f"set {cache.ENV_CACHE} to a writable folder")
    for entry in store["models"]:
        if entry["problem"]:
            problem(f"cached model {entry['id']} fails verification ({entry['problem']})",
                    f"it is fetched again on next use; or remove it: sirenup models remove "
                    f"{entry['id']}")
    for row in report["bundled"]:
        if not row["ok"]:
            problem(f"bundled model {row['name']}: {row['problem']}",
                    "reinstall sirenup; in a source checkout after retraining run: "
                    "python -m sirenup.hub.registry --update-bundled")
    for row in report["smoke"]:
        if not row["ok"]:
            problem(f"a tiny upscale on {row['device']} failed: {row['error']}",
                    "use --device cpu meanwhile; 'sirenup upscale --debug' shows the "
                    "traceback")
    return found


CUDA_PACKAGES = ("nvidia-", "cuda-", "triton")  # distributions a CUDA build of torch pulls


def cuda_libraries_bytes() -> int:
    """Bytes of the installed distributions that only a CUDA build of torch uses (their
    RECORD sizes): what the CPU-only build would not install."""
    total = 0
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(CUDA_PACKAGES):
            total += sum(f.size or 0 for f in dist.files or [])
    return total


def notes_of(report: dict) -> list[dict]:
    """Advice that is no fault: a CUDA build of torch on a machine without an NVIDIA GPU works,
    on the CPU, but carries gigabytes it never uses."""
    cuda = report["cuda"]
    if not (cuda["built"] and not cuda["available"] and not cuda["driver"]):
        return []
    size = cuda_libraries_bytes()
    saved = f"about {size / 2**30:.1f} GiB of CUDA libraries" if size else \
        "the CUDA libraries it carries"
    return [{"message": f"torch {report['versions']['torch']} is a CUDA build (CUDA "
                        f"{cuda['build_version']}) and this machine has no NVIDIA GPU",
             "hint": f"the CPU-only build would save {saved}, with the same results: pip "
                     "uninstall torch torchvision, then pip install torch torchvision "
                     "--index-url https://download.pytorch.org/whl/cpu"}]


def collect(*, smoke: bool = True) -> dict:
    device, reason = devices.auto_device()
    cuda = devices.cuda_report()
    cuda["visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    report = {
        "versions": versions(),
        "cpu": devices.cpu_report(),
        "cuda": cuda,
        "mps": devices.mps_report(),
        "auto": {"device": str(device), "reason": reason,
                 "precision": devices.resolve_precision("auto", device)},
        "cache": cache_report(),
        "bundled": bundled_report(),
        "smoke": [smoke_test(name) for name in devices.available_devices()] if smoke else [],
    }
    report["problems"] = problems_of(report)
    report["notes"] = notes_of(report)
    report["ok"] = not report["problems"]
    return report
