"""Verified downloads into the cache, against an HTTP server on 127.0.0.1 that each test
starts: first download, reuse without a request, sha256 mismatch, a dropped connection
resumed, 404, retries, offline mode, two processes at once, a corrupted entry fetched again."""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from loopback_server import LoopbackServer

from sirenup.errors import UsageError
from sirenup.hub import cache, download
from sirenup.hub.download import ChecksumError, DownloadError, OfflineError

ROOT = Path(__file__).resolve().parents[1]
# Real weights (downloads must load as weights to enter the cache): several 64 KiB chunks.
DATA = (ROOT / "sirenup" / "assets" / "sirenup-base.safetensors").read_bytes()
SHA = hashlib.sha256(DATA).hexdigest()
PATH = "/m.safetensors"


@pytest.fixture
def cache_root(cache_root, monkeypatch) -> Path:
    """conftest's empty cache, plus short time-outs and download messages on."""
    monkeypatch.setattr(download, "TIMEOUT_S", 10.0)
    monkeypatch.setattr(download, "verbose", True)
    return cache_root


@pytest.fixture
def server():
    with LoopbackServer({PATH: DATA}) as srv:
        yield srv


def files_under(root: Path) -> list[Path]:
    """Files under ``root``, but the empty lock files ``filelock`` leaves (by design)."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock")


def assert_clean(root: Path) -> None:
    """No partial downloads left (empty lock files stay: see cache.FileLock)."""
    leftovers = [p for p in files_under(root) if p.suffix == ".incomplete"]
    assert leftovers == []


def test_first_download_then_cache_without_a_request(cache_root, server, capsys):
    entry = cache.ensure(f"{server.url(PATH)}#sha256={SHA}")
    assert entry.path.read_bytes() == DATA
    assert entry.path.is_relative_to(cache_root / "models")
    assert entry.sha256 == SHA and entry.meta["size"] == len(DATA)
    assert server.gets(PATH) == [None]
    assert_clean(cache_root)
    err = capsys.readouterr().err
    assert "downloading" in err and "%|" not in err  # no progress bar: stderr is no terminal

    again = cache.ensure(f"{server.url(PATH)}#sha256={SHA}")
    assert again.path == entry.path
    assert server.gets(PATH) == [None]  # no second request
    server.stop()
    assert cache.ensure(entry.url).path == entry.path  # without the hash: the recorded one


def test_url_without_hash_records_and_checks_its_hash(cache_root, server):
    entry = cache.ensure(server.url(PATH))
    assert entry.sha256 == SHA
    assert cache.ensure(server.url(PATH)).path == entry.path
    assert server.gets(PATH) == [None]


def test_quiet_prints_nothing(cache_root, server, capsys, monkeypatch):
    monkeypatch.setattr(download, "verbose", False)
    cache.ensure(server.url(PATH))
    assert capsys.readouterr().err == ""


def test_sha256_mismatch_leaves_nothing(cache_root, server):
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        cache.ensure(f"{server.url(PATH)}#sha256={'0' * 64}")
    assert files_under(cache_root) == []


def test_sha256_mismatch_keeps_a_good_cached_copy(cache_root, server):
    good = cache.ensure(server.url(PATH))
    with pytest.raises(ChecksumError):
        cache.ensure(f"{server.url(PATH)}#sha256={'1' * 64}")
    assert good.path.read_bytes() == DATA
    assert [p.name for p in files_under(cache_root)] == ["m.safetensors", "meta.json"]


def test_size_mismatch_is_an_error(cache_root, server):
    with pytest.raises(DownloadError, match="expected"):
        cache.ensure(server.url(PATH), size=len(DATA) + 1)
    assert files_under(cache_root) == []


def test_dropped_connection_is_resumed_with_range(cache_root, server):
    server.drop_after[PATH] = 70_000
    entry = cache.ensure(f"{server.url(PATH)}#sha256={SHA}")
    assert entry.path.read_bytes() == DATA
    assert server.gets(PATH) == [None, "bytes=70000-"]
    assert_clean(cache_root)


def partial_file(cache_root: Path, url: str, data: bytes) -> Path:
    entry_dir = cache_root / "models" / cache.entry_id(url)
    entry_dir.mkdir(parents=True)
    path = entry_dir / "m.safetensors.4242-dead.incomplete"
    path.write_bytes(data)
    return path


def test_partial_file_of_an_interrupted_process_is_resumed(cache_root, server):
    partial_file(cache_root, server.url(PATH), DATA[:123_456])
    entry = cache.ensure(f"{server.url(PATH)}#sha256={SHA}")
    assert entry.path.read_bytes() == DATA
    assert server.gets(PATH) == ["bytes=123456-"]
    assert_clean(cache_root)


def test_bad_partial_file_is_downloaded_again_from_the_start(cache_root, server):
    partial_file(cache_root, server.url(PATH), b"x" * 1000)
    entry = cache.ensure(f"{server.url(PATH)}#sha256={SHA}")
    assert entry.path.read_bytes() == DATA
    assert server.gets(PATH) == ["bytes=1000-", None]


def test_server_ignoring_range_restarts(cache_root, server):
    server.ignore_range = True
    partial_file(cache_root, server.url(PATH), DATA[:5000])
    entry = cache.ensure(f"{server.url(PATH)}#sha256={SHA}")
    assert entry.path.read_bytes() == DATA
    assert len(server.gets(PATH)) == 1


def test_404_is_an_error_without_retries(cache_root, server):
    with pytest.raises(DownloadError, match="404"):
        cache.ensure(server.url("/missing.safetensors"))
    assert server.gets("/missing.safetensors") == [None]
    assert files_under(cache_root) == []


def test_transient_errors_are_retried(cache_root, server):
    server.fail[PATH] = (503, 2)
    entry = cache.ensure(f"{server.url(PATH)}#sha256={SHA}")
    assert entry.path.read_bytes() == DATA
    assert len(server.gets(PATH)) == 3


def test_retries_are_bounded(cache_root, server, monkeypatch):
    monkeypatch.setattr(download, "RETRIES", 2)
    server.fail[PATH] = (503, 99)
    with pytest.raises(DownloadError, match="gave up after 3 tries"):
        cache.ensure(server.url(PATH))
    assert len(server.gets(PATH)) == 3
    assert files_under(cache_root) == []


def test_offline_never_connects(cache_root, server, monkeypatch):
    monkeypatch.setenv("SIRENUP_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        cache.ensure(f"{server.url(PATH)}#sha256={SHA}")
    message = str(info.value)
    assert "SIRENUP_OFFLINE" in message and "sirenup models download" in message
    assert server.requests == []
    assert files_under(cache_root) == []


def test_offline_uses_the_cache(cache_root, server, monkeypatch):
    entry = cache.ensure(server.url(PATH))
    server.stop()
    monkeypatch.setenv("SIRENUP_OFFLINE", "1")
    assert cache.ensure(f"{entry.url}#sha256={SHA}").path == entry.path


def test_corrupted_entry_is_fetched_again(cache_root, server, capsys):
    entry = cache.ensure(f"{server.url(PATH)}#sha256={SHA}")
    raw = bytearray(entry.path.read_bytes())
    raw[1000] ^= 0xFF
    entry.path.write_bytes(bytes(raw))
    assert entry.corrupt()
    fixed = cache.ensure(f"{server.url(PATH)}#sha256={SHA}")
    assert fixed.path.read_bytes() == DATA
    assert server.gets(PATH) == [None, None]
    assert "corrupt" in capsys.readouterr().err


def test_corrupted_entry_offline_is_a_clear_error(cache_root, server, monkeypatch):
    entry = cache.ensure(server.url(PATH))
    entry.path.write_bytes(b"garbage")
    monkeypatch.setenv("SIRENUP_OFFLINE", "1")
    with pytest.raises(OfflineError, match="unusable"):
        cache.ensure(server.url(PATH))


def test_file_url_works_offline(cache_root, tmp_path, monkeypatch):
    source = tmp_path / "weights.safetensors"
    source.write_bytes(DATA)
    monkeypatch.setenv("SIRENUP_OFFLINE", "1")
    entry = cache.ensure(f"{source.as_uri()}#sha256={SHA}")
    assert entry.path.read_bytes() == DATA and entry.path != source


@pytest.mark.parametrize("spec", ["http://127.0.0.1/m.safetensors#md5=abc",
                                  "http://127.0.0.1/m.safetensors#sha256=xyz",
                                  "ftp://127.0.0.1/m.safetensors"])
def test_bad_urls_are_usage_errors(cache_root, spec):
    with pytest.raises(UsageError):
        cache.ensure(spec)


def test_url_filenames_and_ids():
    assert cache.url_filename("http://h/a/b/model.pt?x=1") == "model.pt"
    assert cache.url_filename("http://h/dl") == "dl.safetensors"
    assert cache.url_filename("http://h/") == "model.safetensors"
    a, b = cache.entry_id("http://h/a/m.safetensors"), cache.entry_id("http://h/b/m.safetensors")
    assert a != b and a.startswith("m-")


def test_file_lock_excludes_and_reports_waiting(tmp_path):
    path = tmp_path / "x.lock"
    order, waited = [], []

    def second():
        with cache.FileLock(path, on_wait=lambda: waited.append(True)):
            order.append("second")

    with cache.FileLock(path):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"] and waited == [True]


def test_two_processes_download_once(cache_root, server):
    """The second process waits on the lock and uses the first one's file."""
    server.gate = threading.Event()  # hold the first response until the second one waits
    url = f"{server.url(PATH)}#sha256={SHA}"
    code = "import sys; from sirenup.hub import cache; print(cache.ensure(sys.argv[1]).path)"
    env = {**os.environ, "SIRENUP_CACHE_DIR": str(cache_root), "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-c", code, url], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not server.gets(PATH) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.Popen([sys.executable, "-c", code, url], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in second.stderr], daemon=True)
    reader.start()
    try:
        seen = ""
        while "waiting for another sirenup process" not in seen:
            seen = lines.get(timeout=30)
    finally:
        server.gate.set()
    out1, err1 = first.communicate(timeout=30)
    out2 = second.stdout.read()
    assert second.wait(timeout=30) == 0 and first.returncode == 0, err1
    assert out1.strip() == out2.strip() != ""
    assert Path(out1.strip()).read_bytes() == DATA
    assert server.gets(PATH) == [None]  # one transfer
    assert_clean(cache_root)
