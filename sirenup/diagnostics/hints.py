"""Advice the CLI gives once per run when the input calls for another model.

A JPEG saved at a low quality carries 8x8 blocks and ringing that a model trained on clean
downscales (sirenup-base) would sharpen into the output; one trained on degraded photos
(sirenup-real) removes them. Which models are which, the registry says (each entry's
``inputs``). The quality is estimated from the file's own quantisation tables (which Pillow
exposes), no pixel decoding needed. The hint never switches the model: the user decides.
"""

from __future__ import annotations

import os
from pathlib import Path

from sirenup.hub.registry import REGISTRY
from sirenup.imaging.imageio import open_image

# IJG's standard luminance quantisation table (Annex K of the JPEG standard); libjpeg scales
# it by S = 5000/q (q < 50) or 200 - 2q (q >= 50), in percent.
STANDARD_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
LOW_QUALITY = 90  # below this, compression artefacts are visible once upscaled


def models_for(inputs: str) -> list[str]:
    """Names of the registry's models trained on ``inputs``: "clean" or "degraded"."""
    return [entry.name for entry in REGISTRY.values() if entry.inputs == inputs]


def jpeg_quality(path: str | os.PathLike) -> int | None:
    """Estimated IJG quality (1-100) of a JPEG file, or None for other files.

    The ratio of the file's luminance table to the standard one gives libjpeg's scale factor;
    sums make it independent of the order (zigzag or natural) the table is listed in.
    """
    try:
        with open_image(path) as image:
            if image.format != "JPEG":
                return None
            tables = getattr(image, "quantization", None) or {}
    except (OSError, ValueError):
        return None
    luminance = tables.get(0)
    if not luminance or len(luminance) != 64:
        return None
    scale = 100.0 * sum(luminance) / sum(STANDARD_LUMINANCE)  # percent
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return max(1, min(100, round(quality)))


def real_model_hint(path: str | os.PathLike, model_name: str) -> str | None:
    """One line suggesting the registry's model for degraded photos (sirenup-real) for a
    low-quality JPEG upscaled by a model trained on clean downscales."""
    degraded = models_for("degraded")
    if not degraded or model_name not in models_for("clean"):
        return None
    quality = jpeg_quality(path)
    if quality is None or quality >= LOW_QUALITY:
        return None
    return (f"{Path(path).name} is a JPEG of quality ~{quality}: --model {degraded[0]} "
            "removes compression artefacts that this model would sharpen")


class HintOnce:
    """Gives a run's hint the first time it applies, then stays silent."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.given = False

    def __call__(self, path: str | os.PathLike) -> str | None:
        if self.given:
            return None
        hint = real_model_hint(path, self.model_name)
        self.given = hint is not None
        return hint
