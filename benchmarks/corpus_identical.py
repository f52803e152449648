"""Behaviour unchanged? Run the real CLI of two worktrees on one fixed corpus; compare bytes.

    python benchmarks/corpus_identical.py --before /tmp/corpus_before_wt --after .

Each side gets its own copy of a small generated corpus (RGB 8-bit, 16-bit grey, RGBA, grey L,
a JPEG, odd sizes; 31-64 px) in a folder of the same relative layout, and runs
``python -m sirenup`` there with PYTHONPATH set to its worktree, on the CPU, with the bundled
default model: ``upscale`` at x2, x3.7, x4 and exact sizes to PNG/JPEG/WebP/TIFF (8 and
16-bit, alpha, grey, flattened alpha, standard input/output, the default output name),
``batch`` of a folder with ``--json``, ``compare`` with ``--json``, a few usage errors, and
``--help`` of every command. Compared byte for byte: every file each side wrote (inputs' folder
included: the default output lands there), stdout, the exit code, and stderr with durations
masked. Excepted: ``*montage*`` files (they print timings; also their hash in compare's
manifest, ``.sirenup-compare.json``), and in JSON on stdout the fields
``TIMING_FIELDS`` (removed at any depth before comparing). Exit 1 on any difference.

Runs are sequential, one torch thread: about a minute per side on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# JSON fields that hold durations or rates (different on every run).
TIMING_FIELDS = ("seconds", "load_seconds", "megapixels_per_second")
# "in 0.4s", "1.2 s", "3.1 MP/s" in stderr lines: durations, masked.
DURATION = re.compile(r"\d+(\.\d+)?( ?(s|ms|MP/s)\b)")
STREAMS = ("exit code", "stdout", "stderr (durations masked)")
MODEL = "sirenup-base"  # the bundled default, named so no cache is consulted
HELP_COMMANDS = [[], ["train"], ["upscale"], ["batch"], ["compare"], ["bench"], ["doctor"],
                 ["models"], ["models", "list"], ["models", "download"], ["models", "verify"],
                 ["models", "path"], ["models", "remove"]]


def make_corpus(folder: Path) -> None:
    """The inputs, generated the same way every time (a seeded generator)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(18)

    def smooth(h: int, w: int, channels: int, top: int) -> np.ndarray:
        # a gradient plus noise: edges and texture for the model, not only flat colour
        y, x = np.mgrid[0:h, 0:w]
        base = (np.sin(x / 3.0) + np.cos(y / 4.0) + 2) / 4
        noise = rng.random((h, w, channels))
        return (np.clip(0.7 * base[..., None] + 0.3 * noise, 0, 1) * top).round()

    Image.fromarray(smooth(40, 48, 3, 255).astype(np.uint8), "RGB").save(folder / "rgb.png")
    Image.fromarray(smooth(47, 31, 3, 255).astype(np.uint8), "RGB").save(folder / "odd.png")
    grey16 = smooth(41, 33, 1, 65535)[..., 0].astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    Image.fromarray(smooth(29, 35, 1, 255)[..., 0].astype(np.uint8), "L").save(folder / "grey.png")
    rgba = smooth(37, 40, 4, 255).astype(np.uint8)
    rgba[:10, :10, 3] = 0  # a transparent corner
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(smooth(48, 48, 3, 255).astype(np.uint8), "RGB").save(
        folder / "photo.jpg", quality=85)
    (folder / "notes.txt").write_text("not an image\n")  # batch skips it


def runs() -> list[tuple[str, list[str], str | None]]:
    """(name, arguments, standard input file or None); paths relative to the side's folder."""
    up = ["upscale", "--model", MODEL, "--device", "cpu"]
    return [
        ("upscale rgb x2 png", up + ["in/rgb.png", "-s", "2", "-o", "out/rgb_x2.png", "--json"],
         None),
        ("upscale rgb x3.7 jpg", up + ["in/rgb.png", "-s", "3.7", "-o", "out/rgb.jpg",
                                       "--quality", "90"], None),
        ("upscale rgb x4 webp", up + ["in/rgb.png", "-o", "out/rgb_x4.webp", "--json"], None),
        ("upscale grey16 x3.7 png", up + ["in/grey16.png", "-s", "3.7", "-o",
                                          "out/grey16.png", "--json"], None),
        ("upscale grey16 x2 tif", up + ["in/grey16.png", "-s", "2", "-o", "out/grey16.tif"],
         None),
        ("upscale rgba x4 webp", up + ["in/rgba.png", "-s", "4", "-o", "out/rgba.webp"], None),
        ("upscale rgba size tif", up + ["in/rgba.png", "--width", "100", "--height", "90",
                                        "-o", "out/rgba.tif", "--json"], None),
        ("upscale rgba bg jpg", up + ["in/rgba.png", "-s", "2", "--background", "white",
                                      "-o", "out/rgba_bg.jpg"], None),
        ("upscale grey width", up + ["in/grey.png", "--width", "77", "-o", "out/grey_w77.png",
                                     "--json"], None),
        ("upscale jpg x4 default", up + ["in/photo.jpg", "-o", "out/photo_x4.jpg"], None),
        ("upscale odd x2 default out", up + ["in/odd.png", "-s", "2", "--json"], None),
        ("upscale odd x3.7 -f tif", up + ["in/odd.png", "-s", "3.7", "-f", "tif", "-o",
                                          "out/odd_x37", "--png-compression", "1"], None),
        ("upscale odd png-compression", up + ["in/odd.png", "-s", "2", "-o", "out/odd_c9.png",
                                              "--png-compression", "9"], None),
        ("upscale stdin->stdout", up + ["-", "-s", "2", "-o", "-", "-f", "png"], "in/rgb.png"),
        ("batch folder --json", ["batch", "in", "out/batch", "--model", MODEL, "--device",
                                 "cpu", "-s", "2", "--json"], None),
        ("batch webp suffix x3.7", ["batch", "in/rgb.png", "in/grey16.png", "in/rgba.png",
                                    "out/batch2", "--model", MODEL, "--device", "cpu", "-s",
                                    "3.7", "-f", "webp", "--suffix", "_x", "--json"], None),
        ("batch again (skips)", ["batch", "in", "out/batch", "--model", MODEL, "--device",
                                 "cpu", "-s", "2", "--json"], None),
        ("compare --self x2", ["compare", "in/rgb.png", "--self", "-s", "2", "--json", "-d",
                               "out/cmp", "--device", "cpu", "--methods",
                               f"bicubic,nearest,{MODEL}"], None),
        ("compare plain x3.7", ["compare", "in/grey16.png", "-s", "3.7", "--json", "-d",
                                "out/cmp2", "--device", "cpu", "--model", MODEL], None),
        ("error --tile 8", up + ["in/rgb.png", "--tile", "8"], None),
        ("error --overlap -1", ["batch", "in", "out/x", "--overlap", "-1"], None),
        ("error --quality 200", up + ["in/rgb.png", "--quality", "200", "-o", "out/q.jpg"], None),
        ("error -f xyz", up + ["in/rgb.png", "-f", "xyz"], None),
        ("error bad extension", up + ["in/rgb.png", "-o", "out/rgb.xyz"], None),
        ("error alpha to bmp", up + ["in/rgba.png", "-o", "out/rgba.bmp"], None),
        ("error missing input", up + ["in/missing.png"], None),
        ("error --shard 5/2", ["batch", "in", "out/x", "--shard", "5/2"], None),
        ("error --device gpu", up + ["in/rgb.png", "--device", "gpu"], None),
        ("error bad model file", up + ["in/rgb.png", "--model", "in/notes.txt"], None),
        ("error compare --self width", ["compare", "in/rgb.png", "--self", "--width", "90"],
         None),
    ] + [(f"help {' '.join(c) or 'app'}", c + ["--help"], None) for c in HELP_COMMANDS]


def strip_timings(value):
    """``value`` without TIMING_FIELDS, at any depth."""
    if isinstance(value, dict):
        return {k: strip_timings(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [strip_timings(v) for v in value]
    return value


def normal_stdout(data: bytes) -> bytes:
    """JSON on stdout without its timing fields (re-serialised in a fixed form, keys in their
    order: the order is part of the output); anything else as it is."""
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data
    return json.dumps(strip_timings(parsed), indent=1).encode()


def run_side(worktree: Path, folder: Path, python: str) -> dict[str, tuple[int, bytes, bytes]]:
    """Run every run in ``folder`` with ``worktree``'s sirenup -> name: (code, stdout, stderr)."""
    make_corpus(folder / "in")
    (folder / "out").mkdir()
    env = {**os.environ, "PYTHONPATH": str(worktree.resolve()), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1",
           "XDG_CACHE_HOME": str(folder.parent / f"cache_{folder.name}")}
    env.pop("FORCE_COLOR", None)
    results = {}
    for name, args, stdin in runs():
        with open(folder / stdin, "rb") if stdin else open(os.devnull, "rb") as feed:
            done = subprocess.run([python, "-m", "sirenup", *args], cwd=folder, env=env,
                                  stdin=feed, capture_output=True, timeout=600)
        results[name] = (done.returncode, normal_stdout(done.stdout),
                         DURATION.sub(r"<t>\2", done.stderr.decode(errors="replace")).encode())
        print(f"  {folder.name}: {name} -> exit {done.returncode}", file=sys.stderr)
    return results


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), montages excepted (and their
    hashes in compare's manifest)."""
    return {p.relative_to(folder).as_posix(): without_montage(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and "montage" not in p.name}


def without_montage(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name != ".sirenup-compare.json":
        return data
    manifest = json.loads(data)
    manifest["files"] = {k: v for k, v in manifest["files"].items() if "montage" not in k}
    return json.dumps(manifest, sort_keys=True).encode()


def compare(before: dict, after: dict, what: str, rows: list[tuple[str, str, str]]) -> int:
    """Append a row per key to ``rows`` -> the number of differences."""
    differences = 0
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        verdict = "same" if a == b else ("missing after" if b is None else
                                         "missing before" if a is None else "DIFFERENT")
        differences += verdict != "same"
        rows.append((what, key, verdict))
    return differences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="worktree before")
    parser.add_argument("--after", type=Path, required=True, help="worktree after")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--keep", type=Path, help="folder to keep both sides' files in")
    parser.add_argument("--diffs", action="store_true", help="print differing stdout/stderr")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corpus_") as tmp:
        root = args.keep or Path(tmp)
        sides = {}
        for label, worktree in (("before", args.before), ("after", args.after)):
            sides[label] = run_side(worktree, root / label, args.python)
        rows: list[tuple[str, str, str]] = []
        differences = 0
        for index, what in enumerate(STREAMS):
            differences += compare({k: v[index] for k, v in sides["before"].items()},
                                   {k: v[index] for k, v in sides["after"].items()}, what, rows)
        differences += compare(files_of(root / "before"), files_of(root / "after"), "file",
                               rows)
        width = max(len(key) for _, key, _ in rows)
        for what, key, verdict in rows:
            print(f"{what:<27} {key:<{width}}  {verdict}")
            if args.diffs and verdict == "DIFFERENT" and what in STREAMS:
                for label in sides:
                    print(f"--- {label}:\n{sides[label][key][STREAMS.index(what)]!r}")
        print(f"\n{len(rows)} compared, {differences} different "
              f"(montages excepted; JSON fields removed: {', '.join(TIMING_FIELDS)})")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
