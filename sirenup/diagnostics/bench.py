"""In-process speed benchmark: the model against bicubic on the same device, same input.

For each device, scale and LR size, a deterministic, photo-like synthetic image (smooth
gradients, hard edges, band-limited texture and sensor-like noise) is upscaled by

- ``model``: ``Upscaler.upscale_rgb`` (numpy in, numpy out, tiled as configured);
- ``bicubic_torch``: ``torch.nn.functional.interpolate(mode="bicubic")`` on the same device,
  numpy in, numpy out, so host/device copies count as they do for the model;
- ``bicubic_pillow``: Pillow ``resize(..., BICUBIC)`` of the 8-bit image (always on the CPU).

Times are wall-clock (``time.perf_counter``) with CUDA/MPS synchronised before every clock
read. Memory (``MemoryProbe``) is the peak a method added above what the process held when its
runs began: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU and MPS the resident set
size, sampled every few milliseconds by a thread (and exact whenever the process reaches a new
all-time high, from ``getrusage``), so each case reports its own peak, not the process's.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

try:  # Unix only
    import resource
except ImportError:
    resource = None
try:  # optional: the memory reading off Linux
    import psutil
except ImportError:
    psutil = None

from sirenup.defaults import DEFAULT_OVERLAP, DEFAULT_TILE
from sirenup.hub.registry import DEFAULT_MODEL
from sirenup.inference.devices import available_devices, cpu_model
from sirenup.inference.upscaler import load_upscaler

MB = 1024 * 1024
METHODS = ("model", "bicubic_torch", "bicubic_pillow")
# Progress callback: (runs done, runs in all, what runs now).
Progress = Callable[[int, int, str], None]


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


# -- memory ------------------------------------------------------------------------------------

def max_rss_bytes() -> int | None:
    """The process's all-time peak resident set size (getrusage), or None (Windows)."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS: bytes, else KiB


def rss_reader() -> Callable[[], int] | None:
    """A cheap function -> the current resident set size in bytes, or None if there is none:
    /proc/self/statm (Linux), else psutil when it is installed."""
    try:
        statm = open("/proc/self/statm", "rb")  # noqa: SIM115 - kept open, read many times
        page = os.sysconf("SC_PAGE_SIZE")

        def read_statm() -> int:
            statm.seek(0)
            return int(statm.read().split()[1]) * page

        read_statm()
        return read_statm
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    if psutil is None:
        return None
    process = psutil.Process()
    return lambda: process.memory_info().rss


class RssSampler:
    """Samples the resident set size every ``interval`` seconds in a daemon thread; the big
    buffers of an upscale live for milliseconds at least, so a 2 ms period sees them."""

    def __init__(self, read: Callable[[], int], interval: float = 0.002):
        self.read, self.interval = read, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            self._stop.wait(self.interval)

    def start(self) -> None:
        self.peak = self.read()
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read())
        return self.peak


class MemoryProbe:
    """Peak memory added by what runs between ``start()`` and ``stop()``, in MiB (None if this
    platform cannot tell). ``kind`` names what is measured."""

    def __init__(self, device: torch.device):
        self.device = device
        self._base = 0
        self._rusage0: int | None = None
        self._sampler: RssSampler | None = None
        if device.type == "cuda":
            self.kind = "cuda_max_allocated_increase"
        elif device.type == "mps":
            self.kind = "mps_allocated_increase_sampled"
        else:
            self.kind = "rss_peak_increase"

    def _mps_allocated(self) -> int:
        return int(torch.mps.current_allocated_memory())

    def start(self) -> None:
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return
        read = self._mps_allocated if self.device.type == "mps" else rss_reader()
        self._rusage0 = max_rss_bytes() if self.device.type == "cpu" else None
        if read is not None:
            self._sampler = RssSampler(read)
            self._sampler.start()
            self._base = self._sampler.peak
        elif self._rusage0 is not None:
            self._base = self._rusage0

    def stop(self) -> float | None:
        synchronize(self.device)
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated(self.device) - self._base) / MB
        peak = self._sampler.stop() if self._sampler is not None else None
        if self._rusage0 is not None:
            rusage1 = max_rss_bytes()
            if rusage1 is not None and rusage1 > self._rusage0:  # a new all-time high: exact
                peak = max(peak or 0, rusage1)
        if peak is None:
            return None
        return max(peak - self._base, 0) / MB


# -- timing ------------------------------------------------------------------------------------

def time_method(fn: Callable[[], object], device: torch.device, *, repeats: int, warmup: int,
                out_mp: float, on_run: Callable[[], None] | None = None) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; ``on_run`` after
    each run (progress)."""
    probe = MemoryProbe(device)
    probe.start()
    for _ in range(warmup):
        fn()
        if on_run:
            on_run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        if on_run:
            on_run()
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


def bench_devices(spec: str) -> list[str]:
    """--device: 'all' -> every device available here (cpu, cuda:N, mps); else that one."""
    return available_devices() if spec.strip().lower() == "all" else [spec]


@dataclass(frozen=True)
class Case:
    scale: float
    side: int

    @property
    def out_size(self) -> tuple[int, int]:
        side = max(1, round(self.side * self.scale))
        return side, side

    @property
    def out_mp(self) -> float:
        return self.out_size[0] * self.out_size[1] / 1e6

    def label(self) -> str:
        return f"x{self.scale:g} {self.side}\u00b2 -> {self.out_size[0]}\u00b2"


def case_runs(upscaler, case: Case, seed: int) -> dict[str, tuple[Callable, torch.device]]:
    """Each method of one case -> (a function that runs it once, the device it runs on)."""
    rgb = synthetic_photo(case.side, case.side, seed=seed)
    pil = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
    size, dev = case.out_size, upscaler.device
    return {
        "model": (lambda: upscaler.upscale_rgb(rgb, size), dev),
        "bicubic_torch": (lambda: bicubic_rgb(rgb, size, dev), dev),
        "bicubic_pillow": (lambda: np.asarray(pil.resize(size, Image.BICUBIC)),
                           torch.device("cpu")),
    }


def run_benchmark(*, model: str = DEFAULT_MODEL, device: str = "auto", precision: str = "auto",
                  sizes: Sequence[int] = (256, 512), scales: Sequence[float] = (4.0,),
                  repeats: int = 3, warmup: int = 1, tile: int | None = None,
                  overlap: int | None = None, threads: int | None = None, seed: int = 0,
                  progress: Progress | None = None) -> dict:
    """Time the model and the bicubic baselines for each device x scale x LR size -> a
    JSON-ready dict: the machine, one entry per device (``devices``) and one per case
    (``cases``, each naming its device). ``tile``/``overlap`` None: not chosen (the defaults;
    the tile grows on a GPU, ``devices.auto_tile``)."""
    if threads is not None:
        torch.set_num_threads(threads)
    devices = bench_devices(device)
    cases = [Case(float(s), side) for s in scales for side in sizes]
    total = len(devices) * len(cases) * len(METHODS) * (warmup + repeats)
    done = 0
    report = progress or (lambda done, total, what: None)
    result = {
        "model": None,
        "cpu": cpu_model(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "scales": [float(s) for s in scales],
        "sizes": list(sizes),
        "tile": DEFAULT_TILE if tile is None else tile,
        "overlap": DEFAULT_OVERLAP if overlap is None else overlap,
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
        "devices": [],
        "cases": [],
    }
    for spec in devices:
        report(done, total, f"{spec}: loading the model")
        t0 = time.perf_counter()
        upscaler = load_upscaler(model, device=spec, precision=precision, tile=tile,
                                 overlap=overlap)
        dev = upscaler.device
        result["model"] = upscaler.model_name
        result["devices"].append({
            "device": str(dev), "device_name": device_name(dev),
            "precision": upscaler.precision, "load_s": time.perf_counter() - t0,
        })
        for case in cases:
            row = {"device": str(dev), "scale": case.scale, "lr": [case.side, case.side],
                   "out": list(case.out_size), "out_mp": case.out_mp}
            for method, (fn, method_device) in case_runs(upscaler, case, seed).items():
                what = f"{dev} {case.label()}: {method.replace('_', ' ')}"

                def tick(what=what) -> None:
                    nonlocal done
                    done += 1
                    report(done, total, what)

                report(done, total, what)
                row[method] = time_method(fn, method_device, repeats=repeats, warmup=warmup,
                                          out_mp=case.out_mp, on_run=tick)
            row["ratio_vs_bicubic_torch"] = _ratio(row["model"], row["bicubic_torch"])
            row["ratio_vs_bicubic_pillow"] = _ratio(row["model"], row["bicubic_pillow"])
            result["cases"].append(row)
    return result


def _ratio(model_row: dict, baseline_row: dict) -> float:
    base = baseline_row["median_s"]
    return model_row["median_s"] / base if base > 0 else math.inf
