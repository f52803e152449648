"""Start-up guard: a 256x256 x4 ``sirenup upscale``, whole process, against
``python -c "import torch"`` (medians of 5 runs each, interleaved).

    python benchmarks/startup.py [--runs 5] [--limit 1.0]

Prints both medians and their difference; exits 1 when the difference is over ``--limit``
seconds. Run it on an idle machine: on a busy one both medians grow, and the difference with
the model's compute.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def seconds(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - began


def measure(runs: int) -> tuple[float, float]:
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        src, out = Path(folder, "in.png"), Path(folder, "out.png")
        rng = np.random.default_rng(0)
        Image.fromarray((rng.random((256, 256, 3)) * 255).astype(np.uint8)).save(src)
        torch_only = [sys.executable, "-c", "import torch"]
        upscale = [sys.executable, "-m", "sirenup", "upscale", str(src), "-o", str(out),
                   "--scale", "4"]
        seconds(upscale)  # warm the file cache: the first run reads torch from disk
        base, full = [], []
        for _ in range(runs):
            base.append(seconds(torch_only))
            full.append(seconds(upscale))
    return statistics.median(base), statistics.median(full)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--limit", type=float, default=1.0)
    args = parser.parse_args()
    base, full = measure(args.runs)
    print(f"import torch: median {base:.2f} s; 256x256 x4 upscale: median {full:.2f} s; "
          f"difference {full - base:.2f} s (limit {args.limit:.2f} s)")
    return 0 if full - base <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
