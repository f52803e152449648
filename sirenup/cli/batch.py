"""``sirenup batch``: upscale many images (folders, files, patterns) into one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirenup.cli.console import (
    WorkBar,
    bars_shown,
    console,
    flag,
    handle_errors,
    info_text,
    one_line,
    print_json,
    progress_columns,
    result,
    state,
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
def batch(
    inputs: Annotated[list[str], typer.Argument(
        help="Folders, image files or glob patterns ('photos/**/*.jpg').",
        metavar="INPUT", show_default=False)],
    output_dir: Annotated[Path, typer.Argument(
        help="Folder for the results (created if needed).", metavar="OUTPUT_DIR",
        show_default=False)],
    scale: ScaleOption = None,
    width: WidthOption = None,
    height: HeightOption = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "auto",
    tile: TileOption = DEFAULT_TILE,
    overlap: OverlapOption = DEFAULT_OVERLAP,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r",
        help="Go through subfolders too, mirrored under OUTPUT_DIR.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Redo outputs that exist (default: skip them, so a stopped run "
                            "resumes).")] = False,
    suffix: Annotated[str, typer.Option(
        "--suffix", help="Appended to each output's stem, e.g. _x4.")] = "",
    format: Annotated[str | None, typer.Option(
        "--format", "-f", show_default=False,
        help=f"{FORMAT_NAMES} (default: the input's format when sirenup writes it, "
             "else png).")] = None,
    quality: QualityOption = None,
    png_compression: PngCompressionOption = None,
    background: BackgroundOption = None,
    dither: DitherOption = None,
    max_input_pixels: MaxInputPixelsOption = None,
    max_output_pixels: MaxOutputPixelsOption = DEFAULT_MAX_OUTPUT_PIXELS,
    shard: Annotated[str | None, typer.Option(
        "--shard", show_default=False, metavar="K/N|auto",
        help="Process only the K-th of N deterministic parts (K from 1), e.g. one per "
             "machine or job-array task; auto reads them from a Slurm array job or a "
             "Kubernetes indexed Job.")] = None,
    shard_count: Annotated[int | None, typer.Option(
        "--shard-count", show_default=False, metavar="N",
        help="With --shard auto on Kubernetes: the Job's completions (or set "
             "SIRENUP_SHARD_COUNT).")] = None,
    json: JsonOption = False,
) -> None:
    """Upscale every image of the INPUTs into OUTPUT_DIR, loading the model once.

    Exit code: 0 if every image succeeded, 1 if any failed, 2 for bad usage.
    """
    from rich.markup import escape

    from sirenup.inference.batch import BatchOptions, run_batch
    from sirenup.inference.planning import check_device_spelling, check_tiling
    from sirenup.inference.shards import resolve_shard

    tile, overlap = chosen(tile=tile, overlap=overlap)  # None: not given
    check_tiling(tile, overlap)  # torch is imported only once the options are checked
    check_device_spelling(device, precision)
    shard = resolve_shard(shard, shard_count)  # "auto" -> this array task's "K/N"
    options = BatchOptions(
        scale=scale, width=width, height=height, recursive=recursive, overwrite=overwrite,
        suffix=suffix, format=format, quality=quality, png_compression=png_compression,
        background=background,
        max_input_pixels=max_input_pixels, max_output_pixels=max_output_pixels, shard=shard)
    view = _Progress(enabled=bars_shown())
    hint = None

    def on_event(kind: str, record: dict) -> None:
        nonlocal hint
        if kind == "start":
            from sirenup.diagnostics.hints import HintOnce

            hint = HintOnce(record["model"])
            view.start(record)
        elif kind == "done":
            advice = hint(record["input"]) if hint is not None else None
            if advice:
                info_text(f"hint: {advice}")
            view.advance(record)
        elif kind == "progress":
            view.image(record)
        elif kind == "warning":
            warn_text(record["message"])
        elif kind == "failed":
            console.print(f"[red]failed:[/] {escape(one_line(record['input']))}: "
                          f"{escape(one_line(record['error']))}", soft_wrap=True)
            view.advance(None)
        elif kind == "note":
            info_text(record["message"])

    try:
        report = run_batch(
            inputs, output_dir, options,
            lambda: _load(model, device=device, precision=precision, tile=tile,
                          overlap=overlap, dither=dither),
            on_event=on_event, spell=flag)
    finally:
        view.stop()
    if not state["quiet"]:  # a result on stdout; beside --json (stdout's), on stderr
        (console.print if json else result)(_summary(report))
    elif report["failed"]:
        console.print(f"batch: {report['failed']} failed", soft_wrap=True)
    if json:
        print_json(report)
    if report["failed"]:
        raise typer.Exit(1)


def _load(model, **options):
    from sirenup.inference.upscaler import load_upscaler

    return load_upscaler(model, **options)


class _Progress:
    """Images done/total, output MP/s and ETA on stderr (rich), while the batch runs."""

    def __init__(self, enabled: bool):
        self.enabled, self.progress, self.task = enabled, None, None
        self.pixels, self.started = 0, 0.0
        self.current, self.current_input = None, None  # the image being upscaled: its own
        # bar under the folder's

    def image(self, record: dict) -> None:
        """The current image's progress ('progress' events): a second bar while it lasts."""
        if self.progress is None:
            return
        if self.current is None or self.current_input != record["input"]:
            from pathlib import PurePath

            from rich.markup import escape

            if self.current is not None:  # its 'done' comes once its write is finished
                self.current.close()
            name = escape(one_line(PurePath(record["input"]).name))
            self.current = WorkBar(f"  {name}", within=self.progress, rate="")
            self.current_input = record["input"]
        self.current(record["done"], record["total"])

    def start(self, record: dict) -> None:
        import time

        from rich.progress import Progress, TextColumn

        self.started = time.perf_counter()
        if not self.enabled or record["total"] == 0:
            return
        self.progress = Progress(
            *progress_columns("images", TextColumn("{task.fields[rate]}")), console=console,
            transient=False)
        self.progress.start()
        from rich.markup import escape

        from sirenup.untrusted import shown

        # the model's name comes from its weights file: never markup, never raw escapes
        self.task = self.progress.add_task(escape(f"{shown(record['model'])} on "
                                                  f"{record['device']}"),
                                           total=record["total"], rate="")

    def advance(self, record: dict | None) -> None:
        import time

        if self.progress is None:
            return
        if record is not None:
            self.pixels += record["out_size"][0] * record["out_size"][1]
        seconds = max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, advance=1,
                             rate=f"{self.pixels / 1e6 / seconds:.2f} MP/s")

    def stop(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _summary(report: dict):
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"sirenup batch: {escape(str(report['model']))} on "
                        f"{escape(report['device'])}"
                        + (f", shard {report['shard']}" if report["shard"] else ""),
                  show_header=False, title_justify="left")
    table.add_column(justify="left")
    table.add_column(justify="right")
    rate = report["megapixels_per_second"]
    table.add_row("done", str(report["done"]))
    table.add_row("skipped (output exists)", str(report["skipped_existing"]))
    table.add_row("skipped (not images)", str(report["not_images"]))
    other = report["skipped"] - report["skipped_existing"] - report["not_images"]
    if other:
        table.add_row("skipped (other)", str(other))
    table.add_row("failed", f"[red]{report['failed']}[/]" if report["failed"] else "0")
    table.add_row("output", f"{report['output_megapixels']:.2f} MP")
    table.add_row("time", f"{report['seconds']:.1f} s"
                  + (f" ({rate:.2f} MP/s)" if rate else ""))
    if not report["failures"]:
        return table
    failures = Table(title="failures", title_justify="left")
    failures.add_column("file", overflow="fold")
    failures.add_column("reason", overflow="fold")
    for record in report["failures"]:
        failures.add_row(escape(one_line(record["input"])), escape(one_line(record["error"])))
    return Group(table, failures)
