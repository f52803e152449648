"""Named models and what ``--model`` accepts.

``--model`` takes

- a registry name (``sirenup-base``): a file bundled inside the package, or one downloaded once
  from the entry's URL into the cache and checked against the entry's sha256 and size;
- a local weights file: ``.safetensors`` (``.pt``/``.pth`` are read only through
  ``torch.load(weights_only=True)``, see ``sirenup.models.weights``);
- an ``http(s)://`` or ``file://`` URL, optionally ending in ``#sha256=<hex>``: downloaded into
  the cache and verified (``sirenup.hub.cache``).

The entries live in ``sirenup/assets/registry.json``: file name, sha256, size, optional URL,
architecture and config, licence, what the model was trained on (clean or degraded inputs),
trained scale range and measured quality. After a bundled
weights file changes (retraining), refresh what the registry records about it with::

    python -m sirenup.hub.registry --update-bundled     # --check: exit 1 if stale

This module imports no torch: ``sirenup models`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

from sirenup.defaults import DEFAULT_MODEL  # noqa: F401 (re-exported)
from sirenup.errors import SirenupError, UsageError
from sirenup.files import atomic_write_bytes, sha256_file
from sirenup.hub import cache
from sirenup.untrusted import redact_url

REGISTRY_FILE = "registry.json"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    filename: str
    description: str = ""
    # what it was trained on: "clean" downscales or "degraded" photos (JPEG, noise, blur);
    # the upscale hint for low-quality JPEGs reads it (diagnostics/hints.py)
    inputs: str = ""
    sha256: str | None = None
    size: int | None = None
    url: str | None = None
    architecture: str = "liif-siren"
    config: dict = field(default_factory=dict, hash=False)
    license: str = "MIT"
    scale_range: tuple[float, float] = (1.0, 4.0)
    quality: dict | None = field(default=None, hash=False)
    bundled: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> ModelEntry:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}  # newer registries add keys
        values["scale_range"] = tuple(values.get("scale_range") or (1.0, 4.0))
        return cls(**values)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["scale_range"] = list(self.scale_range)
        return data


def registry_path() -> Path:
    return Path(str(resources.files("sirenup.assets").joinpath(REGISTRY_FILE)))


def load_registry(path: Path | None = None) -> dict[str, ModelEntry]:
    data = json.loads((path or registry_path()).read_text(encoding="utf-8"))
    return {m["name"]: ModelEntry.from_dict(m) for m in data["models"]}


REGISTRY: dict[str, ModelEntry] = load_registry()


def bundled_path(entry: ModelEntry) -> Path:
    return Path(str(resources.files("sirenup.assets").joinpath(entry.filename)))


def is_url(spec: str) -> bool:
    return str(spec).lower().startswith(("http://", "https://", "file://"))


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    source: str  # "bundled", "cache" or "local"
    url: str | None = None
    sha256: str | None = None


def resolve(spec: str | os.PathLike) -> ResolvedModel:
    """A registry name, a local weights path or a URL -> the weights file to load.

    URLs and registry entries with a URL are fetched into the cache when missing (never under
    SIRENUP_OFFLINE=1) and verified.
    """
    spec_str = str(spec).strip()
    if is_url(spec_str):
        entry = cache.ensure(spec_str)
        return ResolvedModel(Path(entry.filename).stem, entry.path, "cache", entry.url,
                             entry.sha256)
    if spec_str in REGISTRY:
        model = REGISTRY[spec_str]
        if model.bundled:
            path = bundled_path(model)
            if not path.is_file():
                raise SirenupError(f"model {spec_str}: its weights file {path} is missing "
                                   "(reinstall sirenup)")
            return ResolvedModel(model.name, path, "bundled", None, model.sha256)
        if not model.url:
            raise SirenupError(f"model {spec_str}: the registry gives no URL to fetch it from")
        entry = cache.ensure(model.url, sha256=model.sha256, size=model.size, name=model.name)
        return ResolvedModel(model.name, entry.path, "cache", model.url, entry.sha256)
    try:
        path = Path(spec_str).expanduser()
    except RuntimeError:  # ~user of no such user: kept as written, as the shell does
        path = Path(spec_str)
    if path.is_file():
        return ResolvedModel(path.stem, path, "local")
    if path.is_dir():
        raise UsageError(f"{spec_str}: is a folder, not a weights file", option="model")
    if path.exists():
        raise UsageError(f"{spec_str}: not a regular file (a FIFO or a device)", option="model")
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", spec_str):  # ftp://, s3://, hf://: not a path
        raise UsageError(f"{spec_str}: only http://, https:// and file:// URLs are supported",
                         option="model")
    if path.suffix or "/" in spec_str or "\\" in spec_str:
        raise UsageError(f"{spec_str}: no such file", option="model")
    names = ", ".join(sorted(REGISTRY))
    raise UsageError(f"{spec_str}: unknown model (known: {names}; or give a path to a "
                     ".safetensors file, or an http(s):// or file:// URL)", option="model")


def resolve_model(spec: str | os.PathLike) -> tuple[str, Path]:
    """A registry name, a local weights path or a URL -> (display name, weights file)."""
    resolved = resolve(spec)
    return resolved.name, resolved.path


def cache_hint(path: str | os.PathLike | None) -> str:
    """For a weights file inside the model cache: how to remove its entry (a broken download
    that passed its checks, or a file damaged since); else ''."""
    if path is None:
        return ""
    try:
        relative = Path(path).resolve().relative_to(cache.models_dir().resolve())
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symbolic link loop
        return ""
    if len(relative.parts) < 2:
        return ""
    eid = relative.parts[0]
    return (f"; it is a broken cache entry: remove it with 'sirenup models remove {eid}' "
            "and download it again")


def cached_entry(spec: str):
    """The cache entry for a URL, a cache id, or a registry name whose model has a URL."""
    spec = spec.strip()
    model = REGISTRY.get(spec)
    if model is not None and model.url:
        return cache.find(model.url)
    return cache.find(spec)


def bundled_problem(model: ModelEntry) -> str | None:
    """None if a bundled file exists and has the recorded size and sha256, else why not."""
    path = bundled_path(model)
    if not path.is_file():
        return "file missing (reinstall sirenup)"
    if model.size is not None and path.stat().st_size != model.size:
        return f"size {path.stat().st_size} bytes, registry says {model.size}"
    if model.sha256 and sha256_file(path) != model.sha256:
        return "sha256 differs from the registry's"
    return None


def catalogue(verify: bool = True) -> list[dict]:
    """Every known model: registry entries (bundled, cached or not downloaded), then cached
    URLs outside the registry. ``verified`` is True/False, or None when not checked, not
    present, or intact but unpinned (``pinned`` False: downloaded without a sha256 to check it
    against, so never reported as verified)."""
    rows, seen = [], set()
    for model in REGISTRY.values():
        row = {"name": model.name, "source": "remote", "size": model.size,
               "sha256": model.sha256, "verified": None, "problem": None, "path": None,
               "url": model.url, "id": None, "license": model.license,
               "scale_range": list(model.scale_range), "quality": model.quality,
               "description": model.description or "", "pinned": bool(model.sha256)}
        if model.bundled:
            row.update(source="bundled", path=str(bundled_path(model)))
            if verify:
                row["problem"] = bundled_problem(model)
                row["verified"] = cache.verified_state(row["problem"], row["pinned"])
        elif model.url and (entry := cache.find(model.url)) is not None:
            seen.add(entry.id)
            row.update(source="cached", path=str(entry.path), id=entry.id,
                       pinned=row["pinned"] or entry.pinned)
            if verify:
                row["problem"] = entry.check(model.sha256, model.size)
                row["verified"] = cache.verified_state(row["problem"], row["pinned"])
        rows.append(row)
    for entry in cache.entries():
        if entry.id in seen:
            continue
        problem = entry.check() if verify else None
        rows.append({"name": entry.name, "source": "cached", "size": entry.meta.get("size"),
                     "sha256": entry.sha256,
                     "verified": cache.verified_state(problem, entry.pinned) if verify else None,
                     "pinned": entry.pinned, "problem": problem, "path": str(entry.path),
                     "url": redact_url(entry.url) if entry.url else None, "id": entry.id,
                     "license": None, "scale_range": None,
                     "quality": None, "description": ""})
    return rows


# -- bundled files: what the registry records must match the file -------------------------------

def safetensors_metadata(path: Path) -> dict:
    """The string->string ``__metadata__`` of a safetensors file, read without torch."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file")
        header = json.loads(f.read(length))
    return header.get("__metadata__") or {}


def file_facts(path: Path) -> dict:
    """sha256, size, architecture and config of a weights file; scale range and quality when
    its metadata records them."""
    facts = {"sha256": sha256_file(path), "size": path.stat().st_size}
    meta = safetensors_metadata(path)
    facts["architecture"] = meta.get("architecture")
    facts["config"] = json.loads(meta.get("config") or "{}")
    extra = json.loads(meta.get("metadata") or "{}")
    if extra.get("scale_range"):
        facts["scale_range"] = [float(s) for s in extra["scale_range"]]
    if extra.get("quality"):
        facts["quality"] = extra["quality"]
    return facts


RECORDED = ("sha256", "size", "architecture", "config", "scale_range", "quality")


def stale_fields(entry: ModelEntry) -> dict[str, tuple]:
    """{field: (recorded, actual)} where the registry disagrees with the bundled file."""
    facts = file_facts(bundled_path(entry))
    recorded = entry.to_dict()
    return {k: (recorded[k], v) for k, v in facts.items() if k in RECORDED and recorded[k] != v}


def update_bundled(path: Path | None = None) -> list[str]:
    """Rewrite the registry's sha256/size/architecture/config (and scale range and quality,
    when the weights' metadata has them) of every bundled model from its file -> changed
    names."""
    path = path or registry_path()
    data = json.loads(path.read_text(encoding="utf-8"))
    changed = []
    for model in data["models"]:
        if not model.get("bundled"):
            continue
        facts = file_facts(bundled_path(ModelEntry.from_dict(model)))
        if any(model.get(k) != v for k, v in facts.items()):
            model.update(facts)
            changed.append(model["name"])
    if changed:
        atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sirenup.hub.registry",
                                     description="Check or refresh the bundled registry entries.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--update-bundled", action="store_true",
                       help="rewrite sha256/size/config of bundled models from their files")
    group.add_argument("--check", action="store_true",
                       help="exit 1 if a bundled model's file differs from its entry")
    args = parser.parse_args(argv)
    if args.update_bundled:
        changed = update_bundled()
        print(f"updated: {', '.join(changed)}" if changed else "registry already up to date")
        return 0
    status = 0
    for entry in REGISTRY.values():
        if entry.bundled:
            for key, (recorded, actual) in stale_fields(entry).items():
                print(f"{entry.name}: {key} recorded {recorded!r}, file has {actual!r}")
                status = 1
    if status:
        print("run: python -m sirenup.hub.registry --update-bundled", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
