"""``sirenup models``: list, download, verify, locate and remove model weights.

Models are registry names (``sirenup models list``), http(s)/file URLs (optionally ending in
``#sha256=<hex>``) or cache ids. Downloads go to the cache folder (``sirenup models path``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from sirenup.cli.console import console, handle_errors, info, info_text, print_json, result

app = typer.Typer(help="List, download, verify, locate and remove models.",
                  no_args_is_help=True)


def _complete_model(incomplete: str) -> list[str]:
    from sirenup.hub.registry import REGISTRY

    return [name for name in REGISTRY if name.startswith(incomplete)]


ModelArg = Annotated[str, typer.Argument(
    help="Registry name, http(s)/file URL (optionally #sha256=<hex>) or cache id.",
    show_default=False, autocompletion=_complete_model)]


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _mark(row: dict) -> str:
    if row["verified"] is None and row.get("pinned") is False and row["source"] != "remote":
        return "[yellow]unpinned[/]"  # intact, but no sha256 was given to check it against
    return {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[row["verified"]]


def parse_size(text: str) -> int:
    """'500M', '2GiB', '1e6', '123456' -> bytes (K/M/G are powers of 1024)."""
    from sirenup.errors import UsageError

    units = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    number, unit = cleaned.rstrip("kmgt"), cleaned[len(cleaned.rstrip("kmgt")):]
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        value = -1.0
    if not 0 < value < float(1 << 50):
        raise UsageError(f"--max-size {text}: expected a size such as 500M or 2G")
    return int(value)


@app.command("list")
@handle_errors
def list_models(
    json: Annotated[bool, typer.Option("--json", help="Print the list as JSON on stdout.")]
    = False,
) -> None:
    """Known models: name, what each is for, size, where, and whether the file verifies
    (unpinned: downloaded without a sha256 to check it against)."""
    from rich.markup import escape
    from rich.table import Table

    from sirenup.hub import cache
    from sirenup.hub.registry import catalogue
    from sirenup.untrusted import one_line, shown

    rows = catalogue(verify=True)
    if json:
        print_json({"cache_dir": str(cache.cache_dir()), "models": rows})
        return
    table = Table(title="sirenup models", caption=f"cache: {escape(str(cache.cache_dir()))}")
    table.add_column("name", no_wrap=True)
    table.add_column("description", overflow="fold")
    for column in ("size", "where", "verified"):
        table.add_column(column)
    table.add_column("path or URL", overflow="fold")
    where = {"bundled": "bundled", "cached": "cached", "remote": "not downloaded"}
    for row in rows:
        table.add_row(escape(shown(row["name"])), escape(one_line(row.get("description") or "")),
                      _size(row["size"]), where[row["source"]], _mark(row),
                      escape(one_line(row["path"] or row["url"] or "")))
    result(table)


@app.command("download")
@handle_errors
def download(
    model: ModelArg,
    force: Annotated[bool, typer.Option(
        "--force", help="Download again even if the cached file verifies.")] = False,
    max_size: Annotated[str, typer.Option(
        "--max-size", metavar="SIZE",
        help="Largest download accepted when the registry records no size, e.g. 500M.")]
    = "1G",
) -> None:
    """Fetch a model into the cache (verified); print its path on stdout."""

    from sirenup.errors import SirenupError, UsageError
    from sirenup.hub import cache
    from sirenup.hub.registry import REGISTRY, bundled_path, bundled_problem, is_url
    from sirenup.untrusted import shown

    spec = model.strip()
    limit = parse_size(max_size)
    if spec in REGISTRY and REGISTRY[spec].bundled:
        entry = REGISTRY[spec]
        problem = bundled_problem(entry)
        if problem:
            raise SirenupError(f"{spec}: bundled file fails verification: {problem}")
        info(f"{spec} is bundled with sirenup (verified); nothing to download")
        typer.echo(bundled_path(entry))
        return
    if spec in REGISTRY:
        entry = REGISTRY[spec]
        if not entry.url:
            raise SirenupError(f"{spec}: the registry gives no URL to fetch it from")
        cached = cache.ensure(entry.url, sha256=entry.sha256, size=entry.size, name=spec,
                              force=force, max_size=limit)
    elif is_url(spec):
        cached = cache.ensure(spec, force=force, max_size=limit)
    else:
        raise UsageError(f"{spec}: not a registry name or an http(s)/file URL "
                         "(see 'sirenup models list')")
    pinned = "" if cached.pinned else " (unpinned: no sha256 was given to check it against)"
    info_text(f"{shown(cached.name)}: {_size(cached.meta['size'])}, sha256 {cached.sha256}{pinned}")
    typer.echo(cached.path)


@app.command("verify")
@handle_errors
def verify(
    models: Annotated[list[str] | None, typer.Argument(
        help="Models to check (default: every bundled and cached one).", show_default=False,
        autocompletion=_complete_model)] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")]
    = False,
) -> None:
    """Re-hash bundled and cached models against their sha256 and size; exit 1 on a failure."""
    from rich.markup import escape

    from sirenup.hub.cache import verified_state
    from sirenup.hub.registry import REGISTRY, cached_entry, catalogue
    from sirenup.untrusted import shown

    if models:
        rows = []
        for spec in (m.strip() for m in models):
            model = REGISTRY.get(spec)
            if model is not None and model.bundled:
                rows += [r for r in catalogue(verify=True) if r["name"] == spec]
            elif (entry := cached_entry(spec)) is not None:
                problem = entry.check(model.sha256 if model else None,
                                      model.size if model else None)
                pinned = entry.pinned or bool(model and model.sha256)
                rows.append({"name": entry.name, "id": entry.id, "path": str(entry.path),
                             "url": entry.url, "pinned": pinned, "problem": problem,
                             "verified": verified_state(problem, pinned)})
            else:
                rows.append({"name": spec, "id": None, "path": None,
                             "url": model.url if model else None, "verified": False,
                             "problem": "not downloaded"})
    else:
        rows = [r for r in catalogue(verify=True) if r["source"] != "remote"]
    failed = [r for r in rows if r["verified"] is False]
    if json:
        print_json({"ok": not failed, "models": rows})
    else:
        for row in rows:
            if row["verified"]:
                state = "ok"
            elif row["verified"] is None:
                state = ("[yellow]unpinned[/]: intact since it was downloaded, but no sha256 "
                         "was given to check it against")
            else:
                state = f"[red]FAILED[/]: {escape(str(row['problem']))}"
                if row.get("id"):
                    state += escape(f" (remove it: sirenup models remove {row['id']})")
            console.print(f"{escape(shown(row['name']))}: {state}", soft_wrap=True)
        if not rows:
            info("nothing to verify (no bundled or cached models)")
    if failed:
        raise typer.Exit(1)


@app.command("path")
@handle_errors
def path(
    model: Annotated[str | None, typer.Argument(
        help="A model (default: print the cache folder).", show_default=False,
        autocompletion=_complete_model)] = None,
) -> None:
    """Print the cache folder, or where a model's weights file is."""
    from sirenup.errors import SirenupError
    from sirenup.hub import cache
    from sirenup.hub.registry import REGISTRY, bundled_path, cached_entry

    if model is None:
        typer.echo(cache.cache_dir())
        return
    spec = model.strip()
    if spec in REGISTRY and REGISTRY[spec].bundled:
        typer.echo(bundled_path(REGISTRY[spec]))
        return
    entry = cached_entry(spec)
    if entry is None:
        raise SirenupError(f"{spec} is not in the cache; run: sirenup models download {spec}")
    typer.echo(entry.path)


@app.command("remove")
@handle_errors
def remove(
    models: Annotated[list[str] | None, typer.Argument(
        help="Cached models to delete.", show_default=False,
        autocompletion=_complete_model)] = None,
    all: Annotated[bool, typer.Option(
        "--all", help="Delete every cached model and partial download (only what sirenup "
                      "put in the cache).")] = False,
) -> None:
    """Delete models from the cache (bundled models cannot be removed)."""
    from sirenup.errors import SirenupError, UsageError
    from sirenup.hub import cache
    from sirenup.hub.registry import REGISTRY, cached_entry
    from sirenup.untrusted import shown

    if all:  # only what sirenup created: the cache may sit in a shared folder
        count, freed, left = cache.remove_all()
        from sirenup.text import plural

        info_text(f"removed {plural(count, 'cached model')}, {_size(freed)}"
                  + (f"; left {plural(len(left), 'file')} sirenup did not create in "
                     f"{cache.models_dir()}" if left else ""))
        return
    if not models:
        raise UsageError("name the models to remove, or pass --all")
    missing = []
    for spec in models:
        spec = spec.strip()
        if spec in REGISTRY and REGISTRY[spec].bundled:
            raise UsageError(f"{spec} is bundled with sirenup and cannot be removed")
        entry = cached_entry(spec)
        if entry is None:
            missing.append(spec)
            continue
        freed = cache.folder_size(entry.dir)
        cache.remove(entry)
        info_text(f"removed {shown(entry.name)} ({entry.id}, {_size(freed)})")
    if missing:
        raise SirenupError(f"not in the cache: {', '.join(missing)}")
