"""The house's layers (docs/ARCHITECTURE.md): no module imports from a room above its own.

Each room may import itself and the rooms of lower layers only; lazy imports inside functions
count too (they are still arrows). The layer order is written here, once.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sirenup"

# Lowest first. Rooms on one line are side by side: neither imports the other.
LAYERS: list[set[str]] = [
    {"errors"},  # SirenupError and UsageError
    {"defaults", "files", "untrusted", "text"},  # defaults; atomic writes; safe display; words
    {"models", "imaging"},  # the network and its weights files; decoded images
    {"hub"},  # named models, the download cache
    {"inference"},  # devices, tiler, upscaler, the per-image and folder pipelines
    {"evaluation"},  # the scoring protocol, metrics, compare
    {"training", "diagnostics"},  # sirenup train; bench and doctor
    {"cli"},  # the commands
    {"__main__", "__init__"},  # python -m sirenup
]
LEVEL = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}


def room_of(module: str) -> str | None:
    """'sirenup.inference.tiler' -> 'inference'; None outside the package."""
    parts = module.split(".")
    if parts[0] != "sirenup":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def test_every_room_has_a_layer():
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert rooms - {"assets"} <= set(LEVEL), sorted(rooms - set(LEVEL))


def test_no_module_imports_from_a_layer_above():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        room = room_of(module)
        for imported in imported_modules(path):
            target = room_of(imported)
            if target is None or target == room or target not in LEVEL:
                continue
            if LEVEL[target] >= LEVEL[room]:
                wrong.append(f"{module} -> {imported}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_room_holds_most_of_the_package():
    lines = dict.fromkeys(LEVEL, 0)
    for path in PACKAGE.rglob("*.py"):
        room = room_of(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if room in lines:
            lines[room] += len(path.read_text(encoding="utf-8").splitlines())
    total = sum(lines.values())
    assert max(lines.values()) <= 0.3 * total, lines
