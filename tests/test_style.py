"""The code base stays ruff-clean (configuration in pyproject.toml).

ruff is in the test extras (``pip install -e .[test]``), so this runs wherever the tests run:
a missing ruff is a failure that says how to install it, never a silent skip.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ruff_command() -> list[str] | None:
    if importlib.util.find_spec("ruff") is not None:  # the pip package: python -m ruff
        return [sys.executable, "-m", "ruff"]
    found = shutil.which("ruff")
    return [found] if found else None


def test_ruff_clean():
    command = ruff_command()
    assert command is not None, "ruff is not installed: pip install -e '.[test]'"
    result = subprocess.run([*command, "check", "sirenup", "tests", "benchmarks"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
