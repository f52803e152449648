"""A threading HTTP server on 127.0.0.1 for download tests: Range requests, a request log,
and switches to drop a connection mid-file, fail with a status, ignore Range or hold a response
until the test releases it."""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args):  # quiet
        pass

    def do_GET(self):
        owner = self.server.owner
        path = urlsplit(self.path).path
        wanted = self.headers.get("Range")
        with owner.lock:
            owner.requests.append((path, wanted))
            failure = owner.fail.get(path)
            if failure and failure[1] > 0:
                owner.fail[path] = (failure[0], failure[1] - 1)
            else:
                failure = None
            drop = owner.drop_after.pop(path, None)
        if owner.gate is not None:
            owner.gate.wait(20)
        if path in owner.redirects:
            self.send_response(302)
            self.send_header("Location", owner.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if failure:
            self.send_error(failure[0])
            return
        data = owner.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted or "")
        etag = owner.etags.get(path)
        if_range = self.headers.get("If-Range")
        with owner.lock:
            owner.if_ranges.append((path, if_range))
        if if_range is not None and if_range != etag:
            match = None  # RFC 9110: the file changed, so the whole of it is sent
        if match and not owner.ignore_range:
            start = int(match[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = int(match[2]) if match[2] else len(data) - 1
            body = data[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if etag is not None:
            self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if drop is not None:  # send part of the body, then cut the connection
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        hang = owner.hang_after.get(path)
        if hang is not None:  # send part of the body, then nothing until released
            self.wfile.write(body[:hang])
            self.wfile.flush()
            owner.release.wait(30)
            return
        step = 1 if owner.byte_delay else 65536
        for i in range(0, len(body), step):
            self.wfile.write(body[i:i + step])
            if owner.byte_delay:  # a trickle: one byte at a time
                self.wfile.flush()
                time.sleep(owner.byte_delay)
            if owner.chunk_delay:
                time.sleep(owner.chunk_delay)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LoopbackServer


class LoopbackServer:
    """``with LoopbackServer({"/m.safetensors": data}) as server: server.url("/m.safetensors")``"""

    def __init__(self, files: dict[str, bytes] | None = None):
        self.files = dict(files or {})
        self.requests: list[tuple[str, str | None]] = []
        self.fail: dict[str, tuple[int, int]] = {}  # path -> (status, how many times)
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before dropping (once)
        self.ignore_range = False
        self.gate: threading.Event | None = None  # responses wait until it is set
        self.chunk_delay = 0.0
        self.byte_delay = 0.0  # > 0: the body is sent one byte at a time, this far apart
        self.redirects: dict[str, str] = {}  # path -> Location of a 302
        self.etags: dict[str, str] = {}  # path -> ETag sent (and checked against If-Range)
        self.if_ranges: list[tuple[str, str | None]] = []  # the If-Range of each GET
        self.hang_after: dict[str, int] = {}  # path -> bytes sent before waiting on release
        self.release = threading.Event()
        self.lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LoopbackServer:
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def gets(self, path: str) -> list[str | None]:
        """The Range header of each GET of ``path`` so far (None: no Range)."""
        with self.lock:
            return [r for p, r in self.requests if p == path]

    def stop(self) -> None:
        self.release.set()
        if self.gate is not None:
            self.gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
