#!/usr/bin/env python
"""Peak memory of one `sirenup` command, and which phase of an upscale it falls in.

Runs `sirenup ARGS` in this process (the tree in the current directory first on sys.path) while
a thread reads the resident set size from /proc/self/statm every 2 ms, and prints on stderr
the peak of each phase: model load, read, tiles (the model), write (to_pil: the encoder's copy
of the pixels; encode: the PNG/JPEG/... encoding), and getrusage's maximum (what
`/usr/bin/time -v` reports as "Maximum resident set size"). Linux only.

    /usr/bin/time -v nice -n 5 python benchmarks/peak_memory.py \\
        upscale in_4000x3000.png -o out.png --scale 2

The phases come from wrapping engine functions by name; a name that a tree lacks is skipped.
"""

from __future__ import annotations

import functools
import os
import resource
import sys
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
PHASES = [  # (module, attribute, phase)
    ("sirenup.inference.upscaler", "load_upscaler", "load"),
    ("sirenup.inference.upscaler", "read_image", "read"),
    ("sirenup.inference.upscaler", "Upscaler.upscale_into", "tiles"),
    ("sirenup.inference.upscaler", "resize_alpha", "alpha"),
    ("sirenup.inference.upscaler", "write_image", "write"),
    ("sirenup.inference.upscaler", "prepare_write", "write"),
    ("sirenup.imaging.imageio", "to_pil", "write:to_pil"),
    ("sirenup.imaging.imageio", "atomic_write", "write:encode"),
]


class Sampler(threading.Thread):
    """Peak RSS per phase; the phase is whatever ``self.phase`` says at each sample."""

    def __init__(self):
        super().__init__(daemon=True)
        self.phase, self.peaks, self.running = "start", {}, True

    def run(self):
        while self.running:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * PAGE
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)
            time.sleep(0.002)


def wrap(sampler: Sampler, module: str, attribute: str, phase: str) -> None:
    owner = __import__(module, fromlist=["_"])
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    function = getattr(owner, name, None)
    if function is None:
        return

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        before, sampler.phase = sampler.phase, phase
        try:
            return function(*args, **kwargs)
        finally:
            sampler.phase = f"after {phase}" if before == "start" else before

    setattr(owner, name, wrapped)


def main() -> None:
    sys.path.insert(0, os.getcwd())
    sampler = Sampler()
    sampler.start()
    for module, attribute, phase in PHASES:
        wrap(sampler, module, attribute, phase)
    from sirenup.cli.app import main as sirenup

    sys.argv = ["sirenup", *sys.argv[1:]]
    try:
        sirenup()
    except SystemExit:
        pass
    finally:
        sampler.running = False
        sampler.join()
        for phase, peak in sampler.peaks.items():
            print(f"{phase:16s} {peak / 2**20:8.1f} MiB", file=sys.stderr)
        maximum = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"ru_maxrss        {maximum} KiB = {maximum * 1024 / 1e9:.3f} GB", file=sys.stderr)


if __name__ == "__main__":
    main()
