"""Device selection: auto takes CUDA, then MPS, then the CPU; a requested device that is not
available is an error, never a silent fallback."""

from __future__ import annotations

import torch

from sirenup.errors import UsageError


def cuda_available() -> bool:
    return torch.cuda.is_available()


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
            raise UsageError("--device mps: MPS is not available on this machine "
                             "(run 'sirenup doctor' for details)")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not cuda_available():
            raise UsageError(f"--device {spec}: CUDA is not available "
                             "(run 'sirenup doctor' for details)")
        index = spec.partition(":")[2]
        if index:
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise UsageError(f"--device {spec}: no such GPU "
                                 f"({torch.cuda.device_count()} visible)")
        return torch.device(spec)
    raise UsageError(f"--device {spec}: expected auto, cpu, cuda, cuda:N or mps")
