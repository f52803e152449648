"""``sirenup batch``: upscale every image of a folder into another folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirenup.cli.console import console, handle_errors, state, warn


@handle_errors
def batch(
    input_dir: Annotated[Path, typer.Argument(
        help="Folder of images (not searched recursively).", show_default=False)],
    output_dir: Annotated[Path, typer.Argument(
        help="Folder for the results (created if needed).", show_default=False)],
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
    tile: Annotated[int, typer.Option(
        "--tile", help="Tile side in input pixels; 0 = whole image.")] = 256,
    overlap: Annotated[int, typer.Option(
        "--overlap", help="Overlap between tiles in input pixels.")] = 8,
) -> None:
    """Upscale every image directly in INPUT_DIR into OUTPUT_DIR, loading the model once."""
    from rich.markup import escape

    from sirenup.engine.upscaler import load_upscaler, upscale_folder

    def say(message: str, *, always: bool = False) -> None:
        if always or not state["quiet"]:
            console.print(escape(message), soft_wrap=True)

    def on_event(kind: str, record: dict) -> None:
        name = Path(record["input"]).name
        if kind == "done":
            (w, h), (ow, oh) = record["in_size"], record["out_size"]
            say(f"{name} {w}x{h} -> {record['output']} {ow}x{oh} ({record['seconds']:.1f}s)")
        elif kind == "warning":
            warn(escape(record["message"]))
        elif kind == "failed":
            console.print(f"[red]failed:[/] {escape(name)}: {escape(record['error'])}",
                          soft_wrap=True)

    upscaler = load_upscaler(model, device=device, tile=tile, overlap=overlap)
    summary = upscale_folder(upscaler, input_dir, output_dir, scale=scale, width=width,
                             height=height, on_event=on_event)
    say(f"batch: {summary['done']} done, {summary['skipped']} skipped (not images), "
        f"{summary['failed']} failed in {summary['seconds']:.1f}s "
        f"({upscaler.model_name} on {upscaler.device})", always=summary["failed"] > 0)
    if summary["failed"]:
        raise typer.Exit(1)
