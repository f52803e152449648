"""Verified downloads into the cache, against an HTTP server on 127.0.0.1 that each test
starts: first download, reuse without a request, sha256 mismatch, a dropped connection
resumed, 404, retries, offline mode, two processes at once, a corrupted entry fetched again."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from helpers import BASE, error_line, one_error_line
from loopback_server import LoopbackServer

from sirenup.errors import UsageError
from sirenup.hub import cache, download
from sirenup.hub.download import ChecksumError, DownloadError, OfflineError
from sirenup.models.weights import save_weights

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


# -- failures: one line, the right exit code, nothing partial, nothing of the user's replaced ------

class _Endless(BaseHTTPRequestHandler):
    """Sends zeros for ever (with ``length``: announces that Content-Length)."""

    length: int | None = None

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        if self.length is not None:
            self.send_header("Content-Length", str(self.length))
        self.end_headers()
        chunk = bytes(65536)
        try:
            while True:
                self.wfile.write(chunk)
        except OSError:
            pass


@pytest.fixture
def endless():
    servers = []

    def start(length: int | None = None) -> str:
        handler = type("Handler", (_Endless,), {"length": length})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/model.safetensors"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("sha", [False, True])
def test_endless_download_is_capped(invoke, cache_root, endless, sha):
    url = endless() + (f"#sha256={'a' * 64}" if sha else "")
    result = invoke("-q", "models", "download", url, "--max-size", "1M")
    assert result.exit_code == 1
    assert "more than the limit of 1048576 bytes" in one_error_line(result)
    assert files_under(cache_root) == []


def test_announced_size_over_the_cap_is_refused(invoke, cache_root, endless):
    result = invoke("-q", "models", "download", endless(length=10 << 30), "--max-size", "1M")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "more than the limit" in line and "not downloaded" in line
    assert files_under(cache_root) == []


def test_bad_max_size_is_usage_error(invoke, cache_root):
    result = invoke("models", "download", "http://127.0.0.1:9/m.safetensors",
                    "--max-size", "lots")
    assert result.exit_code == 2
    assert "--max-size" in one_error_line(result)


def test_html_page_served_as_weights_is_not_cached(invoke, cache_root, make_image):
    page = b"<!doctype html><html><body>Sign in to the hotel Wi-Fi</body></html>" * 20
    with LoopbackServer({"/model.safetensors": page}) as server:
        url = server.url("/model.safetensors")
        result = invoke("-q", "models", "download", url)
        assert result.exit_code == 1
        line = one_error_line(result)
        assert "not a usable weights file" in line and "not kept" in line
        assert files_under(cache_root) == []
        upscale = invoke("-q", "upscale", make_image("in.png"), "--model", url,
                         "--device", "cpu")
        assert upscale.exit_code == 1 and "not a usable weights file" in upscale.stderr
    listed = json.loads(invoke("models", "list", "--json").stdout)
    assert [row for row in listed["models"] if row["source"] == "cached"] == []


def test_unpinned_download_is_listed_as_unpinned(invoke, cache_root):
    with LoopbackServer({"/m.safetensors": DATA}) as server:
        result = invoke("models", "download", server.url("/m.safetensors"))
        assert result.exit_code == 0, result.output
        assert "unpinned" in result.stderr
    [row] = [r for r in json.loads(invoke("models", "list", "--json").stdout)["models"]
             if r["source"] == "cached"]
    assert row["verified"] is None and row["pinned"] is False and row["problem"] is None
    table = invoke("models", "list")
    assert "unpinned" in table.stdout
    verify = invoke("models", "verify")
    assert verify.exit_code == 0 and "unpinned" in verify.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_file_url_to_a_fifo_is_refused(invoke, cache_root, tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    result = invoke("-q", "models", "download", fifo.as_uri())
    assert result.exit_code == 1
    assert "FIFO" in one_error_line(result)


@pytest.mark.parametrize(("url", "fragment"), [
    ("http://", "names no host"), ("https:///model.safetensors", "names no host"),
    ("http://:80/m", "names no host"), ("http://[::1/m.safetensors", "not a valid URL"),
    ("http://127.0.0.1:abc/m", "not a valid URL"), ("http://127.0.0.1:99999/m", "not a valid URL"),
    ("http://a b/m.safetensors", "spaces or control characters"),
    ("http://h/\x00.safetensors", "spaces or control characters")])
def test_malformed_url_is_bad_usage_at_once(invoke, cache_root, monkeypatch, url, fragment):
    from sirenup.hub import download

    def no_network(*args, **kwargs):
        raise AssertionError("connected")

    monkeypatch.setattr(download, "urlopen", no_network)
    result = invoke("-q", "models", "download", url)
    assert result.exit_code == 2
    assert fragment in one_error_line(result)


def test_very_long_url_name_is_cut_for_the_cache(invoke, cache_root):
    from loopback_server import LoopbackServer

    path = "/" + "w" * 400 + ".safetensors"
    with LoopbackServer({path: BASE.read_bytes()}) as server:
        result = invoke("-q", "models", "download", server.url(path))
    assert result.exit_code == 0, result.output
    [cached] = [p for p in cache_root.rglob("*.safetensors")]
    assert len(cached.name) <= 140 and cached.read_bytes() == BASE.read_bytes()


class _RedirectLoop(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.path)
        self.end_headers()


def test_redirect_loop_is_one_line(invoke, cache_root):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RedirectLoop)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/m.safetensors"
        result = invoke("-q", "models", "download", url)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1
    assert "HTTP 302" in one_error_line(result)


def test_a_stalled_server_fails_in_one_line_and_a_slow_one_succeeds(invoke, cache_root,
                                                                     monkeypatch):
    from sirenup.hub import download

    data = BASE.read_bytes()[:3000] + b"x" * 100
    monkeypatch.setattr(download, "STALL_GRACE_S", 0.5)
    monkeypatch.setattr(download, "MIN_RATE", 200)  # bytes/s
    with LoopbackServer({"/m.safetensors": data}) as server:
        server.byte_delay = 0.05  # 20 bytes/s: a stall at this rate
        began = time.monotonic()
        result = invoke("models", "download", server.url("/m.safetensors"))
        assert time.monotonic() - began < 20
        assert result.exit_code == 1
        assert "stalled" in error_line(result)
        assert list(cache_root.rglob("*.incomplete"))  # kept, to resume
    # a slow link that keeps moving succeeds: 64 KiB every 0.1 s is above 100 KB/s
    monkeypatch.setattr(download, "STALL_GRACE_S", 0.2)
    monkeypatch.setattr(download, "MIN_RATE", 100_000)
    with LoopbackServer({"/n.safetensors": BASE.read_bytes()}) as server:
        server.chunk_delay = 0.1
        result = invoke("models", "download", server.url("/n.safetensors"))
        assert result.exit_code == 0, result.output


def test_a_silent_server_is_waited_on_until_the_deadline_only(invoke, cache_root,
                                                             monkeypatch):
    """Connected, then not a byte (not even the headers): the watchdog ends the wait."""
    import socket

    from sirenup.hub import download

    monkeypatch.setattr(download, "STALL_GRACE_S", 0.5)
    monkeypatch.setattr(download, "TIMEOUT_S", 30.0)  # one read would wait this long
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    accepting = threading.Thread(target=lambda: [held.append(listener.accept())
                                                 for _ in range(8)], daemon=True)
    accepting.start()
    began = time.monotonic()
    result = invoke("models", "download",
                    f"http://127.0.0.1:{listener.getsockname()[1]}/m.safetensors")
    assert time.monotonic() - began < 15
    assert result.exit_code == 1
    assert "stalled" in error_line(result)
    listener.close()


def test_urls_are_shown_without_secrets_and_meta_json_is_private(invoke, cache_root):
    data = BASE.read_bytes()
    with LoopbackServer({"/m.safetensors": data}) as server:
        server.fail["/m.safetensors"] = (503, 1)  # one retry line
        url = server.url("/m.safetensors").replace("http://", "http://user:s3cret@")
        result = invoke("models", "download", url + "?token=t0ken")
        assert result.exit_code == 0, result.output
        listed = invoke("models", "list")
        listed_json = invoke("models", "list", "--json")
    for text in (result.output, listed.output, listed_json.output):
        assert "s3cret" not in text and "t0ken" not in text
    assert "retrying" in result.stderr
    (meta,) = cache_root.rglob("meta.json")
    assert meta.stat().st_mode & 0o777 == 0o600


def test_a_redirect_to_another_scheme_is_refused(invoke, cache_root):
    with LoopbackServer({}) as server:
        server.redirects["/m.safetensors"] = "ftp://127.0.0.1/m.safetensors"
        result = invoke("models", "download", server.url("/m.safetensors"))
    assert result.exit_code == 1
    assert "redirect" in error_line(result)


def test_a_resumed_download_restarts_when_the_servers_file_changed(cache_root, tmp_path,
                                                                    monkeypatch):

    from sirenup.hub import cache, download
    from sirenup.models.weights import load_weights

    v1 = BASE.read_bytes()
    model, _ = load_weights(BASE)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    save_weights(tmp_path / "v2.safetensors", model, {})
    v2 = (tmp_path / "v2.safetensors").read_bytes()
    assert len(v2) > 70_000 and v2 != v1
    with LoopbackServer({"/m.safetensors": v1}) as server:
        server.etags["/m.safetensors"] = '"v1"'
        server.drop_after["/m.safetensors"] = 70_000
        url = server.url("/m.safetensors")
        monkeypatch.setattr(download, "RETRIES", 0)
        with pytest.raises(download.DownloadError):
            cache.ensure(url)  # unpinned; interrupted after 70 000 bytes
        assert [p.stat().st_size for p in cache_root.rglob("*.incomplete")] == [70_000]
        server.files["/m.safetensors"] = v2  # the file changes on the server meanwhile
        server.etags["/m.safetensors"] = '"v2"'
        entry = cache.ensure(url)
        assert entry.path.read_bytes() == v2  # never v1's first bytes and v2's rest
        assert ("/m.safetensors", '"v1"') in server.if_ranges


def test_sigterm_keeps_the_partial_download(tmp_path):
    data = BASE.read_bytes()
    cache = tmp_path / "cache"
    with LoopbackServer({"/m.safetensors": data}) as server:
        server.hang_after["/m.safetensors"] = 50_000
        process = subprocess.Popen(
            [sys.executable, "-m", "sirenup", "models", "download",
             server.url("/m.safetensors")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "SIRENUP_CACHE_DIR": str(cache)})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = list(cache.rglob("*.incomplete"))
            if parts and parts[0].stat().st_size >= 50_000:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert [p.stat().st_size for p in cache.rglob("*.incomplete")] == [50_000]
