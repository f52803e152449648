"""What a newcomer meets: whole table rows in a pipe, hints that name the way out, plurals,
the right blame for a wrong hash, bench's plan, the README's quick start."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sirenup.text import plural

ROOT = Path(__file__).resolve().parents[1]


def test_plural():
    assert plural(1, "step") == "1 step" and plural(2, "step") == "2 steps"
    assert plural(0, "run") == "0 runs" and plural(1, "run") == "1 run"


def test_models_list_piped_gives_one_line_per_model():
    out = subprocess.run([sys.executable, "-m", "sirenup", "models", "list"],
                         capture_output=True, text=True, check=True).stdout
    for name in ("sirenup-base", "sirenup-gan", "sirenup-real"):
        rows = [line for line in out.splitlines() if name + " " in line]
        assert len(rows) == 1, out
        assert f"{name}.safetensors" in rows[0]  # the path whole on the row
    assert "degradations)" in next(line for line in out.splitlines() if "sirenup-real " in line)


def test_batch_counts_subfolders_it_did_not_search(invoke, tmp_path):
    folder = tmp_path / "in"
    (folder / "one").mkdir(parents=True)
    (folder / "two").mkdir()
    (folder / ".hidden").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    result = invoke("batch", folder, tmp_path / "out", "--scale", "2", "--json")
    assert result.exit_code == 0, result.output
    assert "2 subfolders not searched (--recursive goes through them)" in result.stderr
    assert '"subfolders_not_searched": 2' in result.stdout
    result = invoke("batch", folder, tmp_path / "out2", "--scale", "2", "--recursive")
    assert "not searched" not in result.stderr


def test_wrong_hash_for_a_cached_url_blames_the_hash(cache_root, capsys, monkeypatch):
    from sirenup.hub import cache, download
    from sirenup.hub.download import ChecksumError
    from tests.loopback_server import LoopbackServer

    monkeypatch.setattr(download, "verbose", True)
    data = (ROOT / "sirenup" / "assets" / "sirenup-base.safetensors").read_bytes()
    with LoopbackServer({"/m.safetensors": data}) as server:
        url = server.url("/m.safetensors")
        cache.ensure(url)
        capsys.readouterr()
        with pytest.raises(ChecksumError, match="check the hash you gave"):
            cache.ensure(f"{url}#sha256={'1' * 64}")
    err = capsys.readouterr().err
    assert "is intact" in err and "the URL's #sha256= is 1111" in err
    assert "does not match" not in err


def test_bench_announces_its_plan_and_how_to_shorten_it():
    from sirenup.cli.bench import plan_line

    line = plan_line("sirenup-base", "auto", [256, 512], [4.0], 3, 1)
    assert "2 cases" in line and "8 model runs" in line and "--sizes 256 --repeats 1" in line
    line = plan_line("sirenup-base", "cpu", [32], [2.0], 1, 0)
    assert "1 case " in line and "1 timed run" in line and "shorter" not in line


def test_readme_quick_start_installs_cpu_torch_first():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Quick start")
    quick = readme[start:readme.index("\n## ", start + 1)]
    code = "\n".join(re.findall(r"```bash\n(.*?)```", quick, flags=re.S))  # the commands
    installs = [line for line in code.splitlines() if "pip install" in line]
    torch_lines = [line for line in installs if "torch" in line]
    assert torch_lines and "download.pytorch.org/whl/cpu" in torch_lines[0]
    first_package = next(i for i, line in enumerate(installs) if "sirenup" in line
                         or "-e ." in line or "pip install ." in line)
    assert installs.index(torch_lines[0]) < first_package  # torch before the package
    assert "GPU" in quick[:quick.index(torch_lines[0])]


def test_gitignore_covers_the_venv_and_the_quick_start_output():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".venv/" in ignored and "sample_x4.png" in ignored


@pytest.mark.parametrize(("cuda", "noted"), [
    ({"built": True, "available": False, "driver": None, "build_version": "13.0"}, True),
    ({"built": False, "available": False, "driver": None, "build_version": None}, False),
    ({"built": True, "available": True, "driver": "580.1", "build_version": "13.0"}, False),
])
def test_doctor_notes_a_cuda_build_without_a_gpu(monkeypatch, cuda, noted):
    from sirenup.diagnostics import doctor

    monkeypatch.setattr(doctor, "cuda_libraries_bytes", lambda: 4 * 2**30)
    notes = doctor.notes_of({"cuda": cuda, "versions": {"torch": "2.14.1+cu130"}})
    assert bool(notes) == noted
    if noted:
        assert "no NVIDIA GPU" in notes[0]["message"]
        assert "save about 4.0 GiB" in notes[0]["hint"]
        assert "download.pytorch.org/whl/cpu" in notes[0]["hint"]


def test_doctor_shows_the_note_without_failing(invoke, monkeypatch):
    from sirenup.diagnostics import doctor
    from sirenup.inference import devices

    real = devices.cuda_report
    monkeypatch.setattr(devices, "cuda_report", lambda: {
        **real(), "built": True, "available": False, "driver": None, "build_version": "13.0",
        "error": None})
    monkeypatch.setattr(doctor, "problems_of", lambda report: [])
    result = invoke("doctor", "--quick")
    assert result.exit_code == 0, result.output
    assert "note:" in result.stdout and "CPU-only build would save" in result.stdout
