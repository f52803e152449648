"""The bundled model must beat Pillow's bicubic clearly on Set5 x4 (the protocol's numbers).

Slow-ish (whole Set5 through the model on the CPU); needs the shared benchmark folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sirenup.engine.evaluate import (
    IMAGE_SUFFIXES,
    model_upscaler,
    pillow_upscaler,
    score_images,
)
from sirenup.hub.registry import resolve_model
from sirenup.models.weights import load_weights

SET5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "val" / "Set5"
MARGIN_DB = 1.5


@pytest.mark.skipif(not SET5.is_dir(), reason=f"benchmark folder {SET5} not present")
def test_bundled_model_beats_bicubic_on_set5_x4():
    paths = sorted(p for p in SET5.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    assert len(paths) == 5
    _, weights = resolve_model("sirenup-base")
    model, _ = load_weights(weights)
    ours = score_images(model_upscaler(model), paths, 4)
    bicubic = score_images(pillow_upscaler(Image.BICUBIC), paths, 4)
    gain = float(np.mean(ours)) - float(np.mean(bicubic))
    assert gain >= MARGIN_DB, (
        f"Set5 x4 Y-PSNR: model {np.mean(ours):.2f} dB, bicubic {np.mean(bicubic):.2f} dB "
        f"(gain {gain:+.2f} dB < {MARGIN_DB} dB)")
