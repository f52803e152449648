"""Named models. The bundled ones ship inside the package (sirenup/assets/)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sirenup.errors import UsageError

DEFAULT_MODEL = "sirenup-base"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    filename: str
    description: str
    license: str = "MIT"
    scale_range: tuple[float, float] = (1.0, 4.0)
    bundled: bool = True


REGISTRY: dict[str, ModelEntry] = {
    "sirenup-base": ModelEntry(
        name="sirenup-base",
        filename="sirenup-base.safetensors",
        description="PSNR-oriented LIIF-SIREN model trained on 112 photos (docs/models.md).",
    ),
}


def bundled_path(entry: ModelEntry) -> Path:
    return Path(str(resources.files("sirenup.assets").joinpath(entry.filename)))


def resolve_model(spec: str | Path) -> tuple[str, Path]:
    """A registry name or a local weights path -> (display name, path of the weights file)."""
    spec_str = str(spec)
    if spec_str in REGISTRY:
        entry = REGISTRY[spec_str]
        path = bundled_path(entry)
        if not path.is_file():
            raise UsageError(f"model {spec_str}: its weights file {path} is missing "
                             "(reinstall sirenup)")
        return entry.name, path
    path = Path(spec_str).expanduser()
    if path.is_file():
        return path.stem, path
    if path.suffix or "/" in spec_str or "\\" in spec_str:
        raise UsageError(f"--model {spec_str}: no such file")
    names = ", ".join(sorted(REGISTRY))
    raise UsageError(f"--model {spec_str}: unknown model (known: {names}; or give a path to a "
                     ".safetensors file)")
