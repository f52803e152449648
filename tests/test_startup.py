"""Start-up stays light: --help and --version must not import torch."""

import subprocess
import sys

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

