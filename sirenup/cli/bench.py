"""``sirenup bench``: time the model against bicubic on this machine, in-process."""

from __future__ import annotations

import typer

from sirenup.cli.console import console, handle_errors, info, print_json
from sirenup.defaults import DEFAULT_TILE


@handle_errors
def bench(
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (fp16 on CUDA, else fp32), fp32, fp16 or bf16."),
    model: str = typer.Option("sirenup-base", "--model", "-m",
                              help="Registry name or path to a weights file."),
    sizes: str = typer.Option("256,512", "--sizes",
                              help="Comma-separated LR sides in pixels (square inputs)."),
    scale: float = typer.Option(4.0, "--scale", "-s", min=1.0, help="Upscaling factor."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed runs per method and size."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed runs before timing."),
    tile: int = typer.Option(DEFAULT_TILE, "--tile", min=0,
                             help="LR tile side (0: whole image)."),
    threads: int | None = typer.Option(None, "--threads", min=1,
                                       help="torch CPU threads (default: torch's choice)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Benchmark upscaling speed: model vs bicubic on synthetic photo-like inputs."""
    from sirenup.errors import UsageError

    try:
        side_list = [int(s) for s in sizes.replace(" ", "").split(",") if s]
    except ValueError:
        raise UsageError(f"--sizes {sizes}: expected comma-separated integers, e.g. 256,512") \
            from None
    if not side_list or min(side_list) < 1:
        raise UsageError(f"--sizes {sizes}: expected positive integers, e.g. 256,512")

    from sirenup.engine.bench import run_benchmark

    result = run_benchmark(model=model, device=device, precision=precision, sizes=side_list,
                           scale=scale, repeats=repeats, warmup=warmup, tile=tile, threads=threads,
                           log=lambda message: info(f"[dim]timing {message}[/]"))
    console.print(results_table(result))
    if as_json:
        print_json(result)


def results_table(result: dict):
    from rich.table import Table

    mem = ("CUDA max allocated" if result["device"].startswith("cuda")
           else "process RSS peak increase")
    table = Table(
        title=f"sirenup bench: {result['model']} x{result['scale']:g}, tile {result['tile']}",
        caption=(f"device {result['device']} ({result['device_name']}), torch "
                 f"{result['torch_version']}, {result['torch_threads']} threads; median of "
                 f"{result['repeats']} after {result['warmup']} warm-up; memory: {mem} "
                 "(Pillow: process RSS)"),
    )
    for column, justify in (("size", "left"), ("method", "left"), ("median\ns", "right"),
                            ("min\ns", "right"), ("out\nMP/s", "right"),
                            ("model\n/ this", "right"), ("peak\nMiB", "right")):
        table.add_column(column, justify=justify)
    for row in result["sizes"]:
        label = ["x".join(map(str, row["lr"])) + " ->", "x".join(map(str, row["out"])),
                 f"{row['out_mp']:.2f} MP"]
        methods = [
            ("model", row["model"], "1.0"),
            (f"bicubic/torch ({row['bicubic_torch']['device']})", row["bicubic_torch"],
             f"{row['ratio_vs_bicubic_torch']:.1f}"),
            ("bicubic/PIL (cpu)", row["bicubic_pillow"], f"{row['ratio_vs_bicubic_pillow']:.1f}"),
        ]
        for i, (name, m, ratio) in enumerate(methods):
            peak = "" if m["peak_mem_mb"] is None else f"{m['peak_mem_mb']:.0f}"
            table.add_row(label[i], name, _seconds(m["median_s"]), _seconds(m["min_s"]),
                          f"{m['mp_per_s']:.2f}", ratio, peak, end_section=i == len(methods) - 1)
    return table


def _seconds(value: float) -> str:
    return f"{value:.4f}" if value < 1 else f"{value:.3f}" if value < 100 else f"{value:.1f}"
