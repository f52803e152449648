"""``sirenup compare``: classical resampling and models on one image, with pictures and
numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirenup.cli.console import (
    WorkBar,
    handle_errors,
    info,
    one_line,
    print_json,
    result,
    result_line,
    warn,
)
from sirenup.cli.options import (
    DeviceOption,
    DitherOption,
    JsonOption,
    OverlapOption,
    PrecisionOption,
    TileOption,
    chosen,
)
from sirenup.defaults import DEFAULT_OVERLAP, DEFAULT_TILE
from sirenup.text import plural
from sirenup.untrusted import shown


@handle_errors
def compare(
    input: Annotated[Path, typer.Argument(
        help="Image to upscale (with --self: the high-resolution image).", show_default=False)],
    reference: Annotated[Path | None, typer.Option(
        "--reference", show_default=False, metavar="HR",
        help="The high-resolution original of INPUT: score every method against it.")] = None,
    self_reference: Annotated[bool, typer.Option(
        "--self", help="Downscale INPUT by --scale (Pillow bicubic) and score against INPUT.")
    ] = False,
    scale: Annotated[float | None, typer.Option(
        "--scale", "-s", show_default=False, help="Scale factor (default: 4).")] = None,
    width: Annotated[int | None, typer.Option(
        "--width", show_default=False, help="Output width (without a reference).")] = None,
    height: Annotated[int | None, typer.Option(
        "--height", show_default=False, help="Output height (without a reference).")] = None,
    methods: Annotated[str | None, typer.Option(
        "--methods", show_default=False,
        help="Comma-separated: nearest, bilinear, bicubic, lanczos, box, hamming, and model "
             "names or weights files (default: nearest,bilinear,bicubic,lanczos,sirenup-base; "
             "with --model: bicubic)."
    )] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", show_default=False, metavar="MODELS",
        help="Comma-separated model names or weights files to compare side by side, e.g. "
             "sirenup-base,sirenup-gan (shown beside bicubic).")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-d", show_default=False,
        help="Folder for the outputs and the montage (default: <stem>_compare beside INPUT).")
    ] = None,
    crop: Annotated[str | None, typer.Option(
        "--crop", show_default=False, metavar="X,Y,W,H",
        help="Region to enlarge in the montage, in output pixels (default: the most detailed "
             "one).")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "auto",
    tile: TileOption = DEFAULT_TILE,
    overlap: OverlapOption = DEFAULT_OVERLAP,
    dither: DitherOption = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace files already in the output folder (default: refuse, "
                            "before any work).")] = False,
    json: JsonOption = False,
) -> None:
    """Compare upscaling methods on one image: outputs, a montage, PSNR/SSIM/texture, time.

    Scores (with --reference or --self) follow the benchmark protocol: 8-bit RGB, a border of
    ceil(scale) pixels shaved, PSNR on RGB and on Y (BT.601), SSIM on Y (scikit-image), and
    the texture ratio: Y energy above the input's Nyquist frequency, output over reference
    (1 = as much fine detail as the original; below: smoother, above: sharpened or noisy).
    The table goes to stdout (with --json: the JSON report instead); progress to stderr.
    """
    from rich.markup import escape

    from sirenup.evaluation.compare import CompareOptions, run_compare
    from sirenup.inference.planning import check_device_spelling, check_tiling

    tile, overlap = chosen(tile=tile, overlap=overlap)  # None: not given
    check_tiling(tile, overlap)
    check_device_spelling(device, precision)
    options = CompareOptions(reference=reference, self_reference=self_reference, scale=scale,
                             width=width, height=height, methods=methods, models=model,
                             output_dir=output_dir, crop=crop, overwrite=overwrite)

    def load_upscaler(name: str, **settings):
        from sirenup.inference.upscaler import load_upscaler

        return load_upscaler(name, **settings)

    bars: dict = {}

    def on_event(kind: str, record: dict) -> None:
        if kind == "start":
            (w, h), (ow, oh) = record["in_size"], record["out_size"]
            info(escape(f"comparing {plural(len(record['methods']), 'method')} on {w}x{h} -> "
                        f"{ow}x{oh}: {', '.join(record['methods'])}"))
        elif kind == "progress":
            if record["method"] not in bars:
                bars[record["method"]] = WorkBar(escape(one_line(record["method"])))
            bars[record["method"]](record["done"], record["total"])
        elif kind == "method":
            if record["method"] in bars:
                bars.pop(record["method"]).close()
            info(escape(f"{record['method']}: {record['seconds']:.3f} s -> {record['output']}"))

    try:
        report = run_compare(
            input, options,
            lambda name: load_upscaler(name, device=device, precision=precision, tile=tile,
                                       overlap=overlap, dither=dither),
            on_event=on_event)
    finally:
        for bar in bars.values():
            bar.close()
    for message in report["warnings"]:
        warn(escape(message))
    if json:
        print_json(report)
        return
    # the report is a result: stdout, so it can be redirected
    (w, h), (ow, oh) = report["in_size"], report["out_size"]
    result_line(one_line(f"{report['input']}: {w}x{h} -> {ow}x{oh} (x{report['scale']:g}, "
                         f"{report['mode']})"))
    result(_table(report))
    if report["protocol"]:
        result_line(report["protocol"])
    result_line(one_line(f"montage: {report['montage']}"))


def _table(report: dict):
    import math

    from rich.markup import escape
    from rich.table import Table

    scored = report["mode"] != "plain"
    table = Table()
    table.add_column("method")
    columns = [("PSNR RGB\ndB", "psnr_rgb", 2), ("PSNR Y\ndB", "psnr_y", 2),
               ("SSIM", "ssim", 4)] if scored else []
    texture = scored and any("texture" in r for r in report["methods"])
    for title, _, _ in columns:
        table.add_column(title, justify="right")
    if texture:
        table.add_column("texture\nratio", justify="right")
    gridded = any("grid_lock" in r for r in report["methods"])
    if gridded:
        table.add_column("grid-\nlock", justify="right")
    table.add_column("time\ns", justify="right")
    best = {key: max((r[key] for r in report["methods"] if r.get(key) is not None),
                     default=None) for _, key, _ in columns}
    closest = min((abs(math.log(r["texture"])) for r in report["methods"]
                   if r.get("texture")), default=None)
    for record in report["methods"]:
        cells = [escape(shown(record.get("label", record["method"])))]
        for _, key, digits in columns:
            value = record.get(key)
            text = "inf" if value is None else f"{value:.{digits}f}"
            cells.append(f"[bold]{text}[/]" if value is not None and value == best[key]
                         else text)
        if texture:  # closest to 1 is best, not highest
            cells.append(_ratio_cell(record.get("texture"), closest))
        if gridded:
            cells.append(f"{record['grid_lock']:.2f}" if "grid_lock" in record else "-")
        cells.append(f"{record['seconds']:.3f}")
        table.add_row(*cells)
    return table


def _ratio_cell(value: float | None, closest: float | None) -> str:
    import math

    if value is None:
        return "-"
    text = f"{value:.3f}"
    return f"[bold]{text}[/]" if value > 0 and abs(math.log(value)) == closest else text
