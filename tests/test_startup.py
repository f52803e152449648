"""Start-up stays light: --help and --version must not import torch."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import png
from PIL import Image
from typer.testing import CliRunner

from sirenup import __version__
from sirenup.cli.app import app


def test_version_and_help_do_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from sirenup.cli.app import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['--version'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_version_prints_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "sirenup", "--version"], capture_output=True,
                         text=True)
    assert out.returncode == 0
    assert __version__ in out.stdout


def test_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "upscale", "batch", "compare", "bench"):
        assert command in result.output



def test_upscale_imports_only_what_it_uses(tmp_path):
    """What an upscale of a PNG imports: not Pillow's every plugin (Image.init), not the
    progress bar's modules (no terminal), not matplotlib. Each of these was, or would be,
    start-up time for every image."""

    src = tmp_path / "in.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src)
    code = (
        "import sys\n"
        "from sirenup.cli.app import main\n"
        f"sys.argv = ['sirenup', 'upscale', {str(src)!r}, '-o', {str(tmp_path / 'o.png')!r},"
        " '--scale', '2']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    modules = set(out.stdout.split())
    assert "torch" in modules and "PIL.PngImagePlugin" in modules
    for unwanted in ("PIL.TiffImagePlugin", "PIL.PdfParser", "PIL.DdsImagePlugin",
                     "rich.progress", "matplotlib"):
        assert unwanted not in modules, unwanted


@pytest.mark.skipif(not os.environ.get("SIRENUP_TIMING"),
                    reason="a timing guard: set SIRENUP_TIMING=1 on an idle machine")
def test_startup_guard():
    """256x256 x4 whole-process at most 1.0 s more than `import torch`, medians of 5."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import startup

    base, full = startup.measure(5)
    assert full - base <= 1.0, (base, full)


def test_help_does_not_import_the_download_machinery():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom sirenup.cli.app import app\n"
            "assert CliRunner().invoke(app, ['models', '--help']).exit_code == 0\n"
            "print('http.client' in sys.modules, 'sirenup.hub.download' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


# -- failures: one line, the right exit code, nothing partial, nothing of the user's replaced ------

NO_TORCH = """
import sys
from sirenup.cli.app import main
sys.argv = ["sirenup", *sys.argv[1:]]
try:
    main()
except SystemExit as done:
    assert "torch" not in sys.modules, "torch was imported"
    raise
"""


@pytest.mark.parametrize("case", [
    "upscale-scale", "upscale-missing-dir", "upscale-format", "upscale-webp-limit",
    "batch-scale", "batch-tile", "compare-both", "train-val", "train-run", "upscale-device",
    "batch-precision", "train-gan-loss", "train-device"])
def test_usage_errors_come_before_torch(tmp_path, case):
    src = png(tmp_path / "in.png")
    (tmp_path / "val").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"x")
    args, code = {
        "upscale-scale": (["upscale", src, "--scale", "0.5"], 2),
        "upscale-missing-dir": (["upscale", src, "-o", tmp_path / "no" / "x.png"], 2),
        "upscale-format": (["upscale", src, "-o", tmp_path / "x.png", "--format", "jpg"], 2),
        "upscale-webp-limit": (["upscale", src, "-o", tmp_path / "x.webp", "--width", "20000",
                                "--max-output-pixels", "0"], 1),
        "batch-scale": (["batch", src, tmp_path / "out", "--scale", "0.5"], 2),
        "batch-tile": (["batch", src, tmp_path / "out", "--tile", "3"], 2),
        "compare-both": (["compare", src, "--self", "--reference", src], 2),
        "train-val": (["train", tmp_path, "--out", tmp_path / "r2", "--val", tmp_path / "val"],
                      2),
        "train-run": (["train", tmp_path, "--out", tmp_path / "run"], 2),
        "upscale-device": (["upscale", src, "--device", "gpu"], 2),
        "batch-precision": (["batch", src, tmp_path / "out", "--precision", "fp8"], 2),
        "train-gan-loss": (["train", tmp_path, "--out", tmp_path / "r3", "--gan", "--gan-loss",
                            "bogus"], 2),
        "train-device": (["train", tmp_path, "--out", tmp_path / "r4", "--device", "tpu"], 2),
    }[case]
    result = subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "torch was imported" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_torch_free_spelling_checks_match_the_engines():
    from sirenup.defaults import MIN_TILE
    from sirenup.inference import devices, planning, tiler
    from sirenup.training import gan, loop, run_folder

    assert set(planning.PRECISION_NAMES) == set(devices.PRECISIONS) | set(devices._ALIASES)
    assert MIN_TILE == tiler.MIN_TILE
    assert (loop.CHECKPOINT, loop.WEIGHTS, loop.METRICS) == run_folder.RUN_FILES
    assert gan.GanConfig is not None
