"""Output size from --scale / --width / --height."""

from __future__ import annotations

import math

from sirenup.defaults import DEFAULT_SCALE
from sirenup.errors import UsageError, mention

ASPECT_TOLERANCE = 0.01  # a change of the aspect ratio beyond this is worth a warning
MAX_SIDE = 1 << 31  # pixels per output side: beyond any real image, and keeps the maths finite


def target_size(width: int, height: int, *, scale: float | None = None,
                out_width: int | None = None, out_height: int | None = None) -> tuple[int, int]:
    """(W, H) of the output for an input of ``width`` x ``height``.

    - ``scale``: (round(w*S), round(h*S)) for any finite real S >= 1;
    - ``out_width`` or ``out_height`` alone: that side, the other keeps the aspect ratio;
    - both: exactly that size (``aspect_warning`` says when that stretches the picture);
    - nothing: ``DEFAULT_SCALE``.
    An output smaller than the input on either side is an error: this is an upscaler.
    """
    if scale is not None and (out_width is not None or out_height is not None):
        raise UsageError(f"give either {mention('scale')} or {mention('width')}/"
                         f"{mention('height')}, not both")
    for name, side in (("width", out_width), ("height", out_height)):
        if side is not None and not 1 <= side < MAX_SIDE:
            raise UsageError(f"{side}: must be from 1 to less than {MAX_SIDE} (pixels on a side)",
                             option=name)
    if scale is not None:
        if not math.isfinite(scale):
            raise UsageError(f"{scale}: must be a finite number (at least 1)", option="scale")
        if not scale >= 1.0:
            raise UsageError(f"{scale:g}: must be at least 1", option="scale")
        if max(width, height) * scale >= MAX_SIDE:
            raise UsageError(f"{scale:g}: the output would be more than {MAX_SIDE} pixels wide or "
                             "high", option="scale")
        size = (round(width * scale), round(height * scale))
    elif out_width is not None and out_height is not None:
        size = (out_width, out_height)
    elif out_width is not None:
        size = (out_width, max(1, round(height * out_width / width)))
    elif out_height is not None:
        size = (max(1, round(width * out_height / height)), out_height)
    else:
        size = (round(width * DEFAULT_SCALE), round(height * DEFAULT_SCALE))
    if max(size) >= MAX_SIDE:
        raise UsageError(f"output {size[0]}x{size[1]}: more than {MAX_SIDE} pixels on a side")
    if size[0] < width or size[1] < height:
        raise UsageError(f"output {size[0]}x{size[1]} is smaller than the input "
                         f"{width}x{height}: sirenup only upscales")
    return size


def aspect_warning(in_size: tuple[int, int], size: tuple[int, int], out_width: int | None,
                   out_height: int | None) -> str | None:
    """One line when --width and --height together change the aspect ratio by more than
    ASPECT_TOLERANCE (the picture is stretched), else None."""
    if out_width is None or out_height is None:
        return None
    before, after = in_size[0] / in_size[1], size[0] / size[1]
    change = abs(after / before - 1.0)
    if change <= ASPECT_TOLERANCE:
        return None
    return (f"--width {size[0]} --height {size[1]} changes the aspect ratio of "
            f"{in_size[0]}x{in_size[1]} by {change:.0%}: the picture is stretched "
            "(give only one of them to keep the aspect ratio)")


def scale_label(width: int, height: int, size: tuple[int, int]) -> str:
    """'4' for x4, '3.7' for x3.7, '1920x1080' when the two axes differ."""
    sx, sy = size[0] / width, size[1] / height
    if abs(sx - sy) < 0.01 * max(sx, sy):
        return f"{round((sx + sy) / 2, 2):g}"
    return f"{size[0]}x{size[1]}"
