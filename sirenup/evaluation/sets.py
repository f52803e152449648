"""Benchmark folders (``train --val``, evaluation): which images form which set. Torch-free,
so that ``sirenup train`` checks --val before torch is imported."""

from __future__ import annotations

from pathlib import Path

from sirenup.errors import SirenupError, UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def benchmark_sets(val_dir: Path) -> dict[str, list[Path]]:
    """{set name: image paths}; a folder of images is one set named after the folder."""
    val_dir = Path(val_dir)
    subsets = sorted(p for p in val_dir.iterdir() if p.is_dir())
    folders = subsets or [val_dir]
    return {
        f.name: sorted(p for p in f.iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())  # no FIFO
        for f in folders
    }


def check_sets_hold_images(val_dir: Path) -> None:
    """UsageError unless ``val_dir`` is a folder whose every set holds an image: an empty
    set (an empty folder, one with only a text file) would fail the first validation."""
    val_dir = Path(val_dir)
    if not val_dir.is_dir():
        raise UsageError(f"{val_dir}: not a folder", option="val")
    try:
        sets = benchmark_sets(val_dir)
    except OSError as error:
        raise SirenupError(f"{val_dir}: cannot read the folder ({error.strerror or error})",
                           option="val") from None
    empty = [name for name, paths in sets.items() if not paths]
    if empty:
        raise UsageError(f"{val_dir}: the set '{empty[0]}' holds no image "
                         f"({', '.join(sorted(s.lstrip('.') for s in IMAGE_SUFFIXES))})",
                         option="val")
