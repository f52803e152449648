"""Weights files: safetensors with the model config and metadata in the header.

Loading never unpickles: ``.safetensors`` holds only tensors and a string->string header.
Legacy ``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig

FORMAT = "sirenup-weights/1"
ARCHITECTURE = "liif-siren"


class WeightsError(ValueError):
    """A weights file that cannot be used: unreadable, wrong format, mismatched tensors."""


def save_weights(path: Path, model: LiifSiren, metadata: dict | None = None) -> None:
    """Write ``model``'s fp32 weights, its config and ``metadata`` atomically to ``path``."""
    from safetensors.torch import save_file

    header = {
        "format": FORMAT,
        "architecture": ARCHITECTURE,
        "config": json.dumps(model.config.to_dict()),
        "metadata": json.dumps(metadata or {}),
    }
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; weights are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_metadata(path: Path, extra: dict) -> dict:
    """Merge ``extra`` into the metadata of a weights file, tensors untouched -> new metadata.

    Used to record measured quality in a file that ``sirenup train`` exported.
    """
    model, metadata = load_weights(path)
    metadata = {**metadata, **extra}
    save_weights(path, model, metadata)
    return metadata


def read_header(path: Path) -> dict:
    """The safetensors header of ``path`` (config and metadata decoded), without tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as error:  # safetensors raises its own error types
        raise WeightsError(f"{path}: not a safetensors weights file ({error})") from error
    if header.get("architecture") != ARCHITECTURE:
        raise WeightsError(f"{path}: not a sirenup model (architecture "
                           f"{header.get('architecture')!r})")
    try:
        return {
            "config": json.loads(header.get("config", "{}")),
            "metadata": json.loads(header.get("metadata", "{}")),
        }
    except json.JSONDecodeError as error:
        raise WeightsError(f"{path}: corrupt header ({error})") from error


def load_weights(path: Path, *, device: str | torch.device = "cpu") -> tuple[LiifSiren, dict]:
    """Build the model a weights file describes -> (model in eval mode, metadata)."""
    path = Path(path)
    if path.suffix in {".pt", ".pth"}:
        return _load_torch_file(path, device)
    from safetensors.torch import load_file

    header = read_header(path)
    model = _build(header["config"], path)
    _load_state(model, load_file(str(path)), path)
    return model.to(device).eval(), header["metadata"]


def _load_torch_file(path: Path, device) -> tuple[LiifSiren, dict]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"{path}: cannot be loaded safely ({error})") from error
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise WeightsError(f"{path}: expected a dict with 'state_dict' and 'config'")
    model = _build(blob.get("config", {}), path)
    _load_state(model, blob["state_dict"], path)
    return model.to(device).eval(), blob.get("metadata", {})


def _build(config: dict, path: Path) -> LiifSiren:
    try:
        return LiifSiren(config=LiifSirenConfig.from_dict(config))
    except (TypeError, ValueError, AttributeError) as error:
        raise WeightsError(f"{path}: invalid model config ({error})") from error


def _load_state(model: LiifSiren, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise WeightsError(f"{path}: tensors do not match the model config ({error})") from error
