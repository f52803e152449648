"""In-process speed benchmark: the model against bicubic on the same device, same input.

For each LR size a deterministic, photo-like synthetic image (smooth gradients, hard edges,
band-limited texture and sensor-like noise) is upscaled by

- ``model``: ``Upscaler.upscale_rgb`` (numpy in, numpy out, tiled as configured);
- ``bicubic_torch``: ``torch.nn.functional.interpolate(mode="bicubic")`` on the run's device,
  numpy in, numpy out, so host/device copies count as they do for the model;
- ``bicubic_pillow``: Pillow ``resize(..., BICUBIC)`` of the 8-bit image (always on the CPU).

Times are wall-clock (``time.perf_counter``) with CUDA/MPS synchronised before every clock
read. Memory is ``torch.cuda.max_memory_allocated`` on CUDA; elsewhere it is how far the
process's peak RSS (``ru_maxrss``) rose during the method's runs: 0 means the process had
already been that large, so read it as a lower bound.
"""

from __future__ import annotations

import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sirenup.defaults import DEFAULT_OVERLAP, DEFAULT_TILE
from sirenup.engine.devices import cpu_model
from sirenup.engine.upscaler import load_upscaler
from sirenup.hub.registry import DEFAULT_MODEL

MB = 1024 * 1024


def synthetic_photo(height: int, width: int | None = None, *, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like RGB image -> (height, width, 3) float32 in [0, 1], 8-bit
    quantised like a real photo."""
    width = height if width is None else width
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    tint = rng.uniform(0.75, 1.15, 3).astype(np.float32)  # a colour cast, like daylight
    luma = np.full((height, width), 0.5, dtype=np.float32)
    gx, gy = rng.uniform(-0.35, 0.35, 2)
    luma += gx * (u - 0.5) + gy * (v - 0.5)  # smooth illumination: a gradient, slow waves
    for _ in range(3):
        fx, fy = rng.uniform(0.3, 2.5, 2)
        luma += 0.07 * np.sin(2 * np.pi * (fx * u + fy * v) + rng.uniform(0, 2 * np.pi))
    img = luma[..., None] * tint
    for c in range(3):  # gentle chroma drift
        fx, fy = rng.uniform(0.2, 1.5, 2)
        img[..., c] += 0.06 * np.sin(2 * np.pi * (fx * u + fy * v) + rng.uniform(0, 2 * np.pi))
    side = min(height, width)
    for _ in range(14):  # objects with hard edges: discs and rectangles
        shift = rng.uniform(-0.25, 0.25, 3).astype(np.float32)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        if rng.random() < 0.5:
            r = rng.uniform(0.04, 0.2) * side
            mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        else:
            hw, hh = rng.uniform(0.03, 0.2, 2) * side
            mask = (np.abs(x - cx) < hw) & (np.abs(y - cy) < hh)
        img[mask] += shift
    for _ in range(6):  # thin straight lines (wires, window frames)
        angle, offset = rng.uniform(0, np.pi), rng.uniform(-0.5, 0.5) * side
        dist = np.abs((x - width / 2) * np.sin(angle) - (y - height / 2) * np.cos(angle) - offset)
        img[dist < rng.uniform(0.6, 2.0)] += rng.uniform(-0.3, 0.3, 3).astype(np.float32)
    for factor, amplitude in ((24, 0.05), (8, 0.035), (3, 0.025)):  # band-limited texture
        coarse = rng.normal(0.0, 1.0, (max(height // factor, 2), max(width // factor, 2)))
        texture = Image.fromarray(coarse.astype(np.float32)).resize((width, height),
                                                                    Image.BICUBIC)
        img += amplitude * np.asarray(texture, dtype=np.float32)[..., None] * tint
    img += rng.normal(0.0, 0.012, img.shape).astype(np.float32)  # sensor noise
    return (np.round(np.clip(img, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@torch.inference_mode()
def bicubic_rgb(rgb: np.ndarray, size: tuple[int, int], device: torch.device) -> np.ndarray:
    """The torch bicubic baseline with the same I/O as ``Upscaler.upscale_rgb``."""
    lr = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
    lr = lr.permute(2, 0, 1).unsqueeze(0).to(device)
    out = F.interpolate(lr, size=(size[1], size[0]), mode="bicubic", align_corners=False)
    return out.clamp_(0, 1)[0].permute(1, 2, 0).cpu().numpy()


def _max_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS: bytes, else KiB


class MemoryProbe:
    """Peak memory of what runs between ``start()`` and ``stop()``, in MiB."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = ("cuda_max_memory_allocated" if device.type == "cuda"
                     else "process_rss_peak_increase")
        self._rss0: int | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._rss0 = _max_rss_bytes()

    def stop(self) -> float | None:
        if self.device.type == "cuda":
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / MB
        rss1 = _max_rss_bytes()
        if rss1 is None or self._rss0 is None:
            return None
        return (rss1 - self._rss0) / MB


def time_method(fn: Callable[[], object], device: torch.device, *, repeats: int, warmup: int,
                out_mp: float) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed."""
    probe = MemoryProbe(device)
    probe.start()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    peak = probe.stop()
    median = statistics.median(times)
    return {
        "device": device.type,
        "median_s": median,
        "min_s": min(times),
        "times_s": times,
        "mp_per_s": out_mp / median if median > 0 else math.inf,
        "peak_mem_mb": None if peak is None else round(peak, 1),
        "memory_kind": probe.kind,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    return cpu_model()


def run_benchmark(*, model: str = DEFAULT_MODEL, device: str = "auto", precision: str = "auto",
                  sizes: Sequence[int] = (256, 512), scale: float = 4.0, repeats: int = 5,
                  warmup: int = 1, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                  threads: int | None = None,
                  seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """Time the model and the bicubic baselines for each LR size -> a JSON-ready dict."""
    log = log or (lambda message: None)
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    upscaler = load_upscaler(model, device=device, precision=precision, tile=tile,
                             overlap=overlap)
    load_s = time.perf_counter() - t0
    dev = upscaler.device
    cpu = torch.device("cpu")
    result = {
        "model": upscaler.model_name,
        "model_path": str(upscaler.model_path),
        "device": str(dev),
        "precision": upscaler.precision,
        "device_name": device_name(dev),
        "cpu": cpu_model(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "scale": scale,
        "tile": tile,
        "overlap": overlap,
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
        "load_s": load_s,
        "sizes": [],
    }
    for side in sizes:
        rgb = synthetic_photo(side, side, seed=seed)
        out_size = (max(1, round(side * scale)), max(1, round(side * scale)))
        out_mp = out_size[0] * out_size[1] / 1e6
        pil = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
        log(f"{side}x{side} -> {out_size[0]}x{out_size[1]}: model")
        model_row = time_method(lambda rgb=rgb, size=out_size: upscaler.upscale_rgb(rgb, size),
                                dev, repeats=repeats, warmup=warmup, out_mp=out_mp)
        log(f"{side}x{side} -> {out_size[0]}x{out_size[1]}: bicubic")
        torch_row = time_method(lambda rgb=rgb, size=out_size: bicubic_rgb(rgb, size, dev),
                                dev, repeats=repeats, warmup=warmup, out_mp=out_mp)
        pillow_row = time_method(
            lambda pil=pil, size=out_size: np.asarray(pil.resize(size, Image.BICUBIC)),
            cpu, repeats=repeats, warmup=warmup, out_mp=out_mp)
        result["sizes"].append({
            "lr": [side, side],
            "out": list(out_size),
            "out_mp": out_mp,
            "model": model_row,
            "bicubic_torch": torch_row,
            "bicubic_pillow": pillow_row,
            "ratio_vs_bicubic_torch": _ratio(model_row, torch_row),
            "ratio_vs_bicubic_pillow": _ratio(model_row, pillow_row),
        })
    return result


def _ratio(model_row: dict, baseline_row: dict) -> float:
    base = baseline_row["median_s"]
    return model_row["median_s"] / base if base > 0 else math.inf
