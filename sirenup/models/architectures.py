"""The architecture registry: what a weights file's ``architecture`` field can name.

One descriptor per model family (as spandrel's registry has): its name in weights headers, the
model class and its config dataclass. The config class holds its own defaults and the bounds
a weights file may ask for (``BOUNDS``: a header must not ask for a model that takes minutes
and gigabytes to build before its tensors are even compared); the field types come from the
defaults. Adding an architecture is one module (model + config) and one ``register`` call.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields

from torch import nn

from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig


@dataclass(frozen=True)
class Architecture:
    name: str  # the weights header's "architecture"
    model_class: type[nn.Module]  # built as model_class(config=config)
    config_class: type  # a dataclass with from_dict, to_dict and BOUNDS

    def build(self, config) -> nn.Module:
        return self.model_class(config=config)

    def field_types(self) -> dict[str, type]:
        """Config field -> int or float, from the dataclass's defaults."""
        return {f.name: type(f.default) for f in fields(self.config_class)}

    def config_problem(self, values: dict) -> str | None:
        """Why ``values`` (a header's config) is not acceptable, or None: a known field of the
        wrong type or outside ``config_class.BOUNDS``."""
        types = self.field_types()
        for key, (low, high) in self.config_class.BOUNDS.items():
            if key not in values:
                continue
            value, kind = values[key], types[key]
            ok_type = (isinstance(value, int) if kind is int else isinstance(value, int | float)) \
                and not isinstance(value, bool)
            if not ok_type or not math.isfinite(value) or not low <= value <= high:
                return (f"{key} = {json.dumps(value)[:40]} (must be "
                        f"{'an integer' if kind is int else 'a number'} from {low:g} to {high:g})")
        return None


ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def architecture_named(name: object) -> Architecture | None:
    return ARCHITECTURES.get(name) if isinstance(name, str) else None


def architecture_of(model: nn.Module) -> Architecture:
    for architecture in ARCHITECTURES.values():
        if type(model) is architecture.model_class:
            return architecture
    raise TypeError(f"{type(model).__name__} is not a registered architecture")


LIIF_SIREN = register(Architecture("liif-siren", LiifSiren, LiifSirenConfig))
