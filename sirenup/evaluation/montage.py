"""Side-by-side montages for ``sirenup compare``: labelled panels, and under each one the same
region enlarged (nearest neighbour, so the pixels the method made stay visible)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 8
MIN_PANEL = 192  # narrower images are enlarged (nearest) to this width at least
MAX_PANEL = 480  # wider images are shown reduced; the enlarged crop shows their detail
MAX_PANEL_HEIGHT = 960  # taller images too (and the enlarged crop never exceeds it)
MAX_MONTAGE_PIXELS = 16_000_000  # the whole montage, at most (many panels: all shrink)
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


@dataclass(frozen=True)
class Layout:
    shown: tuple[int, int]  # the whole image's size in a panel
    zoomed: tuple[int, int]  # the enlarged crop's size
    column: int  # a panel's width
    size: tuple[int, int]  # the montage's size
    capped: bool  # the caps (panel height, montage pixels) made the images smaller


def layout(size: tuple[int, int], crop: tuple[int, int, int, int], panels: int,
           label_h: int, *, max_pixels: int = MAX_MONTAGE_PIXELS) -> Layout:
    """Where everything goes: narrow images enlarged (integer, nearest) to MIN_PANEL wide,
    wide ones reduced to MAX_PANEL, tall ones to MAX_PANEL_HEIGHT; the crop enlarged to about
    the panel's width. If the whole montage would still exceed ``max_pixels`` (many panels),
    every image part shrinks until it fits: a 1x2000 image never builds a gigapixel canvas."""
    shrink, capped = 1.0, False
    for _ in range(12):
        result = _layout(size, crop, panels, label_h, shrink)
        capped = capped or result.capped
        if result.size[0] * result.size[1] <= max_pixels:
            return Layout(result.shown, result.zoomed, result.column, result.size, capped)
        shrink *= 0.95 * math.sqrt(max_pixels / (result.size[0] * result.size[1]))
        capped = True
    raise ValueError(f"{panels} panels do not fit in a montage of {max_pixels} pixels")


def _layout(size, crop, panels, label_h, shrink) -> Layout:
    width, height = size
    min_w, max_w = MIN_PANEL * shrink, max(16.0, MAX_PANEL * shrink)
    max_h = max(16.0, MAX_PANEL_HEIGHT * shrink)
    if width < min_w:
        factor = float(math.ceil(min_w / width))
    elif width > max_w:
        factor = max_w / width
    else:
        factor = 1.0
    capped = height * factor > max_h or shrink < 1
    factor = min(factor, max_h / height)
    shown = (max(1, round(width * factor)), max(1, round(height * factor)))
    _, _, cw, ch = crop
    zoom = max(shown[0], min_w) / cw
    zoom = math.floor(zoom) if zoom >= 1 else zoom  # whole pixels when enlarging
    zoom = min(zoom, max_h / ch)
    zoomed = (max(1, round(cw * zoom)), max(1, round(ch * zoom)))
    column = max(shown[0], zoomed[0], round(min_w))
    total = (PAD + panels * (column + PAD), PAD + label_h + shown[1] + PAD + zoomed[1] + PAD)
    return Layout(shown, zoomed, column, total, capped)


def make_montage(panels: list[tuple[str, list[str], Image.Image]],
                 crop: tuple[int, int, int, int], *,
                 max_pixels: int = MAX_MONTAGE_PIXELS) -> tuple[Image.Image, str | None]:
    """panels: (title, lines of text, image) with images of one size; crop: (x, y, w, h) in
    those images' pixels. -> (RGB montage, a note if the caps shrank it, else None): one
    column per panel, label on top, the whole image (crop outlined) in the middle, the crop
    enlarged below. Titles and lines are drawn as plain text (no markup)."""
    width, height = panels[0][2].size
    font = _font(13)
    line_h = _line_height(font)
    label_h = line_h * max(1 + len(lines) for _, lines, _ in panels) + 4
    plan = layout((width, height), crop, len(panels), label_h, max_pixels=max_pixels)
    shown, zoomed, column = plan.shown, plan.zoomed, plan.column
    x, y, cw, ch = crop
    canvas = Image.new("RGB", plan.size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    sx, sy = shown[0] / width, shown[1] / height
    for i, (title, lines, image) in enumerate(panels):
        left = PAD + i * (column + PAD)
        draw.text((left, PAD), _fit(title, font, column), fill=(0, 0, 0), font=font)
        for j, line in enumerate(lines):
            draw.text((left, PAD + line_h * (j + 1)), _fit(line, font, column),
                      fill=(70, 70, 70), font=font)
        image = image.convert("RGB")
        top = PAD + label_h
        canvas.paste(_resized(image, shown), (left, top))
        box = (left + math.floor(x * sx), top + math.floor(y * sy),
               left + max(math.floor(x * sx), math.ceil((x + cw) * sx) - 1),
               top + max(math.floor(y * sy), math.ceil((y + ch) * sy) - 1))
        draw.rectangle(box, outline=CROP_COLOR, width=2 if shown[0] >= 256 else 1)
        detail = _resized(image.crop((x, y, x + cw, y + ch)), zoomed)
        canvas.paste(detail, (left, top + shown[1] + PAD))
    note = None
    if plan.capped:
        note = (f"montage reduced to fit: images shown at {100 * shown[1] / height:.3g}% "
                f"({shown[0]}x{shown[1]}), the montage is {plan.size[0]}x{plan.size[1]}")
    return canvas, note


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Nearest when enlarging (the method's pixels stay visible), Lanczos when reducing."""
    if image.size == size:
        return image
    enlarging = size[0] >= image.size[0] and size[1] >= image.size[1]
    return image.resize(size, Image.Resampling.NEAREST if enlarging else
                        Image.Resampling.LANCZOS)


def _fit(text: str, font, width: int) -> str:
    """``text`` cut (with a leading "...": the end of a path says most) to ``width`` px."""
    try:
        if font.getlength(text) <= width:
            return text
        while text and font.getlength("..." + text) > width:
            text = text[1:]
        return "..." + text
    except Exception:  # a bitmap font without getlength: leave it
        return text


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
