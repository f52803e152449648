"""Weights files: safetensors with the model config and metadata in the header.

Loading never unpickles: ``.safetensors`` holds only tensors and a string->string header.
Legacy ``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)`` only.

A file is validated before any model is built, so a hostile or broken one fails in well under a
second with one line: the header names a registered architecture (``models.architectures``),
the config's known fields have the types and bounds that architecture's config declares, the
known metadata entries the types of METADATA_TYPES (other entries may be any JSON), the
tensors' names and shapes are exactly those the config implies (the first mismatch is named),
their dtypes are floating point and their values finite.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from sirenup.errors import SirenupError
from sirenup.files import atomic_write_bytes, check_regular_file, first_line
from sirenup.models.architectures import (
    ARCHITECTURES,
    LIIF_SIREN,
    Architecture,
    architecture_named,
    architecture_of,
)
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig

FORMAT = "sirenup-weights/1"

# Known metadata entries and the JSON types they must have; entries not listed here may hold
# any JSON value (training records add their own, e.g. dicts of hyper-parameters).
METADATA_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "steps": (int,),
    "total_steps": (int,),
    "train_seconds": (int, float),
    "total_train_seconds": (int, float),
    "training_data": (list,),
    "scale_range": (list,),
    "quality": (dict,),
    "init": (dict,),
}
FLOAT_DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
_SAFETENSORS_FLOATS = {"F16", "BF16", "F32", "F64"}


class WeightsError(SirenupError, ValueError):
    """A weights file that cannot be used: unreadable, wrong format, mismatched tensors (one
    line; the CLI exits 1 with it)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = path


def save_weights(path: Path, model: LiifSiren, metadata: dict | None = None) -> None:
    """Write ``model``'s fp32 weights, its config and ``metadata`` atomically to ``path``."""
    header = {
        "format": FORMAT,
        "architecture": architecture_of(model).name,
        "config": json.dumps(model.config.to_dict()),
        "metadata": json.dumps(metadata or {}),
    }
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata=header))


def update_metadata(path: Path, extra: dict) -> dict:
    """Merge ``extra`` into the metadata of a weights file, tensors untouched -> new metadata.

    Used to record measured quality in a file that ``sirenup train`` exported.
    """
    model, metadata = load_weights(path)
    metadata = {**metadata, **extra}
    save_weights(path, model, metadata)
    return metadata


def read_header(path: Path) -> dict:
    """The safetensors header of ``path`` (config and metadata decoded and validated), without
    tensors."""
    _check_regular(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as error:  # safetensors raises its own error types
        hint = " (it is an HTML page: a login or error page served instead of the file?)" \
            if _looks_like_html(path) else ""
        raise WeightsError(f"{path}: not a safetensors weights file ({_first_line(error)})"
                           f"{hint}", path) from None
    architecture = architecture_named(header.get("architecture"))
    if architecture is None:
        raise WeightsError(f"{path}: not a sirenup model (architecture "
                           f"{str(header.get('architecture'))[:40]!r})", path)
    try:
        config = json.loads(header.get("config", "{}"))
        metadata = json.loads(header.get("metadata", "{}"))
    except (json.JSONDecodeError, RecursionError) as error:
        raise WeightsError(f"{path}: corrupt header ({_first_line(error)})", path) from None
    check_config(config, path, architecture)
    check_metadata(metadata, path)
    return {"architecture": architecture, "config": config, "metadata": metadata}


def check_config(config: object, path: Path, architecture: Architecture = LIIF_SIREN) -> None:
    """WeightsError unless ``config`` is a dict whose known fields are within the bounds of
    the architecture's config (``LiifSirenConfig.BOUNDS``)."""
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: invalid model config (a {type(config).__name__}, "
                           "not a JSON object)", path)
    problem = architecture.config_problem(config)
    if problem is not None:
        raise WeightsError(f"{path}: invalid model config: {problem}", path)


def check_metadata(metadata: object, path: Path) -> None:
    """WeightsError unless ``metadata`` is a dict whose known entries have METADATA_TYPES."""
    if not isinstance(metadata, dict):
        raise WeightsError(f"{path}: invalid metadata (a {type(metadata).__name__}, not a "
                           "JSON object)", path)
    for key, kinds in METADATA_TYPES.items():
        if key not in metadata:
            continue
        value = metadata[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            names = " or ".join({"str": "a string", "int": "an integer", "float": "a number",
                                 "list": "a list", "dict": "an object"}[k.__name__]
                                for k in kinds)
            raise WeightsError(f"{path}: invalid metadata: {key} is a "
                               f"{type(value).__name__}, expected {names}", path)
    scale_range = metadata.get("scale_range")
    if scale_range is not None and not (
            len(scale_range) == 2
            and all(isinstance(s, int | float) and not isinstance(s, bool) for s in scale_range)
            and all(math.isfinite(s) for s in scale_range)
            and 1.0 <= scale_range[0] <= scale_range[1]):
        raise WeightsError(f"{path}: invalid metadata: scale_range must be [low, high] with "
                           "1 <= low <= high", path)
    if not all(isinstance(item, str) for item in metadata.get("training_data", [])):
        raise WeightsError(f"{path}: invalid metadata: training_data must be a list of "
                           "strings", path)


def expected_shapes(config: LiifSirenConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the model ``config`` describes, built on the meta device (no
    memory, no initialisation cost)."""
    with torch.device("meta"):
        model = build_model(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_tensors(found: dict[str, tuple[tuple[int, ...], bool]], config: LiifSirenConfig,
                  path: Path) -> None:
    """``found``: name -> (shape, is floating point). WeightsError naming the first tensor
    that is missing, unexpected, of the wrong shape or not floating point."""
    expected = expected_shapes(config)
    for name, shape in expected.items():
        if name not in found:
            raise WeightsError(f"{path}: tensors do not match the model config: {name} is "
                               "missing", path)
        actual, floating = found[name]
        if tuple(actual) != shape:
            raise WeightsError(f"{path}: tensors do not match the model config: {name} has "
                               f"shape {list(actual)}, the config needs {list(shape)}", path)
        if not floating:
            raise WeightsError(f"{path}: {name} is not a floating-point tensor", path)
    for name in found:
        if name not in expected:
            raise WeightsError(f"{path}: tensors do not match the model config: unexpected "
                               f"tensor {name[:80]}", path)


def check_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{path}: {name} holds NaN or infinite values: the file is "
                               "corrupt or the training diverged", path)


def validate_file(path: Path, *, suffix: str | None = None) -> None:
    """Check everything ``load_weights`` checks, without building the model (the cache calls
    this before a downloaded file enters it). ``suffix``: the file's kind when its name does
    not say it (a download in progress)."""
    load_tensors(Path(path), suffix=suffix)


def load_tensors(path: Path, *, suffix: str | None = None,
                 ) -> tuple[LiifSirenConfig, dict[str, torch.Tensor], dict]:
    """The validated (config, tensors on the CPU, metadata) of a weights file."""
    path = Path(path)
    if (suffix or path.suffix) in {".pt", ".pth"}:
        return _load_torch_file(path)
    header = read_header(path)
    config = _config(header["config"], path, header["architecture"])
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {name: (tuple(f.get_slice(name).get_shape()),
                            f.get_slice(name).get_dtype() in _SAFETENSORS_FLOATS)
                     for name in f.keys()}
            check_tensors(found, config, path)
            tensors = {name: f.get_tensor(name) for name in found}
    except WeightsError:
        raise
    except Exception as error:
        raise WeightsError(f"{path}: cannot read the tensors ({_first_line(error)})",
                           path) from None
    check_finite(tensors, path)
    return config, tensors, header["metadata"]


def load_weights(path: Path, *, device: str | torch.device = "cpu") -> tuple[LiifSiren, dict]:
    """Build the model a weights file describes -> (model in eval mode, metadata)."""
    config, tensors, metadata = load_tensors(Path(path))
    model = build_model(config)
    _load_state(model, tensors, path)
    return model.to(device).eval(), metadata


def _load_torch_file(path: Path) -> tuple[LiifSirenConfig, dict[str, torch.Tensor], dict]:
    _check_regular(path)
    try:
        with warnings.catch_warnings():  # its notes on a refused pickle: the error says it
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"{path}: cannot be loaded safely ({_first_line(error)})",
                           path) from None
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        raise WeightsError(f"{path}: expected a dict with 'state_dict' and 'config'", path)
    config_dict, metadata = blob.get("config", {}), blob.get("metadata", {})
    check_config(config_dict, path)
    check_metadata(metadata, path)
    config = _config(config_dict, path)
    state = blob["state_dict"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError(f"{path}: the state_dict must map names to tensors", path)
    check_tensors({k: (tuple(v.shape), v.dtype in FLOAT_DTYPES) for k, v in state.items()},
                  config, path)
    check_finite(state, path)
    return config, state, metadata


def build_model(config) -> LiifSiren:
    """The model of the architecture whose config class ``config`` is."""
    for architecture in ARCHITECTURES.values():
        if isinstance(config, architecture.config_class):
            return architecture.build(config)
    raise TypeError(f"{type(config).__name__} belongs to no registered architecture")


def _config(values: dict, path: Path, architecture: Architecture = LIIF_SIREN):
    try:
        return architecture.config_class.from_dict(values)
    except (TypeError, ValueError, AttributeError) as error:
        raise WeightsError(f"{path}: invalid model config ({_first_line(error)})",
                           path) from None


def _load_state(model: LiifSiren, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise WeightsError(f"{path}: tensors do not match the model config "
                           f"({_first_line(error)})", path) from None


def _check_regular(path: Path) -> None:
    try:
        check_regular_file(path)
    except SirenupError as error:
        raise WeightsError(str(error), path) from None


def _looks_like_html(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            start = f.read(512).lstrip().lower()
    except OSError:
        return False
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<body"))


def _first_line(error: BaseException) -> str:
    return first_line(error)[:300]
