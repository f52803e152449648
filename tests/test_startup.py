"""Start-up stays light: --help and --version must not import torch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
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
    import numpy as np
    from PIL import Image

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
