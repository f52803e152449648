"""``sirenup bench``: time the model against bicubic on this machine, in-process."""

from __future__ import annotations

import typer

from sirenup.cli.console import (
    bars_shown,
    console,
    handle_errors,
    info_text,
    print_json,
    state,
)
from sirenup.cli.console import result as show_result
from sirenup.cli.options import chosen
from sirenup.defaults import DEFAULT_MODEL, DEFAULT_TILE


@handle_errors
def bench(
    device: str = typer.Option("auto", "--device",
                               help="auto, cpu, cuda, cuda:N, mps, or all (every device here)."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (fp16 on CUDA, else fp32), fp32, fp16 or bf16."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m",
                              help="Registry name or path to a weights file."),
    sizes: str = typer.Option("256,512", "--sizes",
                              help="Comma-separated LR sides in pixels (square inputs)."),
    scales: str = typer.Option("4", "--scales", "--scale", "-s",
                               help="Comma-separated upscaling factors (each >= 1), e.g. 2,4."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed runs per method and case."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed runs before timing."),
    tile: int = typer.Option(DEFAULT_TILE, "--tile", min=0,
                             help="LR tile side (0: whole image)."),
    threads: int | None = typer.Option(None, "--threads", min=1,
                                       help="torch CPU threads (default: torch's choice)."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print the results as JSON on stdout (the table then "
                                      "goes to stderr)."),
) -> None:
    """Benchmark upscaling speed and memory: the model vs bicubic on synthetic photo-like
    inputs. The table goes to stdout, progress to stderr."""
    side_list = parse_numbers("--sizes", sizes, int, "256,512")
    if min(side_list) < 1:
        _bad("--sizes", sizes, "256,512")
    scale_list = parse_numbers("--scales", scales, float, "2,4")
    if min(scale_list) < 1:
        _bad("--scales", scales, "2,4")

    from sirenup.diagnostics.bench import run_benchmark

    info_text(plan_line(model, device, side_list, scale_list, repeats, warmup))
    with _StepProgress(enabled=bars_shown()) as progress:
        result = run_benchmark(model=model, device=device, precision=precision,
                               sizes=side_list, scales=scale_list, repeats=repeats,
                               warmup=warmup, tile=chosen(tile=tile), threads=threads,
                               progress=progress)
    table = results_table(result)
    if as_json:
        if not state["quiet"]:
            console.print(table)
        print_json(result)
    else:
        show_result(table)  # stdout: the result of this command


def plan_line(model: str, device: str, sides: list[int], scales: list[float], repeats: int,
              warmup: int) -> str:
    """What bench is about to do, and how to make it shorter."""
    from sirenup.text import plural

    cases = len(sides) * len(scales)
    runs = cases * (warmup + repeats)
    sizes = ",".join(f"{side}\u00b2" for side in sides)
    factors = ",".join(f"x{scale:g}" for scale in scales)
    quick = "--sizes 256 --repeats 1 --warmup 0"
    return (f"bench: {model} on {device}: {plural(cases, 'case')} ({sizes} at {factors}), "
            f"{plural(warmup, 'warm-up')} + {plural(repeats, 'timed run')} each, model and "
            f"bicubic: {plural(runs, 'model run')} in all"
            + (f" (shorter: {quick})" if runs > 2 else ""))


def parse_numbers(option: str, text: str, kind: type, example: str) -> list:
    try:
        values = [kind(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        values = []
    if not values:
        _bad(option, text, example)
    return values


def _bad(option: str, text: str, example: str) -> None:
    from sirenup.errors import UsageError

    what = "integers" if option == "--sizes" else "numbers"
    raise UsageError(f"{option} {text}: expected comma-separated positive {what}, e.g. {example}")


class _StepProgress:
    """A rich progress bar on stderr: runs done / all runs, and the step running now."""

    def __init__(self, enabled: bool):
        self.enabled, self.progress, self.task = enabled, None, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(TextColumn("bench"), BarColumn(bar_width=20),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("{task.description}", markup=False),
                                     console=console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("starting", total=None)
        return self

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, total=total, description=what)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def results_table(result: dict):
    """One row per device x case; fits 80 columns."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from sirenup.text import plural

    several = len(result["devices"]) > 1
    names = "; ".join(f"{d['device']} = {d['device_name']} ({d['precision']})"
                      for d in result["devices"])
    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
        collapse_padding=True, title_justify="left",
        title=escape(f"sirenup bench: {result['model']}, tile {result['tile']}, "
                     f"{result['torch_threads']} CPU threads"),
        caption=escape(
            f"{names}. Median of {plural(result['repeats'], 'run')} after "
            f"{plural(result['warmup'], 'warm-up')}. "
            "bicubic: torch's interpolate on the same device (Pillow's in --json). Peak: "
            "memory a method added while it ran (CPU: resident set; CUDA: allocated)."),
        caption_justify="left")
    columns = (["device"] if several else []) + [
        "scale", "input\n-> output", "model\ns", "model\nMP/s", "bicubic\nMP/s",
        "model t /\nbicubic t", "model\npeak MB", "bicubic\npeak MB"]
    for column in columns:
        left = column in ("device", "input\n-> output")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for row in result["cases"]:
        model, bicubic = row["model"], row["bicubic_torch"]
        cells = ([row["device"]] if several else []) + [
            f"x{row['scale']:g}", f"{row['lr'][0]}\u00b2->{row['out'][0]}\u00b2",
            _seconds(model["median_s"]), f"{model['mp_per_s']:.2f}",
            f"{bicubic['mp_per_s']:.1f}", f"{row['ratio_vs_bicubic_torch']:.1f}x",
            _megabytes(model["peak_mem_mb"]), _megabytes(bicubic["peak_mem_mb"])]
        table.add_row(*cells)
    return table


def _megabytes(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"
