"""The bundled model must beat Pillow's bicubic clearly at x4 (the protocol's numbers).

On Set5 when the shared benchmark folder sits beside the checkout, and always on centre crops
of photos that scikit-image bundles (so a fresh clone runs it too; no network, a few seconds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sirenup.evaluation.evaluate import (
    IMAGE_SUFFIXES,
    model_upscaler,
    pillow_upscaler,
    protocol_case,
    score_cases,
)
from sirenup.hub.registry import resolve_model
from sirenup.models.weights import load_weights

SET5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "val" / "Set5"
BUNDLED_PHOTOS = ("astronaut", "coffee", "chelsea")  # in scikit-image's own package data
CROP = 192  # centre crops: LR 48x48 at x4, about a second on a CPU
# Mean Y-PSNR gain over bicubic at x4 that the model must reach. Measured for sirenup-base:
# Set5 +2.55 dB; the scikit-image crops +1.89 dB (+2.19, +2.72, +0.76).
MARGIN_DB = {"Set5": 1.5, "scikit-image": 1.0}
SOURCES = ["scikit-image", *(["Set5"] if SET5.is_dir() else [])]


def scikit_image_photos(folder: Path) -> list[Path]:
    """Centre crops of scikit-image's bundled photos, saved as PNG under ``folder``."""
    import skimage.data

    paths = []
    for name in BUNDLED_PHOTOS:
        array = getattr(skimage.data, name)()
        top, left = (array.shape[0] - CROP) // 2, (array.shape[1] - CROP) // 2
        path = folder / f"{name}.png"
        Image.fromarray(array[top:top + CROP, left:left + CROP]).convert("RGB").save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("source", SOURCES)
def test_bundled_model_beats_bicubic_at_x4(source, tmp_path):
    if source == "Set5":
        paths = sorted(p for p in SET5.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        assert len(paths) == 5
    else:
        paths = scikit_image_photos(tmp_path)
    _, weights = resolve_model("sirenup-base")
    model, _ = load_weights(weights)
    cases = [protocol_case(p, 4.0) for p in paths]
    ours = [row["psnr_y"] for row in score_cases(model_upscaler(model), cases, ("psnr_y",))]
    bicubic = [row["psnr_y"] for row in score_cases(pillow_upscaler(Image.BICUBIC), cases,
                                                     ("psnr_y",))]
    gain = float(np.mean(ours)) - float(np.mean(bicubic))
    assert gain >= MARGIN_DB[source], (
        f"{source} x4 Y-PSNR: model {np.mean(ours):.2f} dB, bicubic {np.mean(bicubic):.2f} dB "
        f"(gain {gain:+.2f} dB < {MARGIN_DB[source]} dB)")
    losses = [p.stem for p, a, b in zip(paths, ours, bicubic, strict=True) if not a > b]
    assert not losses, f"{source} x4: bicubic is as good on {losses}"
