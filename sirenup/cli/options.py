"""Options shared by the commands that compute, declared once (Typer ``Annotated`` aliases).

Imports only typer, so CLI start-up stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sirenup.defaults import (
    DEFAULT_MAX_INPUT_PIXELS,
    DEFAULT_MODEL,
    DEFAULT_PNG_COMPRESSION,
    DEFAULT_QUALITY,
    DEFAULT_SCALE,
)
from sirenup.imaging.formats import NAMES, listed, lossy_labels, without_alpha

ScaleOption = Annotated[float | None, typer.Option(
    "--scale", "-s", show_default=False,
    help=f"Scale factor, any real >= 1 (default: {DEFAULT_SCALE:g}).")]
WidthOption = Annotated[int | None, typer.Option(
    "--width", show_default=False,
    help="Output width; alone, the height keeps the aspect ratio.")]
HeightOption = Annotated[int | None, typer.Option(
    "--height", show_default=False,
    help="Output height; alone, the width keeps the aspect ratio.")]
ModelOption = Annotated[str | None, typer.Option(
    "--model", "-m", show_default=False,
    help="Registry name, weights file or URL, optionally ending in #sha256=HEX "
         f"(default: {DEFAULT_MODEL}).")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOption = Annotated[str, typer.Option(
    "--precision", help="auto (fp16 on CUDA, else fp32), fp32, fp16 or bf16.")]
TileOption = Annotated[int, typer.Option(
    "--tile", help="Tile side in input pixels; 0 = whole image.")]
OverlapOption = Annotated[int, typer.Option(
    "--overlap", help="Overlap between tiles in input pixels.")]
QualityOption = Annotated[int | None, typer.Option(
    "--quality", show_default=False,
    help=f"{lossy_labels()} quality, 1-100 (default: {DEFAULT_QUALITY}).")]
PngCompressionOption = Annotated[int | None, typer.Option(
    "--png-compression", show_default=False,
    help="PNG zlib level 0-9: lower is faster, higher is smaller "
         f"(default: {DEFAULT_PNG_COMPRESSION}).")]
BackgroundOption = Annotated[str | None, typer.Option(
    "--background", show_default=False, metavar="COLOR",
    help="Flatten transparency onto this colour for formats without alpha "
         f"({', '.join(without_alpha())}).")]
# --format's help begins with the names it takes, from the format table.
FORMAT_NAMES = listed(NAMES)
MaxInputPixelsOption = Annotated[int | None, typer.Option(
    "--max-input-pixels", show_default=False,
    help="Refuse inputs with more pixels (default: Pillow's decompression-bomb limit, "
         f"about {DEFAULT_MAX_INPUT_PIXELS / 1e6:.1f} MP; 0 = no limit).")]
MaxOutputPixelsOption = Annotated[int, typer.Option(
    "--max-output-pixels", help="Refuse outputs with more pixels (0 = no limit).")]
DitherOption = Annotated[bool | None, typer.Option(
    "--dither/--no-dither", show_default=False,
    help="Dither the output by +-half a level, so smooth gradients do not step on the LR "
         "pixel grid (default: as the model's file says; sirenup-base and sirenup-real do). "
         "--no-dither: plain rounding; a PNG with smooth areas comes out up to a quarter "
         "smaller.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]


def chosen(**options):
    """The values of ``options`` (parameter name -> value) as the user gave them: None for
    one left at its default. The help shows the library's default (from defaults.py), and the
    library fills it in itself: so it can tell ``--tile 512`` from no --tile."""
    import click
    from click.core import ParameterSource

    context = click.get_current_context(silent=True)
    values = tuple(
        None if context is not None
        and context.get_parameter_source(name) is ParameterSource.DEFAULT else value
        for name, value in options.items())
    return values if len(values) > 1 else values[0]
