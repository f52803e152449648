"""Shell completions: completions/ holds bash, zsh and fish scripts generated from the app
(stale scripts fail here: run ``python completions/generate.py``); they know the commands and
option values; Typer's dynamic completion and ``--install-completion`` work."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sirenup.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["train", "upscale", "batch", "bench", "models", "doctor"]
MODELS_COMMANDS = ["list", "download", "verify", "path", "remove"]


@pytest.fixture(scope="module")
def generate():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "completions" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tree(generate):
    return generate.command_tree()


def test_scripts_are_up_to_date(generate, tree):
    stale = generate.stale(tree)
    assert stale == [], f"stale completions for {stale}: run python completions/generate.py"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_scripts_know_the_commands(shell):
    text = (ROOT / "completions" / f"sirenup.{shell}").read_text()
    long = "-l " if shell == "fish" else "--"
    for word in COMMANDS + MODELS_COMMANDS + [f"{long}device", f"{long}precision", "fp16",
                                              "bf16", "sirenup-base", f"{long}json"]:
        assert word in text, word


def test_tree_matches_the_app(tree):
    names = [c.path[-1] for c in tree.subcommands]
    assert set(COMMANDS) <= set(names)
    models = next(c for c in tree.subcommands if c.path[-1] == "models")
    assert [c.path[-1] for c in models.subcommands] == MODELS_COMMANDS


BASH_CASES = [
    ("sirenup mo", ["models"]),
    ("sirenup models ", MODELS_COMMANDS),
    ("sirenup models download ", ["sirenup-base", "sirenup-gan", "sirenup-real"]),
    ("sirenup upscale --dev", ["--device"]),
    ("sirenup upscale --device ", ["auto", "cpu", "cuda", "mps"]),
    ("sirenup --quiet upscale --precision ", ["auto", "fp32", "fp16", "bf16"]),
    ("sirenup upscale pho", ["photo.png"]),
    ("sirenup doctor --j", ["--json"]),
]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_script_completes(tmp_path):
    (tmp_path / "photo.png").touch()
    lines = [f"source {ROOT / 'completions' / 'sirenup.bash'}",
             't() { read -ra COMP_WORDS <<< "$1"; [[ "$1" == *" " ]] && COMP_WORDS+=("");'
             ' COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMPREPLY=(); _sirenup;'
             ' echo "${COMPREPLY[*]}"; }']
    lines += [f"t '{line}'" for line, _ in BASH_CASES]
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", "\n".join(lines)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    got = out.stdout.splitlines()
    for (line, expected), answer in zip(BASH_CASES, got, strict=True):
        assert answer.split() == expected, line


@pytest.mark.parametrize("shell,check", [("zsh", ["zsh", "-n"]),
                                         ("fish", ["fish", "--no-execute"])])
def test_other_scripts_parse(shell, check):
    if shutil.which(check[0]) is None:
        pytest.skip(f"{shell} is not installed")
    out = subprocess.run(check + [str(ROOT / "completions" / f"sirenup.{shell}")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_dynamic_completion(runner):
    env = {"_SIRENUP_COMPLETE": "complete_bash", "COMP_WORDS": "sirenup models d",
           "COMP_CWORD": "2"}
    result = runner.invoke(app, [], env=env, prog_name="sirenup")
    assert result.exit_code == 0
    assert result.stdout.split() == ["download"]


def test_install_completion(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = runner.invoke(app, ["--install-completion", "bash"], prog_name="sirenup")
    assert result.exit_code == 0, result.output
    script = tmp_path / ".bash_completions" / "sirenup.sh"
    assert "_SIRENUP_COMPLETE" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()
