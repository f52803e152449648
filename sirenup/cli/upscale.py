"""``sirenup upscale``: upscale one image to a scale factor or an exact size."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirenup.cli.console import (
    WorkBar,
    handle_errors,
    info_text,
    one_line,
    print_json,
    warn_text,
)
from sirenup.cli.options import (
    FORMAT_NAMES,
    BackgroundOption,
    DeviceOption,
    DitherOption,
    HeightOption,
    JsonOption,
    MaxInputPixelsOption,
    MaxOutputPixelsOption,
    ModelOption,
    OverlapOption,
    PngCompressionOption,
    PrecisionOption,
    QualityOption,
    ScaleOption,
    TileOption,
    WidthOption,
    chosen,
)
from sirenup.defaults import DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_OVERLAP, DEFAULT_TILE


@handle_errors
def upscale(
    input: Annotated[Path, typer.Argument(
        help="Image to upscale; - reads it from standard input.", show_default=False)],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", show_default=False,
        help="Output file (default: <stem>_x<S>.png beside the input); - writes it to "
             "standard output (PNG unless --format).")] = None,
    scale: ScaleOption = None,
    width: WidthOption = None,
    height: HeightOption = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "auto",
    tile: TileOption = DEFAULT_TILE,
    overlap: OverlapOption = DEFAULT_OVERLAP,
    format: Annotated[str | None, typer.Option(
        "--format", "-f", show_default=False,
        help=f"{FORMAT_NAMES} (default: from the output extension).")] = None,
    quality: QualityOption = None,
    png_compression: PngCompressionOption = None,
    background: BackgroundOption = None,
    dither: DitherOption = None,
    max_input_pixels: MaxInputPixelsOption = None,
    max_output_pixels: MaxOutputPixelsOption = DEFAULT_MAX_OUTPUT_PIXELS,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a file in the default output's place even when it is "
                            "not an image.")] = False,
    json: JsonOption = False,
) -> None:
    """Upscale an image: --scale S, or --width and/or --height (default x4)."""
    from rich.markup import escape

    from sirenup.errors import UsageError
    from sirenup.imaging.stdio import STDIO, is_stdio, stdio_paths
    from sirenup.inference.planning import check_device_spelling, check_tiling, plan_upscale

    if json and is_stdio(output):
        raise UsageError("--json and -o - both write to standard output; choose one")
    # Options, output path, input header and format limits: checked before torch loads.
    tile, overlap = chosen(tile=tile, overlap=overlap)  # None: not given
    check_tiling(tile, overlap)
    check_device_spelling(device, precision)
    with stdio_paths(input, output, format) as (src, dst):  # "-": through a private folder
        plan = plan_upscale(src, dst, scale=scale, width=width, height=height,
                            format=format, quality=quality, png_compression=png_compression,
                            background=background, max_input_pixels=max_input_pixels,
                            max_output_pixels=max_output_pixels, overwrite=overwrite,
                            on_warning=warn_text)

        from sirenup.diagnostics.hints import real_model_hint
        from sirenup.inference.upscaler import load_upscaler, run_plan

        upscaler = load_upscaler(model, device=device, precision=precision, tile=tile,
                                 overlap=overlap, dither=dither)
        with WorkBar(escape(one_line(input.name or str(input)))) as bar:
            report = run_plan(upscaler, plan, on_progress=bar)
    for key, given in (("input", input), ("output", output)):
        if is_stdio(given):
            report[key] = STDIO
    (w, h), (ow, oh) = report["in_size"], report["out_size"]
    info_text(f"{report['model']} on {report['device']}: {report['input']} {w}x{h} -> "
              f"{report['output']} {ow}x{oh} in {report['seconds']:.1f}s")
    advice = real_model_hint(input, upscaler.model_name)
    if advice:
        info_text(f"hint: {advice}")
    if json:
        print_json(report)
