"""Devices and precision.

Device: auto takes CUDA, then MPS, then the CPU; a requested device that is not available is an
error, never a silent fallback. Precision: ``auto`` is fp16 on CUDA and fp32 elsewhere; fp16
and bf16 run the model's convolutions and matrix products under ``torch.autocast`` while
coordinates, sampling and the blending canvas stay fp32 (a SIREN's first layer multiplies its
input by w0 = 30, so fp16 coordinates would visibly shift the output). Plus a hardware report
for ``sirenup doctor``.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import subprocess
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from sirenup.defaults import CPU_ONE_TILE_PIXELS, DEFAULT_TILE
from sirenup.errors import UsageError, mention
from sirenup.models.architectures import LIIF_SIREN, TileCost, architecture_of

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16",
            "bfloat16": "bf16"}


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_built() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_built())


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def auto_device() -> tuple[torch.device, str]:
    """(device, why) for --device auto."""
    if cuda_available():
        return torch.device("cuda"), "CUDA is available"
    if mps_available():
        return torch.device("mps"), "MPS is available (no CUDA)"
    return torch.device("cpu"), "no CUDA or MPS device is available"


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> torch.device, or UsageError."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return auto_device()[0]
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not mps_available():
            raise UsageError("mps: MPS is not available on this machine (run 'sirenup doctor' "
                             "for details)", option="device")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not cuda_available():
            raise UsageError(f"{spec}: CUDA is not available (run 'sirenup doctor' for details)",
                             option="device")
        index = spec.partition(":")[2]
        if index:
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise UsageError(f"{spec}: no such GPU ({torch.cuda.device_count()} visible)",
                                 option="device")
        return torch.device(spec)
    raise UsageError(f"{spec}: expected auto, cpu, cuda, cuda:N or mps", option="device")


# -- precision ---------------------------------------------------------------------------------

def resolve_precision(spec: str, device: torch.device) -> str:
    """'auto' | 'fp32' | 'fp16' | 'bf16' on ``device`` -> 'fp32' | 'fp16' | 'bf16', or UsageError.

    auto: fp16 on CUDA, fp32 elsewhere. fp16 on the CPU is refused (slow, and it is what a
    forgotten --device cuda looks like); bf16 on CUDA needs a GPU that supports it (Ampere+).
    """
    name = (spec or "auto").strip().lower()
    name = _ALIASES.get(name, name)
    if name not in PRECISIONS:
        raise UsageError(f"{spec}: expected auto, fp32, fp16 or bf16", option="precision")
    if name == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type == "cpu":
        raise UsageError(f"fp16: not supported on the CPU (use fp32 or bf16, or "
                         f"{mention('device')} cuda/mps)", option="precision")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"bf16: {device} does not support bfloat16 (use fp16 or fp32)",
                         option="precision")
    if name != "fp32":
        _check_autocast(device, DTYPES[name], name)
    return name


def _check_autocast(device: torch.device, dtype: torch.dtype, name: str) -> None:
    """torch only warns (and turns autocast off) for an unsupported dtype: make that an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            torch.autocast(device_type=device.type, dtype=dtype)
        except (RuntimeError, UserWarning) as error:
            raise UsageError(f"{name}: not supported on {device} ({error})",
                             option="precision") from None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a model runs in at ``precision`` (as nanoGPT's train.py does):
    ``torch.autocast`` with fp16/bf16, nothing with fp32. Autocast runs convolutions and
    matrix products in the low precision; the tiler keeps the encoding (which coordinates
    sample) and its canvas in fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


# -- decode sizes ------------------------------------------------------------------------------

# CPU: output rows per decode_grid call: enough that each band's x interpolation serves many
# rows, few enough that its row-blending product stays cheap (about 10 LR rows per band);
# queries per block inside a band: (16384, 64) fp32 activations, 4 MB, stay in cache.
MIN_BAND_ROWS, MAX_BAND_ROWS = 8, 32
CPU_BLOCK_QUERIES = 16384
# GPU: a band is as many rows as fit this many queries (a whole 512-px tile at x4 is 4.2 M),
# each block the whole band: kernel launches, not cache, are what costs there. About 1 KB of
# activations per query in fp32; the budget shrinks to a quarter of free memory when that is
# less.
GPU_BAND_QUERIES = 1 << 23
GPU_BYTES_PER_QUERY = 1024


@dataclass(frozen=True)
class DecodeSizes:
    """How the decoder walks a tile: output rows per band and queries per block."""

    rows: int | None  # output rows per decode_grid call; None: the whole tile
    band_queries: int | None  # or: as many rows as hold this many queries
    block_queries: int | None  # queries per block inside decode_grid; None: the whole band

    def band_rows(self, width: int, height: int) -> int:
        if self.rows is not None:
            return max(1, min(self.rows, height))
        if self.band_queries is not None:
            return max(1, min(self.band_queries // max(width, 1), height))
        return max(1, height)


def decode_sizes(device: torch.device, scale: float) -> DecodeSizes:
    """Bands and blocks for ``device`` at ``scale`` (output rows per LR row): cache-sized on
    the CPU; whole tiles on CUDA/MPS, as far as free memory allows."""
    if device.type == "cpu":
        rows = min(MAX_BAND_ROWS, max(MIN_BAND_ROWS, round(8 * scale)))
        return DecodeSizes(rows=rows, band_queries=None, block_queries=CPU_BLOCK_QUERIES)
    budget = GPU_BAND_QUERIES
    free = free_memory(device)
    if free is not None:
        budget = max(CPU_BLOCK_QUERIES, min(budget, free // 4 // GPU_BYTES_PER_QUERY))
    return DecodeSizes(rows=None, band_queries=budget, block_queries=None)


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` (CUDA: the driver's count; MPS: the recommended working set
    less what is allocated), or None (CPU, or unknown)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "mps":
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    except (RuntimeError, AttributeError):
        return None
    return None


def tile_cost(model: nn.Module | None = None) -> TileCost:
    """What an LR tile of ``model`` costs, from its architecture's descriptor and its config;
    None: the default config of the default architecture (the bundled models' width)."""
    if model is None:
        return LIIF_SIREN.tile_cost(LIIF_SIREN.config_class())
    return architecture_of(model).tile_cost(model.config)


# Bytes per LR pixel of a tile on a GPU at scale s, whole-tile bands: the encoder's and the
# decoder's input maps, and s^2 queries.
def _tile_bytes_per_pixel(cost: TileCost, scale: float) -> float:
    return cost.bytes_per_lr_pixel + scale * scale * cost.bytes_per_query


MAX_AUTO_TILE = 4096


def auto_tile(device: torch.device, scale: float, requested: int | None,
              model: nn.Module | None = None, image_hw: tuple[int, int] | None = None) -> int:
    """The LR tile side to use: ``requested``, the user's, is kept whatever it is (None: not
    chosen). Not chosen: on the CPU DEFAULT_TILE, or the whole image (``image_hw``) when it
    has at most CPU_ONE_TILE_PIXELS; on CUDA/MPS it grows to what half the free memory holds
    for ``model`` (bigger tiles: fewer launches, less re-read context; a wider model, a
    smaller tile), up to MAX_AUTO_TILE. Out-of-memory still halves it."""
    if requested is not None:
        return requested
    if device.type == "cpu" and image_hw is not None \
            and image_hw[0] * image_hw[1] <= CPU_ONE_TILE_PIXELS:
        return max(DEFAULT_TILE, *image_hw)
    free = None if device.type == "cpu" else free_memory(device)
    if free is None:
        return DEFAULT_TILE
    per_pixel = _tile_bytes_per_pixel(tile_cost(model), max(scale, 1.0))
    side = int(math.sqrt(free / 2 / per_pixel))
    return max(DEFAULT_TILE, min(MAX_AUTO_TILE, side // 64 * 64))


# -- hardware report ---------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_report() -> dict:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "model": cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
    }


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver version (nvidia-smi, else /proc/driver/nvidia/version), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10)
        lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if out.returncode == 0 and lines:
            return lines[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as f:
            match = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d[\w.-]*)", f.read())
        return match[1] if match else None
    except OSError:
        return None


def cuda_report() -> dict:
    """CUDA build, driver and each GPU; ``error`` holds why CUDA is unusable, if it says."""
    report = {
        "built": torch.backends.cuda.is_built(),
        "build_version": torch.version.cuda,
        "cudnn_version": None,
        "available": False,
        "driver": None,
        "device_count": 0,
        "devices": [],
        "error": None,
    }
    try:
        report["available"] = cuda_available()
    except Exception as error:  # a broken driver can raise here
        report["error"] = f"{type(error).__name__}: {error}"
    report["driver"] = nvidia_driver_version()  # also when torch is CPU-only: a hint
    if not report["available"]:
        return report
    try:
        report["cudnn_version"] = torch.backends.cudnn.version()
        report["device_count"] = torch.cuda.device_count()
        for index in range(report["device_count"]):
            props = torch.cuda.get_device_properties(index)
            report["devices"].append({
                "index": index,
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 2),
                "bf16": bool(torch.cuda.is_bf16_supported()) if index == 0 else None,
            })
    except Exception as error:
        report["error"] = f"{type(error).__name__}: {error}"
    return report


def mps_report() -> dict:
    return {"built": mps_built(), "available": mps_available()}


def available_devices() -> list[str]:
    """Every device a command could run on here: cpu, each CUDA GPU, mps."""
    names = ["cpu"]
    if cuda_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if mps_available():
        names.append("mps")
    return names
