"""The model registry, ``--model`` resolution, ``sirenup models``, and the issue's bar end to
end: the bundled weights served from a loopback server and used through
``--model http://127.0.0.1:PORT/m.safetensors#sha256=...``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import SMALL, no_traceback, one_error_line, sirenup, write_png
from loopback_server import LoopbackServer

from sirenup import files
from sirenup.cli.app import app
from sirenup.errors import UsageError
from sirenup.hub import download, registry
from sirenup.hub.registry import REGISTRY, ModelEntry, bundled_path, resolve
from sirenup.models.patch_siren import LiifSiren
from sirenup.models.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]
BASE = bundled_path(REGISTRY["sirenup-base"])
BASE_BYTES = BASE.read_bytes()
BASE_SHA = hashlib.sha256(BASE_BYTES).hexdigest()



@pytest.fixture
def server():
    with LoopbackServer({"/m.safetensors": BASE_BYTES}) as srv:
        yield srv


def run(runner, *args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def files_under(root: Path) -> list[Path]:
    """Files under ``root``, but the empty lock files ``filelock`` leaves (by design)."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock")


# -- registry ----------------------------------------------------------------------------------

def test_registry_matches_the_bundled_files():
    """After retraining: python -m sirenup.hub.registry --update-bundled"""
    for entry in REGISTRY.values():
        if entry.bundled:
            stale = registry.stale_fields(entry)
            assert stale == {}, ("registry.json is stale for the bundled file; run: "
                                 f"python -m sirenup.hub.registry --update-bundled ({stale})")
    assert registry.main(["--check"]) == 0


def test_registry_entries_are_complete():
    assert registry.DEFAULT_MODEL in REGISTRY
    for entry in REGISTRY.values():
        assert entry.filename.endswith((".safetensors", ".pt", ".pth"))
        assert entry.sha256 and len(entry.sha256) == 64 and entry.size > 0
        assert entry.architecture == "liif-siren" and entry.config
        assert entry.license and entry.description
        assert 1.0 <= entry.scale_range[0] < entry.scale_range[1]
        assert entry.bundled or entry.url


def test_update_bundled_rewrites_what_changed(tmp_path):
    copy = tmp_path / "registry.json"
    data = json.loads(registry.registry_path().read_text())
    data["models"][0].update(sha256="0" * 64, size=1, config={"channels": 1})
    copy.write_text(json.dumps(data))
    assert registry.update_bundled(copy) == ["sirenup-base"]
    fixed = registry.load_registry(copy)["sirenup-base"]
    assert fixed.sha256 == BASE_SHA and fixed.size == len(BASE_BYTES)
    assert fixed.config == registry.file_facts(BASE)["config"]
    assert registry.update_bundled(copy) == []


# -- resolution --------------------------------------------------------------------------------

def test_resolve_names_paths_and_errors(tmp_path, cache_root):
    bundled = resolve("sirenup-base")
    assert bundled.source == "bundled" and bundled.path == BASE
    local = tmp_path / "mine.safetensors"
    shutil.copy(BASE, local)
    assert resolve(str(local)) == registry.ResolvedModel("mine", local, "local")
    with pytest.raises(UsageError, match="no such file"):
        resolve(str(tmp_path / "missing.safetensors"))
    with pytest.raises(UsageError, match="known: sirenup-base"):
        resolve("no-such-model")
    assert files_under(cache_root) == []


def test_resolve_url_and_registry_entry_with_url(cache_root, server, monkeypatch):
    url = f"{server.url('/m.safetensors')}#sha256={BASE_SHA}"
    from_url = resolve(url)
    assert from_url.source == "cache" and from_url.path.read_bytes() == BASE_BYTES
    monkeypatch.setitem(REGISTRY, "remote-base", ModelEntry(
        name="remote-base", filename="m.safetensors", sha256=BASE_SHA, size=len(BASE_BYTES),
        url=server.url("/m.safetensors"), bundled=False))
    named = resolve("remote-base")
    assert named.name == "remote-base" and named.path == from_url.path  # one entry per URL
    assert server.gets("/m.safetensors") == [None]


# -- sirenup models ----------------------------------------------------------------------------

def test_models_commands(runner, cache_root, server, monkeypatch):
    url = f"{server.url('/m.safetensors')}#sha256={BASE_SHA}"
    result = run(runner, "models", "download", url)
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.read_bytes() == BASE_BYTES and path.is_relative_to(cache_root)

    listed = json.loads(run(runner, "models", "list", "--json").stdout)
    assert listed["cache_dir"] == str(cache_root)
    rows = {row["source"]: row for row in listed["models"]}
    bundled_rows = [row for row in listed["models"] if row["source"] == "bundled"]
    assert [row["name"] for row in bundled_rows] == ["sirenup-base", "sirenup-gan",
                                                      "sirenup-real"]
    assert all(row["verified"] is True for row in bundled_rows)
    assert rows["cached"]["path"] == str(path) and rows["cached"]["verified"] is True
    for key in ("name", "size", "source", "verified", "path", "sha256"):
        assert key in rows["cached"]
    table = run(runner, "models", "list")
    assert table.exit_code == 0 and "sirenup-base" in table.stdout  # a result: stdout

    assert run(runner, "models", "path").stdout.strip() == str(cache_root)
    assert run(runner, "models", "path", url).stdout.strip() == str(path)
    assert run(runner, "models", "path", "sirenup-base").stdout.strip() == str(BASE)
    assert run(runner, "models", "verify").exit_code == 0

    path.write_bytes(b"corrupt")
    failed = run(runner, "models", "verify", "--json")
    assert failed.exit_code == 1
    assert [m["verified"] for m in json.loads(failed.stdout)["models"]] == [True, True, True, False]

    assert run(runner, "models", "remove", "sirenup-base").exit_code == 2
    assert run(runner, "models", "remove", url).exit_code == 0
    assert not path.exists()
    gone = run(runner, "models", "path", url)
    assert gone.exit_code == 1 and "sirenup models download" in gone.stderr
    assert run(runner, "models", "remove", url).exit_code == 1
    quiet = run(runner, "--quiet", "models", "download", url)
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout.strip() == str(path)
    assert run(runner, "models", "remove", "--all").exit_code == 0
    assert files_under(cache_root) == []


def test_models_download_registry_name(runner, cache_root, server, monkeypatch):
    monkeypatch.setitem(REGISTRY, "remote-base", ModelEntry(
        name="remote-base", filename="m.safetensors", sha256=BASE_SHA, size=len(BASE_BYTES),
        url=server.url("/m.safetensors"), bundled=False))
    before = {r["name"]: r for r in json.loads(run(runner, "models", "list", "--json").stdout)
              ["models"]}
    assert before["remote-base"]["source"] == "remote"
    result = run(runner, "models", "download", "remote-base")
    assert result.exit_code == 0, result.output
    after = {r["name"]: r for r in json.loads(run(runner, "models", "list", "--json").stdout)
             ["models"]}
    assert after["remote-base"]["source"] == "cached" and after["remote-base"]["verified"]
    assert run(runner, "models", "verify", "remote-base").exit_code == 0
    assert run(runner, "models", "remove", "remote-base").exit_code == 0
    bundled = run(runner, "models", "download", "sirenup-base")
    assert bundled.exit_code == 0 and bundled.stdout.strip() == str(BASE)


# -- the bar, through the CLI ----------------------------------------------------------

def test_bar_url_model_cached_offline_wrong_hash(runner, make_image, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)
    image = make_image("in.png", size=(16, 16))
    store, other = tmp_path / "store", tmp_path / "other"
    env = {"SIRENUP_CACHE_DIR": str(store), "SIRENUP_OFFLINE": None}
    with LoopbackServer({"/m.safetensors": BASE_BYTES}) as server:
        url = server.url("/m.safetensors")
        first = run(runner, "upscale", image, "-o", tmp_path / "a.png", "--scale", "2",
                    "--device", "cpu", "--model", f"{url}#sha256={BASE_SHA}", env=env)
        assert first.exit_code == 0, first.output
        assert "on cpu" in first.stderr  # the device used is reported
        cached = [p for p in files_under(store) if p.suffix == ".safetensors"]
        assert len(cached) == 1 and hashlib.sha256(cached[0].read_bytes()).hexdigest() == BASE_SHA

        wrong = run(runner, "upscale", image, "-o", tmp_path / "b.png", "--device", "cpu",
                    "--model", f"{url}#sha256={'f' * 64}",
                    env={"SIRENUP_CACHE_DIR": str(other)})
        assert wrong.exit_code != 0 and "sha256" in wrong.stderr
        no_traceback(wrong)
        assert files_under(other) == [] and not (tmp_path / "b.png").exists()
        assert len(server.gets("/m.safetensors")) == 2

    offline = {"SIRENUP_CACHE_DIR": str(store), "SIRENUP_OFFLINE": "1"}
    again = run(runner, "upscale", image, "-o", tmp_path / "c.png", "--scale", "2",
                "--device", "cpu", "--model", f"{url}#sha256={BASE_SHA}", env=offline)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "c.png").is_file()

    missing = run(runner, "upscale", image, "-o", tmp_path / "d.png", "--device", "cpu",
                  "--model", url.replace("/m.", "/other."), env=offline)
    assert missing.exit_code != 0 and "SIRENUP_OFFLINE" in missing.stderr
    no_traceback(missing)


def test_bar_in_a_real_process(make_image, tmp_path):
    """The same through the installed entry point, in a fresh process: download, then offline
    with the server gone; every error one line, no traceback."""
    image = make_image("in.png", size=(16, 16))
    env = {**os.environ, "SIRENUP_CACHE_DIR": str(tmp_path / "store"), "PYTHONPATH": str(ROOT)}
    with LoopbackServer({"/m.safetensors": BASE_BYTES}) as server:
        url = server.url("/m.safetensors")
        out = subprocess.run(
            [sys.executable, "-m", "sirenup", "models", "download", f"{url}#sha256={BASE_SHA}"],
            env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        cached = Path(out.stdout.strip())
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == BASE_SHA
    env["SIRENUP_OFFLINE"] = "1"
    out = subprocess.run(
        [sys.executable, "-m", "sirenup", "upscale", str(image), "-o", str(tmp_path / "o.png"),
         "--scale", "2", "--model", f"{url}#sha256={BASE_SHA}", "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "o.png").is_file() and "on cpu" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "sirenup", "models", "download", url.replace("/m.", "/x.")],
        env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "SIRENUP_OFFLINE" in out.stderr and len(out.stderr.strip().splitlines()) == 1


# -- failures: one line, the right exit code, nothing partial, nothing of the user's replaced ------

def test_broken_cache_entry_says_how_to_remove_it(invoke, cache_root, make_image):
    with LoopbackServer({"/m.safetensors": BASE_BYTES}) as server:
        url = server.url("/m.safetensors")
        assert invoke("models", "download", url).exit_code == 0
    [meta] = list(cache_root.rglob("meta.json"))
    weights = meta.parent / "m.safetensors"
    # damaged after download, with meta.json rewritten to match (so it is not re-fetched)
    model = LiifSiren(config=SMALL)
    save_weights(weights, model)
    state = json.loads(meta.read_text())
    state.update(size=weights.stat().st_size, sha256=files.sha256_file(weights))
    meta.write_text(json.dumps(state))
    bad = dict(model.state_dict())
    bad["decoder.out.bias"] = torch.tensor([float("nan")] * 3)
    from safetensors.torch import save_file

    save_file(bad, str(weights), metadata={"architecture": "liif-siren",
                                           "config": json.dumps(SMALL.to_dict())})
    state.update(size=weights.stat().st_size, sha256=files.sha256_file(weights))
    meta.write_text(json.dumps(state))
    result = invoke("-q", "upscale", make_image("in.png"), "--model", url, "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert f"sirenup models remove {meta.parent.name}" in line


def test_cache_entry_pointing_outside_is_ignored(invoke, cache_root, tmp_path):
    entry = cache_root / "models" / "evil-0123456789ab"
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps({"filename": "../../../secret", "size": 1}))
    listed = invoke("models", "list", "--json")
    assert listed.exit_code == 0
    assert [r for r in json.loads(listed.stdout)["models"] if r["source"] == "cached"] == []


def test_model_folder_is_named_as_a_folder(invoke, tmp_path):
    folder = tmp_path / "weights.safetensors"
    folder.mkdir()
    result = invoke("upscale", write_png(tmp_path / "a.png"), "--model", folder,
                    "--device", "cpu")
    assert result.exit_code == 2
    assert "is a folder" in one_error_line(result)


@pytest.mark.parametrize("blocker", ["cache_is_a_file", "lock_is_a_folder"])
def test_unusable_cache_is_one_clear_line(invoke, tmp_path, monkeypatch, blocker):
    from sirenup.hub import cache

    root = tmp_path / "cache"
    monkeypatch.setenv("SIRENUP_CACHE_DIR", str(root))
    url = BASE.as_uri()
    if blocker == "cache_is_a_file":
        root.write_text("not a folder")
    else:
        cache.lock_path(cache.entry_id(url)).mkdir(parents=True)
    result = invoke("-q", "models", "download", url)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "SIRENUP_CACHE_DIR" in line and "Error:" not in line


def test_mistyped_cache_meta_is_ignored(invoke, cache_root):
    entry = cache_root / "models" / "m-0123456789ab"
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps(
        {"filename": "m.safetensors", "size": "abc", "sha256": 5, "pinned": "yes"}))
    (entry / "m.safetensors").write_bytes(b"junk")
    for args in (("models", "list"), ("models", "list", "--json"), ("models", "verify")):
        result = invoke(*args)
        no_traceback(result)
        assert result.exit_code == 0, result.output
        assert "m-0123456789ab" not in result.stdout


def test_cache_dir_with_an_unknown_user_is_kept_literal(invoke, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIRENUP_CACHE_DIR", "~no_such_user_for_sirenup/cache")
    for args in (("models", "list"), ("doctor", "--quick", "--json")):
        result = invoke(*args)
        no_traceback(result)
        assert "home directory" not in result.output
    assert invoke("models", "list").exit_code == 0
    model = invoke("upscale", write_png(tmp_path / "a.png"), "--model",
                   "~no_such_user_for_sirenup/w.safetensors", "--device", "cpu")
    assert model.exit_code == 2 and "no such file" in one_error_line(model)


@pytest.mark.parametrize("spec", ["ftp://host/m.safetensors", "s3://bucket/m.safetensors"])
def test_model_url_of_another_scheme_says_so(invoke, tmp_path, spec):
    result = invoke("upscale", write_png(tmp_path / "a.png"), "--model", spec,
                    "--device", "cpu")
    assert result.exit_code == 2
    assert "only http://, https:// and file:// URLs" in one_error_line(result)


def test_models_remove_all_removes_only_what_sirenup_created(invoke, tmp_path, monkeypatch):
    from sirenup.hub import cache

    monkeypatch.setenv("SIRENUP_CACHE_DIR", str(tmp_path / "shared"))
    entry = cache.ensure(BASE.as_uri())
    interrupted = cache.models_dir() / "m-0123456789ab"
    interrupted.mkdir()
    (interrupted / "m.safetensors.1-abcd.incomplete").write_bytes(b"partial")
    models = cache.models_dir()
    (models / "notes.txt").write_text("mine")
    (models / "photos").mkdir()
    (models / "photos" / "cat.png").write_bytes(b"mine too")
    (models / "looks-like-0123456789ab").mkdir()
    (models / "looks-like-0123456789ab" / "thesis.pdf").write_bytes(b"mine as well")
    result = invoke("models", "remove", "--all")
    assert result.exit_code == 0, result.output
    assert "removed 1 cached model," in result.stderr and "left 3" in result.stderr
    assert not entry.dir.exists() and not interrupted.exists()
    assert (models / "notes.txt").read_text() == "mine"
    assert (models / "photos" / "cat.png").read_bytes() == b"mine too"
    assert (models / "looks-like-0123456789ab" / "thesis.pdf").exists()


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_cache_meta_json_that_never_ends_is_not_waited_on(tmp_path, kind):
    from sirenup.hub import cache

    entry = tmp_path / "cache" / "models" / "m-0123456789ab"
    entry.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(entry / "meta.json")
    else:
        (entry / "meta.json").symlink_to("/dev/zero")
    result = sirenup("models", "list", "--json", timeout=60,
                     env={"SIRENUP_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["models"]
    assert cache.read_entry(entry) is None
