#!/usr/bin/env python
"""Speed bar, measured the way a user meets it: whole `sirenup upscale` processes.

Each round runs, in this order, `sirenup --help`, `sirenup --version`, `sirenup upscale` on a
256x256 crop and on a 768x768 crop of a real photo (x4 by default); rounds repeat --repeats
times, so slow drifts hit every measurement alike. Reported: medians (and minima), and

    throughput after start-up = (out_MP_768 - out_MP_256) / (median_t768 - median_t256)

in output megapixels per second: the per-pixel cost with start-up (interpreter, torch import,
model load) cancelled out. Also whether `import sirenup.cli.app` imports torch.

With ``--against TREE`` (a checkout of another commit, e.g. ``git worktree add /tmp/v1 <sha>``)
every round also runs the same commands from that tree (``PYTHONPATH=TREE``, its own bundled
models), the two trees in alternating order (ABBA), so that the machine's drift falls on both
alike; reported besides each tree's figures: this tree's throughput as a share of the other's,
and the median over rounds of the per-round ratio of the large upscale's times.

    python benchmarks/bench_speed.py                      # 5 rounds, default device
    python benchmarks/bench_speed.py --device cpu --out speed.json
    python benchmarks/bench_speed.py --device cpu --against /tmp/v1 --repeats 8

Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO.parent / "shared" / "data" / "train"
SAMPLE = REPO / "sirenup" / "assets" / "sample.png"
SIRENUP = [sys.executable, "-m", "sirenup"]


def find_photo(root: Path = TRAIN) -> Path:
    """The first PNG (sorted) under ``root``, else the bundled sample photo."""
    if root.is_dir():
        photos = sorted(root.rglob("*.png"))
        if photos:
            return photos[0]
    return SAMPLE


def center_crop(image: Image.Image, side: int) -> Image.Image:
    """A side x side centre crop; a photo smaller than that is first enlarged (Lanczos)."""
    w, h = image.size
    if min(w, h) < side:
        factor = side / min(w, h)
        w, h = max(side, round(w * factor)), max(side, round(h * factor))
        image = image.resize((w, h), Image.LANCZOS)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


def make_inputs(photo: Path, folder: Path, sides: Sequence[int]) -> dict[int, Path]:
    """Centre crops of ``photo`` (the smaller ones nested in the largest), saved as PNG."""
    with Image.open(photo) as im:
        big = center_crop(im.convert("RGB"), max(sides))
    paths = {}
    for side in sides:
        path = folder / f"input_{side}.png"
        center_crop(big, side).save(path)
        paths[side] = path
    return paths


def run(cmd: list[str], tree: Path = REPO) -> tuple[float, str]:
    """Wall seconds of one whole process run from source ``tree``, and its stdout; a failure
    stops the benchmark."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: `{shlex.join(cmd)}` exited {proc.returncode}:\n{proc.stderr.strip()}")
    return seconds, proc.stdout


def probe_python(code: str) -> str:
    return run([sys.executable, "-c", code])[1].strip()


def environment(device: str | None) -> dict:
    """Facts for the report, read in a child process (the environment the runs see)."""
    torch_info = json.loads(probe_python(
        "import json, torch; print(json.dumps({'torch': torch.__version__, "
        "'threads': torch.get_num_threads(), 'cuda': torch.cuda.is_available() and "
        "torch.cuda.get_device_name(0)}))"))
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": probe_python("from sirenup.inference.devices import cpu_model; print(cpu_model())"),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch_info["torch"],
        "torch_threads": torch_info["threads"],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": torch_info["cuda"] or None,
        "device": device or "default (auto)",
    }


def stats(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def upscale_commands(args: argparse.Namespace, inputs: dict[int, Path],
                     outputs: dict[int, Path]) -> dict[str, list[str]]:
    """The timed commands of one tree: --help, --version, one upscale per input."""
    commands = {"help": [*SIRENUP, "--help"], "version": [*SIRENUP, "--version"]}
    for side, path in inputs.items():
        cmd = [*SIRENUP, "upscale", str(path), "-o", str(outputs[side]),
               "--scale", f"{args.scale:g}"]
        if args.device:
            cmd += ["--device", args.device]
        if args.model:  # a file as an absolute path: each tree runs in its own folder
            model = Path(args.model)
            cmd += ["--model", str(model.resolve()) if model.is_file() else args.model]
        if args.tile is not None:
            cmd += ["--tile", str(args.tile)]
        commands[f"upscale_{side}"] = cmd
    return commands


def benchmark(args: argparse.Namespace) -> dict:
    photo = args.photo or find_photo()
    sides = (args.small, args.large)
    result: dict = {"photo": str(photo), "scale": args.scale, "repeats": args.repeats,
                    "warmup": args.warmup}
    trees = {"this": REPO} if args.against is None else {"this": REPO, "against": args.against}
    with tempfile.TemporaryDirectory(prefix="sirenup-bench-") as tmp:
        inputs = make_inputs(photo, Path(tmp), sides)
        outputs = {tree: {side: Path(tmp) / f"output_{tree}_{side}.png" for side in sides}
                   for tree in trees}
        commands = {tree: upscale_commands(args, inputs, outputs[tree]) for tree in trees}
        times = {tree: {name: [] for name in commands[tree]} for tree in trees}
        for round_ in range(args.warmup + args.repeats):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))  # ABBA
            for tree in order:
                for name, cmd in commands[tree].items():
                    seconds, _ = run(cmd, trees[tree])
                    if round_ >= args.warmup:
                        times[tree][name].append(seconds)
            print(f"round {round_ + 1}/{args.warmup + args.repeats}"
                  f"{' (warm-up)' if round_ < args.warmup else ''}: "
                  + "; ".join(f"{tree} " + ", ".join(f"{n} {t[-1]:.2f}s"
                                                     for n, t in times[tree].items() if t)
                              for tree in trees if times[tree]["help"]),
                  file=sys.stderr, flush=True)
        for tree in trees:
            sub = result if tree == "this" else result.setdefault(tree, {"tree": str(trees[tree])})
            sub.update(summarise(times[tree], outputs[tree], sides))
            sub["commands"] = {  # as a reader would type them
                name: shlex.join(["python", *cmd[1:]]).replace(tmp, "$TMP")
                for name, cmd in commands[tree].items()}
    if "against" in result:
        result["comparison"] = compare(result, result["against"], args.large)
    result["cli_imports_torch"] = probe_python(
        "import sys, sirenup.cli.app; print('torch' in sys.modules)") == "True"
    return result


def summarise(times: dict[str, list[float]], outputs: dict[int, Path],
              sides: tuple[int, int]) -> dict:
    """Medians per command, output sizes, and the throughput after start-up of one tree."""
    summary: dict = {"runs": {name: stats(t) for name, t in times.items()}}
    out_mp = {}
    for side, path in outputs.items():
        with Image.open(path) as im:
            out_mp[side] = im.size[0] * im.size[1] / 1e6
            summary[f"output_{side}"] = list(im.size)
    summary["out_mp"] = {str(side): mp for side, mp in out_mp.items()}
    small, large = (summary["runs"][f"upscale_{s}"]["median_s"] for s in sides)
    d_mp, d_t = out_mp[sides[1]] - out_mp[sides[0]], large - small
    summary["throughput_mp_per_s"] = d_mp / d_t if d_t > 0 else None
    summary["startup_estimate_s"] = (small - out_mp[sides[0]] * d_t / d_mp) if d_mp else None
    return summary


def compare(this: dict, other: dict, large: int) -> dict:
    """This tree against the other: throughput share, and the median per-round ratio of the
    large upscale's wall times (other / this: above 1 = this tree is faster)."""
    a, b = this["throughput_mp_per_s"], other["throughput_mp_per_s"]
    pairs = [o / t for o, t in zip(other["runs"][f"upscale_{large}"]["times_s"],
                                   this["runs"][f"upscale_{large}"]["times_s"], strict=True)]
    return {"throughput_share": a / b if a and b else None,
            "large_speed_ratio_median": statistics.median(pairs), "large_speed_ratios": pairs}


def markdown(result: dict, env: dict, command: str, sides: tuple[int, int]) -> str:
    threads = f"{env['torch_threads']} torch threads"
    if env["omp_num_threads"]:
        threads += f" (OMP_NUM_THREADS={env['omp_num_threads']})"
    gpu = f", GPU {env['gpu']}" if env["gpu"] else ""
    against = result.get("against")
    lines = [
        f"Whole-process timings, {env['date']}: {env['cpu']} ({env['cpu_count']} logical CPUs)"
        f"{gpu}, Python {env['python']}, torch {env['torch']}, {threads}, device "
        f"{env['device']}; median (min) of {result['repeats']} interleaved rounds after "
        f"{result['warmup']} warm-up"
        + (f", each round running this tree and `{against['tree']}` (ABBA)." if against
           else "."),
        "",
        f"Command: `{command}`  ",
        f"Input: centre crops of `{Path(result['photo']).name}`; upscale runs "
        f"`{result['commands'][f'upscale_{sides[1]}']}`.",
        "",
    ]
    lines += table_rows(result, sides, result["scale"])
    if against:
        lines += ["", f"From `{against['tree']}`:", ""]
        lines += table_rows(against, sides, result["scale"])
        c = result["comparison"]
        share = "n/a" if c["throughput_share"] is None else f"{c['throughput_share']:.2f}"
        lines += ["", f"This tree's throughput after start-up over that tree's: **{share}**; "
                  f"median per-round speed ratio of the {sides[1]}x{sides[1]} upscale "
                  f"(that tree's time over this tree's): **{c['large_speed_ratio_median']:.3f}** "
                  f"(rounds: {', '.join(f'{r:.3f}' for r in c['large_speed_ratios'])})."]
    lines.append("")
    lines.append(f"`import sirenup.cli.app` imports torch: "
                 f"**{'yes' if result['cli_imports_torch'] else 'no'}**")
    return "\n".join(lines)


def table_rows(result: dict, sides: tuple[int, int], scale: float) -> list[str]:
    """One tree's table: --help, --version, each upscale, throughput and start-up."""
    lines = ["| measurement | median s | min s | output MP | output MP/s |",
             "|---|---:|---:|---:|---:|"]
    runs = result["runs"]
    for name, label in (("help", "`sirenup --help`"), ("version", "`sirenup --version`")):
        lines.append(f"| {label} | {runs[name]['median_s']:.2f} | {runs[name]['min_s']:.2f} "
                     "| | |")
    for side in sides:
        r, mp = runs[f"upscale_{side}"], result["out_mp"][str(side)]
        w, h = result[f"output_{side}"]
        lines.append(f"| `sirenup upscale` x{scale:g}, {side}x{side} -> "
                     f"{w}x{h} | {r['median_s']:.2f} | {r['min_s']:.2f} | {mp:.2f} "
                     f"| {mp / r['median_s']:.2f} |")
    tp, su = result["throughput_mp_per_s"], result["startup_estimate_s"]
    lines.append(f"| throughput after start-up ({sides[1]} vs {sides[0]}) | | | | "
                 f"{'n/a' if tp is None else f'{tp:.2f}'} |")
    lines.append(f"| estimated start-up (intercept) | {'n/a' if su is None else f'{su:.2f}'} "
                 "| | | |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds first, to warm the disk cache (default 1)")
    parser.add_argument("--scale", type=float, default=4.0, help="upscale factor (default 4)")
    parser.add_argument("--device", help="passed to `sirenup upscale --device` (default: its own)")
    parser.add_argument("--model", help="passed to `sirenup upscale --model`")
    parser.add_argument("--tile", type=int, help="passed to `sirenup upscale --tile`")
    parser.add_argument("--photo", type=Path,
                        help=f"source photo (default: first PNG under {TRAIN}, else the "
                             "bundled sample)")
    parser.add_argument("--small", type=int, default=256, help="small input side (default 256)")
    parser.add_argument("--large", type=int, default=768, help="large input side (default 768)")
    parser.add_argument("--against", type=Path,
                        help="another source tree (a worktree of an earlier commit): each round "
                             "also runs its CLI, and the report compares the two")
    parser.add_argument("--out", type=Path, help="write the raw results as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if not 0 < args.small < args.large:
        parser.error("need 0 < --small < --large")
    if args.against and not (args.against / "sirenup" / "__main__.py").is_file():
        parser.error(f"--against {args.against}: not a sirenup source tree")
    if args.photo and not args.photo.is_file():
        parser.error(f"--photo {args.photo}: no such file")

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    env = environment(args.device)
    result = benchmark(args)
    print(markdown(result, env, command, (args.small, args.large)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": command, "environment": env, **result},
                                       indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
