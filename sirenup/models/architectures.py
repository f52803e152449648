"""The architecture registry: what a weights file's ``architecture`` field can name.

One descriptor per model family (as spandrel's registry has): its name in weights headers, the
model class, its config dataclass, and what a tile of it costs (``TileCost``, from the config:
``inference.devices`` sizes GPU tiles with it). The config class holds its own defaults and the
bounds a weights file may ask for (``BOUNDS``: a header must not ask for a model that takes
minutes and gigabytes to build before its tensors are even compared); the field types come from
the defaults. Adding an architecture is one module (model + config + tile cost) and one
``register`` call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

from torch import nn

from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig


@dataclass(frozen=True)
class TileCost:
    """What a model's config costs an LR tile, for ``inference.devices.auto_tile``."""

    receptive_radius: int  # LR pixels of context a tile is read with on each side
    bytes_per_lr_pixel: int  # the encoder's live maps and the decoder's input map
    bytes_per_query: int  # the decoder's activations for one output pixel


@dataclass(frozen=True)
class Architecture:
    name: str  # the weights header's "architecture"
    model_class: type[nn.Module]  # built as model_class(config=config)
    config_class: type  # a dataclass with from_dict, to_dict and BOUNDS
    tile_cost: Callable[..., TileCost]  # config -> TileCost

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


def liif_siren_tile_cost(config: LiifSirenConfig) -> TileCost:
    """LiifSiren's costs in fp32: about six encoder maps ``channels`` wide live at once, plus the
    pre-activation map ``hidden`` wide, per LR pixel; per query, about four activations
    ``hidden`` wide plus its RGB. Adaptive frequencies (K pairs) add their 4K-channel map per
    LR pixel and, per query, about 9K values (a gathered centre, phases, waves, the blend).
    The radius is ``LiifSiren.receptive_radius``: the encoder's convolutions (head, two per
    block, tail), the decoder's 3x3 patch convolution (the adaptive frequencies' convolution
    runs beside it) and the 2-pixel reach of bicubic sampling (tests/test_devices.py checks
    that the two agree)."""
    pairs = config.adaptive_freqs
    return TileCost(receptive_radius=1 + 2 * config.n_blocks + 1 + 1 + 2,
                    bytes_per_lr_pixel=4 * (6 * config.channels + config.hidden + 4 * pairs),
                    bytes_per_query=4 * (4 * config.hidden + 3 + 9 * pairs))


LIIF_SIREN = register(Architecture("liif-siren", LiifSiren, LiifSirenConfig,
                                   liif_siren_tile_cost))
