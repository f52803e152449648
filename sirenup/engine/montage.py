"""Side-by-side montages for ``sirenup compare``: labelled panels, and under each one the same
region enlarged (nearest neighbour, so the pixels the method made stay visible)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 8
MIN_PANEL = 192  # narrower images are enlarged (nearest) to this width at least
MAX_PANEL = 480  # wider images are shown reduced; the enlarged crop shows their detail
MAX_CROP = 128  # the automatic crop's side, at most, in output pixels
CROP_COLOR = (230, 30, 30)


def most_detailed_region(image: Image.Image | np.ndarray,
                         side: int | None = None) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the square window with the most gradient energy (luma), side ``side``
    (default: a quarter of the short side, between 16 and MAX_CROP, at most the image)."""
    array = np.asarray(image, dtype=np.float32)
    luma = array @ np.array([0.299, 0.587, 0.114], np.float32) if array.ndim == 3 else array
    height, width = luma.shape
    if side is None:
        side = max(16, min(width, height) // 4)
        side = min(side, MAX_CROP)
    side = max(1, min(side, width, height))
    energy = np.zeros_like(luma)
    energy[:, 1:] += np.abs(np.diff(luma, axis=1))
    energy[1:, :] += np.abs(np.diff(luma, axis=0))
    total = np.zeros((height + 1, width + 1), dtype=np.float64)  # integral image
    total[1:, 1:] = energy.cumsum(0).cumsum(1)
    windows = (total[side:, side:] - total[:-side, side:] - total[side:, :-side]
               + total[:-side, :-side])  # (H - side + 1, W - side + 1)
    y, x = np.unravel_index(int(np.argmax(windows)), windows.shape)
    return int(x), int(y), side, side


def make_montage(panels: list[tuple[str, list[str], Image.Image]],
                 crop: tuple[int, int, int, int]) -> Image.Image:
    """panels: (title, lines of text, image) with images of one size; crop: (x, y, w, h) in
    those images' pixels. -> RGB montage: one column per panel, label on top, the whole image
    (crop outlined) in the middle, the crop enlarged below."""
    width, height = panels[0][2].size
    if width < MIN_PANEL:
        shown = (width * math.ceil(MIN_PANEL / width), height * math.ceil(MIN_PANEL / width))
    elif width > MAX_PANEL:
        shown = (MAX_PANEL, max(1, round(height * MAX_PANEL / width)))
    else:
        shown = (width, height)
    x, y, cw, ch = crop
    zoom = max(1, shown[0] // cw)
    zoomed = (cw * zoom, ch * zoom)
    column = max(shown[0], zoomed[0])
    font = _font(13)
    line_h = _line_height(font)
    label_h = line_h * max(1 + len(lines) for _, lines, _ in panels) + 4
    total_w = PAD + len(panels) * (column + PAD)
    total_h = PAD + label_h + shown[1] + PAD + zoomed[1] + PAD
    canvas = Image.new("RGB", (total_w, total_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    sx, sy = shown[0] / width, shown[1] / height
    for i, (title, lines, image) in enumerate(panels):
        left = PAD + i * (column + PAD)
        draw.text((left, PAD), title, fill=(0, 0, 0), font=font)
        for j, line in enumerate(lines):
            draw.text((left, PAD + line_h * (j + 1)), line, fill=(70, 70, 70), font=font)
        image = image.convert("RGB")
        if shown != (width, height):
            resample = Image.Resampling.NEAREST if shown[0] > width else \
                Image.Resampling.LANCZOS
            full = image.resize(shown, resample)
        else:
            full = image
        top = PAD + label_h
        canvas.paste(full, (left, top))
        box = (left + math.floor(x * sx), top + math.floor(y * sy),
               left + math.ceil((x + cw) * sx) - 1, top + math.ceil((y + ch) * sy) - 1)
        draw.rectangle(box, outline=CROP_COLOR, width=2 if shown[0] >= 256 else 1)
        detail = image.crop((x, y, x + cw, y + ch)).resize(zoomed, Image.Resampling.NEAREST)
        canvas.paste(detail, (left, top + shown[1] + PAD))
    return canvas


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled font (needs FreeType)
    except Exception:
        return ImageFont.load_default()


def _line_height(font) -> int:
    try:
        left, top, right, bottom = font.getbbox("Ag")
        return int(bottom - min(top, 0)) + 3
    except Exception:
        return 14
