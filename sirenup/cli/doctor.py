"""``sirenup doctor``: versions, hardware, the device auto picks, the cache and the bundled
models, a tiny upscale on each device; exit 1 if anything is wrong."""

from __future__ import annotations

from typing import Annotated

import typer

from sirenup.cli.console import handle_errors, print_json, result


@handle_errors
def doctor(
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]
    = False,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Skip the tiny upscale on each device.")] = False,
) -> None:
    """Diagnose this installation: versions, CPU/CUDA/MPS, device choice, cache, models."""
    from sirenup.diagnostics.doctor import collect

    report = collect(smoke=not quick)
    if json:
        print_json(report)
    else:
        result(render(report))
    if report["problems"]:
        raise typer.Exit(1)


def _yes(value) -> str:
    return "[green]yes[/]" if value else "no"


def render(report: dict):
    """The report as rich renderables; every value escaped, markup only where added here."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    from sirenup.text import plural

    def e(value: object) -> str:
        return escape(str(value))

    def section(title: str, rows: list[tuple[str, str]]) -> Table:
        table = Table(title=title, title_justify="left", show_header=False, box=None,
                      padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for key, value in rows:
            table.add_row(e(key), value)
        return table

    def failed(problem: object) -> str:
        return f"[red]FAILED[/] ({e(problem)})"

    v, cpu, cuda, mps = report["versions"], report["cpu"], report["cuda"], report["mps"]
    parts = [section("Versions", [(k, e(v[k] or "not installed")) for k in v])]
    parts.append(section("CPU", [
        ("model", e(cpu["model"])), ("arch", e(cpu["arch"])),
        ("cores", e(f"{cpu['cores']} ({cpu['usable_cores']} usable)")),
        ("torch threads", e(cpu["torch_threads"]))]))
    built = _yes(cuda["built"]) + (e(f" (CUDA {cuda['build_version']})")
                                   if cuda["build_version"] else "")
    rows = [("built", built), ("available", _yes(cuda["available"])),
            ("driver", e(cuda["driver"] or "not found"))]
    for gpu in cuda["devices"]:
        rows.append((f"cuda:{gpu['index']}", e(f"{gpu['name']}, capability "
                                               f"{gpu['capability']}, "
                                               f"{gpu['memory_gib']:.1f} GiB")))
    if cuda["error"]:
        rows.append(("error", e(cuda["error"])))
    parts.append(section("CUDA", rows))
    parts.append(section("MPS", [("built", _yes(mps["built"])),
                                 ("available", _yes(mps["available"]))]))
    auto = report["auto"]
    parts.append(section("Device", [("auto picks", e(f"{auto['device']} ({auto['precision']})")),
                                    ("why", e(auto["reason"]))]))
    store = report["cache"]
    rows = [("folder", e(store["dir"])), ("size", e(f"{store['size_bytes']:,} bytes")),
            ("writable", _yes(store["writable"])), ("offline", _yes(store["offline"]))]
    for entry in store["models"]:
        state = "verified" if entry["verified"] else failed(entry["problem"]) \
            if entry["problem"] else "[yellow]unpinned[/] (intact; no sha256 to check against)"
        rows.append((entry["id"], f"{e(entry['url'] or '')}: {state}"))
    if store["partial_downloads"]:
        rows.append(("partial", f"{plural(len(store['partial_downloads']), 'download')} to "
                                "resume"))
    parts.append(section("Cache", rows))
    parts.append(section("Bundled models", [
        (row["name"], "verified" if row["ok"] else failed(row["problem"]))
        for row in report["bundled"]]))
    if report["smoke"]:
        parts.append(section("Tiny upscale (16x16 -> 32x32)", [
            (row["device"], e(f"ok in {row['upscale_s'] * 1000:.1f} ms ({row['precision']}, "
                              f"load {row['load_s']:.2f} s)") if row["ok"]
             else failed(row["error"]))
            for row in report["smoke"]]))
    for note in report.get("notes", []):
        parts.append(f"[yellow]note:[/] {e(note['message'])}\n    hint: {e(note['hint'])}")
    if report["problems"]:
        lines = [f"[red]{plural(len(report['problems']), 'problem')}:[/]"]
        for p in report["problems"]:
            lines.append(f"  - {e(p['message'])}\n    hint: {e(p['hint'])}")
        parts.append("\n".join(lines))
    else:
        parts.append("[green]no problems found[/]")
    return Group(*parts)
