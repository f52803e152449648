"""``sirenup upscale``: upscale one image to a scale factor or an exact size."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirenup.cli.console import console, handle_errors, print_json, state, warn
from sirenup.defaults import DEFAULT_OVERLAP, DEFAULT_TILE


@handle_errors
def upscale(
    input: Annotated[Path, typer.Argument(help="Image to upscale.", show_default=False)],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", show_default=False,
        help="Output file (default: <stem>_x<S>.png beside the input).")] = None,
    scale: Annotated[float | None, typer.Option(
        "--scale", "-s", show_default=False,
        help="Scale factor, any real >= 1 (default: 4).")] = None,
    width: Annotated[int | None, typer.Option(
        "--width", show_default=False,
        help="Output width; alone, the height keeps the aspect ratio.")] = None,
    height: Annotated[int | None, typer.Option(
        "--height", show_default=False,
        help="Output height; alone, the width keeps the aspect ratio.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", show_default=False,
        help="Model name or weights file (default: sirenup-base).")] = None,
    device: Annotated[str, typer.Option(
        "--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[str, typer.Option(
        "--precision", help="auto (fp16 on CUDA, else fp32), fp32, fp16 or bf16.")] = "auto",
    tile: Annotated[int, typer.Option(
        "--tile", help="Tile side in input pixels; 0 = whole image.")] = DEFAULT_TILE,
    overlap: Annotated[int, typer.Option(
        "--overlap", help="Overlap between tiles in input pixels.")] = DEFAULT_OVERLAP,
    format: Annotated[str | None, typer.Option(
        "--format", "-f", show_default=False,
        help="png, jpg, webp, tif or bmp (default: from the output extension).")] = None,
    quality: Annotated[int | None, typer.Option(
        "--quality", show_default=False, help="JPEG/WebP quality, 1-100 (default: 95).")] = None,
    background: Annotated[str | None, typer.Option(
        "--background", show_default=False, metavar="COLOR",
        help="Flatten transparency onto this colour for formats without alpha (jpg, bmp).")
    ] = None,
    max_input_pixels: Annotated[int | None, typer.Option(
        "--max-input-pixels", show_default=False,
        help="Refuse inputs with more pixels (default: Pillow's decompression-bomb limit, "
             "about 89.5 MP; 0 = no limit).")] = None,
    max_output_pixels: Annotated[int, typer.Option(
        "--max-output-pixels", help="Refuse outputs with more pixels (0 = no limit).")
    ] = 400_000_000,
    json: Annotated[bool, typer.Option(
        "--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Upscale an image: --scale S, or --width and/or --height (default x4)."""
    from rich.markup import escape

    from sirenup.engine.upscaler import load_upscaler, upscale_file

    upscaler = load_upscaler(model, device=device, precision=precision, tile=tile,
                             overlap=overlap)
    report = upscale_file(upscaler, input, output, scale=scale, width=width, height=height,
                          format=format, quality=quality, background=background,
                          max_input_pixels=max_input_pixels,
                          max_output_pixels=max_output_pixels,
                          on_warning=lambda message: warn(escape(message)))
    if not state["quiet"]:
        (w, h), (ow, oh) = report["in_size"], report["out_size"]
        console.print(escape(f"{report['model']} on {report['device']}: {report['input']} "
                             f"{w}x{h} -> {report['output']} {ow}x{oh} in "
                             f"{report['seconds']:.1f}s"), soft_wrap=True)
    if json:
        print_json(report)
