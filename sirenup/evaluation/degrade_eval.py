"""Degraded inputs for evaluation: the protocol's LR image, then JPEG, noise or blur.

Used by ``evaluate`` (``--degrade`` of ``benchmarks/eval_quality.py``) to score upscalers on
inputs like the photos people have. Every degradation is deterministic, so two runs and two
upscalers see the same pixels. Names: ``jpegQ`` (Pillow's JPEG encoder at quality Q, 1-100,
default 4:2:0 chroma subsampling, in memory), ``noiseS`` (Gaussian noise of standard deviation S
in 8-bit levels, the same on R, G and B independently, seed NOISE_SEED, rounded and clipped to
8 bits), ``blurS`` (Gaussian blur of standard deviation S LR pixels, reflected borders,
rounded to 8 bits). The training-time pipeline (random, second-order) is a separate thing.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter  # scipy comes with scikit-image

NOISE_SEED = 0
_NAME = re.compile(r"^(jpeg|noise|blur)(\d+(?:\.\d+)?)$")
EXAMPLES = "jpeg75, noise5, noise10, blur1"


@dataclass(frozen=True)
class Degradation:
    kind: str  # "jpeg", "noise" or "blur"
    amount: float  # JPEG quality, noise sigma (8-bit levels) or blur sigma (pixels)

    @property
    def name(self) -> str:
        return f"{self.kind}{self.amount:g}"

    def __call__(self, image: Image.Image) -> Image.Image:
        image = image.convert("RGB")
        if self.kind == "jpeg":
            return jpeg(image, int(self.amount))
        if self.kind == "noise":
            return gaussian_noise(image, self.amount)
        return gaussian_blur(image, self.amount)


def parse_degradation(text: str | None) -> Degradation | None:
    """'jpeg75' / 'noise10' / 'blur1' -> Degradation; None, '' or 'none' -> None."""
    if text is None or text.strip().lower() in ("", "none", "clean"):
        return None
    match = _NAME.match(text.strip().lower())
    if not match:
        raise ValueError(f"degradation {text!r}: expected none or one of jpegQ, noiseS, blurS "
                         f"(e.g. {EXAMPLES})")
    kind, amount = match.group(1), float(match.group(2))
    if kind == "jpeg" and not (amount == int(amount) and 1 <= amount <= 100):
        raise ValueError(f"degradation {text!r}: JPEG quality must be an integer 1-100")
    if kind != "jpeg" and not amount > 0:
        raise ValueError(f"degradation {text!r}: sigma must be above 0")
    return Degradation(kind, amount)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def gaussian_noise(image: Image.Image, sigma: float, *, seed: int = NOISE_SEED) -> Image.Image:
    array = np.asarray(image.convert("RGB"), dtype=np.float64)
    noise = np.random.default_rng(seed).normal(0.0, sigma, array.shape)
    return Image.fromarray(np.clip(np.round(array + noise), 0, 255).astype(np.uint8), "RGB")


def gaussian_blur(image: Image.Image, sigma: float) -> Image.Image:
    array = np.asarray(image.convert("RGB"), dtype=np.float64)
    blurred = gaussian_filter(array, sigma=(sigma, sigma, 0), mode="reflect", truncate=4.0)
    return Image.fromarray(np.clip(np.round(blurred), 0, 255).astype(np.uint8), "RGB")
