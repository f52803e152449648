#!/usr/bin/env python
"""In-process speed of the model's two halves: the encoder and the grid decoder, per output MP.

Runs the bundled model (or --model) on a random LR tile the way the tiler does (bands of
output rows, cache-sized blocks of queries) and reports medians over --rounds. With
``--baseline-rev REV`` it also loads ``sirenup/models/patch_siren.py`` as it was at git
revision REV, gives it the same weights, and alternates the two decoders round by round on the
same encoded tile: the per-round ratio is the figure to read on a noisy machine. CPU time
(``time.process_time``) is reported beside wall time because other processes inflate it far less.

    python benchmarks/decode_speed.py --scale 4 --threads 1
    python benchmarks/decode_speed.py --scale 4 --threads 1 --rounds 15 --baseline-rev HEAD~1
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def load_baseline_module(rev: str):
    """patch_siren.py at git revision ``rev``, imported as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:sirenup/models/patch_siren.py"],
        check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "patch_siren_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("patch_siren_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def timed(fn) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=192, help="LR tile side (default 192)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--model", default="sirenup-base")
    parser.add_argument("--baseline-rev", help="git revision whose decoder to alternate with")
    args = parser.parse_args(argv)

    from sirenup.inference.devices import decode_sizes
    from sirenup.inference.tiler import decode_bands
    from sirenup.inference.upscaler import load_upscaler

    torch.set_num_threads(args.threads)
    model = load_upscaler(args.model, device="cpu").model
    models = {"current": model}
    if args.baseline_rev:
        old = load_baseline_module(args.baseline_rev)
        baseline = old.LiifSiren(config=old.LiifSirenConfig.from_dict(model.config.to_dict()))
        baseline.load_state_dict(model.state_dict())
        models["baseline"] = baseline.eval()

    h = w = args.size
    out_h, out_w = round(h * args.scale), round(w * args.scale)
    out_mp = out_h * out_w / 1e6
    lr = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    sizes = decode_sizes(torch.device("cpu"), args.scale)

    def decode(m, pre):
        bands = decode_bands(m, pre, lr, (out_h, out_w), (h, w), (0, out_h), (0, out_w), (0, 0),
                             sizes)
        return torch.cat([band for _, _, band in bands])

    with torch.no_grad():
        pre = model.encode(lr)
        if "baseline" in models:
            diff = (decode(model, pre) - decode(models["baseline"], pre)).abs().max().item()
            print(f"max |current - baseline| = {diff:.3g}")
        encode = [timed(lambda: model.encode(lr)) for _ in range(args.rounds)]
        times = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, m in models.items():
                times[name].append(timed(lambda m=m: decode(m, pre)))

    cpu_encode = statistics.median(c for c, _ in encode)
    print(f"x{args.scale:g}, {h}x{w} -> {out_w}x{out_h} ({out_mp:.2f} MP), {args.threads} "
          f"thread(s), median of {args.rounds}")
    print(f"  encoder: {cpu_encode / out_mp:.3f} CPU s per output MP "
          f"({statistics.median(t for _, t in encode) / out_mp:.3f} wall)")
    for name, runs in times.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(t for _, t in runs)
        print(f"  decoder ({name}): {cpu / out_mp:.3f} CPU s per output MP ({wall / out_mp:.3f} "
              f"wall), {out_mp / wall:.2f} output MP/s")
    if "baseline" in times:
        ratios = [c / b for (c, _), (b, _) in zip(times["current"], times["baseline"],
                                                   strict=True)]
        print(f"  current / baseline, CPU time per round: median {statistics.median(ratios):.3f} "
              f"(range {min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
