"""Verified, resumable downloads with the standard library (no extra dependency).

``fetch(url, dest)`` streams into a uniquely named ``<file>.<pid>-<random>.incomplete`` beside
``dest``, hashing as it writes, checks the size and sha256, then renames it to ``dest``
atomically. A connection that drops mid-file is retried with backoff and resumed with an HTTP
Range request; a partial file left by an interrupted process is resumed the same way (its bytes
are hashed first). A wrong sha256 or size, or an error that retrying cannot fix (404), deletes
the partial file, as does a transfer past ``max_size`` (an endless response) or a file the
caller's ``check`` rejects (an HTML page instead of weights). The file is fsynced before the
rename. ``SIRENUP_OFFLINE=1``: never opens a connection. The caller holds the cache lock
(``sirenup.hub.cache.ensure``), so one process downloads a file at a time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import re
import secrets
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import (
    HTTPHandler,
    HTTPRedirectHandler,
    HTTPSHandler,
    Request,
    build_opener,
    url2pathname,
)

from tqdm import tqdm

from sirenup import __version__
from sirenup.errors import SirenupError, mention, typed_line
from sirenup.files import atomic_write_bytes, check_regular_file, first_line, read_bounded
from sirenup.untrusted import one_line, redact_url

ENV_OFFLINE = "SIRENUP_OFFLINE"
RETRIES = 5  # retries after the first try, on errors that may go away (drops, 5xx, timeouts)
BACKOFF_S = 0.5  # first wait; doubles each retry
BACKOFF_MAX_S = 10.0
TIMEOUT_S = 30.0  # per connect and per read
CHUNK = 1 << 16
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
USER_AGENT = f"sirenup/{__version__}"
SCHEMES = ("http", "https")  # what a redirect may lead to
# A transfer slower than MIN_RATE bytes/s on average, once STALL_GRACE_S have passed, is
# stalled: the whole fetch of N bytes may take STALL_GRACE_S + N / MIN_RATE seconds.
MIN_RATE = 4096
STALL_GRACE_S = 60.0
VALIDATOR_SUFFIX = ".validator"  # beside a partial download: the ETag/Last-Modified it had

verbose = True  # the CLI sets this to False for --quiet: no messages, no progress bar


class DownloadError(SirenupError):
    """A download that failed; what to do is in the message."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256 or size."""


class StalledError(DownloadError):
    """The server sends too slowly to finish in time (the partial file is kept)."""


class OfflineError(SirenupError):
    """A model is needed from the network while SIRENUP_OFFLINE is set."""


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def say(message: str) -> None:
    """Download messages go to stderr, unless --quiet."""
    if verbose:  # a server's words may be in it: on one line, escapes shown, not obeyed
        print(one_line(message), file=sys.stderr, flush=True)


class _Transient(Exception):
    """An error worth retrying (the partial file is kept and resumed)."""


class _Restart(Exception):
    """The server cannot continue the partial file: start again from byte 0."""


class _State:
    """The partial file's length and running sha256."""

    def __init__(self, file, offset: int, validator_path: Path | None = None):
        self.file = file
        self.offset = offset
        self.digest = hashlib.sha256()
        self.validator_path = validator_path
        self.validator: str | None = None  # the server's ETag (strong) or Last-Modified
        self.started = time.monotonic()
        self.received = 0  # bytes that came over the network in this fetch

    def reset(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.offset = 0
        self.digest = hashlib.sha256()
        self.set_validator(None)

    def set_validator(self, validator: str | None) -> None:
        """Remember what identifies the server's file, beside the partial file too, so that
        a later resume asks for the rest of the same file (If-Range)."""
        self.validator = validator
        if self.validator_path is None:
            return
        if validator is None:
            self.validator_path.unlink(missing_ok=True)
        else:
            atomic_write_bytes(self.validator_path, validator.encode("utf-8"), mode=0o600)

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.digest.update(chunk)
        self.offset += len(chunk)
        self.received += len(chunk)

    def behind(self) -> bool:
        """Whether the transfer runs below MIN_RATE on average (after the grace)."""
        elapsed = time.monotonic() - self.started
        return elapsed > STALL_GRACE_S and self.received < (elapsed - STALL_GRACE_S) * MIN_RATE

    def check_rate(self, url: str) -> None:
        """StalledError when the transfer runs below MIN_RATE on average (after the grace)."""
        elapsed = time.monotonic() - self.started
        if self.behind():
            raise StalledError(f"{redact_url(url)}: stalled ({self.received} bytes in "
                               f"{elapsed:.0f} s, below {MIN_RATE} bytes/s); the partial file "
                               "is kept: run the command again to resume")


def partials(dest: Path) -> list[Path]:
    """Partial downloads of ``dest``, largest first."""
    found = [p for p in dest.parent.glob(f"{dest.name}.*.incomplete") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_size, reverse=True)


def _claim_partial(dest: Path) -> Path:
    """A new uniquely named partial file; it takes over the largest partial left behind."""
    mine = dest.with_name(f"{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.incomplete")
    leftovers = partials(dest)
    if leftovers:
        os.replace(leftovers[0], mine)
        for path in leftovers[1:]:
            path.unlink(missing_ok=True)
    else:
        mine.touch()
    return mine


def fetch(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None,
          max_size: int | None = None,
          check: Callable[[Path], None] | None = None) -> tuple[str, int]:
    """Download ``url`` (http, https or file) to ``dest``, verified -> (sha256, size).

    ``max_size``: refuse a file announced as larger, and stop a transfer that goes past it
    (an endless response would fill the disk). ``check(partial_path)``: raises if the
    complete file is not what it should be (not weights); the file is then not kept.
    """
    dest = Path(dest)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in {"http", "https", "file"}:
        raise DownloadError(f"{redact_url(url)}: "
                            f"only http://, https:// and file:// URLs are supported")
    if scheme != "file" and offline():
        raise OfflineError(f"{redact_url(url)}: "
                           f"not downloaded, {ENV_OFFLINE}=1 forbids network access")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _claim_partial(dest)
    validator_path = dest.with_name(dest.name + VALIDATOR_SUFFIX)
    keep = False
    try:
        with open(part, "r+b") as f:
            state = _State(f, 0, validator_path)
            resumed = _hash_existing(state, size if size is not None else max_size)
            state.started = time.monotonic()  # (hashing the partial file is not a wait)
            state.validator = _read_validator(validator_path) if resumed else None
            if resumed and state.validator is None and not sha256 and scheme != "file":
                # nothing tells whether the server's file is still the one these bytes came
                # from, and no sha256 would catch a mix: start again
                say(f"{dest.name}: the partial download cannot be matched to the server's "
                    "file; downloading it from the start")
                state.reset()
                resumed = 0
            say(f"resuming {dest.name} at byte {resumed}" if resumed
                else f"downloading {redact_url(url)}")
            with _progress(dest.name, size, resumed) as bar, _Watchdog(state):
                try:
                    _transfer(url, state, size, bar, max_size)
                    problem = _check(state, sha256, size)
                    if problem and resumed:  # the leftover bytes may be bad: one fresh try
                        say(f"{dest.name}: {problem}; downloading it again from the start")
                        state.reset()
                        _transfer(url, state, size, bar, max_size)
                        problem = _check(state, sha256, size)
                except _Transient as error:
                    keep = state.offset > 0
                    raise DownloadError(
                        f"{redact_url(url)}: "
                        f"{error} (gave up after {RETRIES + 1} tries; run the command "
                        "again to resume)") from None
                if problem:
                    raise ChecksumError(f"{redact_url(url)}: {problem}; the file was not kept")
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the cached file
        if check is not None:
            try:
                check(part)
            except SirenupError as error:
                raise DownloadError(f"{redact_url(url)}: not a usable weights file ({error}); the "
                                    "download was not kept") from None
        os.replace(part, dest)
        validator_path.unlink(missing_ok=True)
        return state.digest.hexdigest(), state.offset
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, and SIGTERM (the CLI's SystemExit)
        keep = True
        raise
    except StalledError:
        keep = state.offset > 0
        raise
    except OSError as error:  # writing the partial file: a full disk, a read-only cache
        reason = error.strerror.lower() if error.strerror else str(error)
        raise DownloadError(f"{redact_url(url)}: "
                            f"cannot write {part.parent} ({reason}); nothing was "
                            "kept") from None
    finally:
        if not keep:
            part.unlink(missing_ok=True)
            validator_path.unlink(missing_ok=True)


WATCH_S = 0.25  # how often the watchdog looks


class _Watchdog:
    """While a fetch runs, shuts its connections down once the transfer falls behind MIN_RATE
    (``_State.behind``): no wait outlasts the fetch's deadline, be it a connect, headers
    sent a byte at a time or a body that stopped; the wait then ends as a stall."""

    current = threading.local()  # the watchdog of this thread's fetch, for the connections

    def __init__(self, state: _State):
        self.state = state
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.expired = False
        self.thread = threading.Thread(target=self._watch, daemon=True,
                                       name="sirenup-download-watchdog")

    def __enter__(self) -> _Watchdog:
        _Watchdog.current.dog = self
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        _Watchdog.current.dog = None
        self.stopped.set()
        self.thread.join()

    def _watch(self) -> None:
        while not self.stopped.wait(WATCH_S):
            if self.state.behind():
                with self.lock:
                    self.expired = True
                    for sock in self.sockets:
                        _shut(sock)
                return

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _watched(connection_class):
    """``connection_class`` whose socket the current fetch's watchdog may shut."""

    class Watched(connection_class):
        def connect(self):
            super().connect()
            dog = getattr(_Watchdog.current, "dog", None)
            if dog is not None:
                dog.watch(self.sock)

    return Watched


_HTTPConnection = _watched(http.client.HTTPConnection)
_HTTPSConnection = _watched(http.client.HTTPSConnection)


class _HTTPHandler(HTTPHandler):
    def http_open(self, req):
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_HTTPSConnection, req, context=self._context)


def _read_validator(path: Path) -> str | None:
    try:
        text = read_bounded(path, 1024).decode("utf-8").strip()
    except (SirenupError, UnicodeDecodeError):
        return None
    return text or None


def _check(state: _State, sha256: str | None, size: int | None) -> str | None:
    if size is not None and state.offset != size:
        return f"got {state.offset} bytes, expected {size}"
    actual = state.digest.hexdigest()
    if sha256 and actual != sha256.lower():
        return f"sha256 mismatch: got {actual}, expected {sha256.lower()}"
    return None


def _hash_existing(state: _State, size: int | None) -> int:
    """Hash a taken-over partial file -> its length (0 if it was unusable and emptied)."""
    f = state.file
    length = os.fstat(f.fileno()).st_size
    if length and size is not None and length > size:
        state.reset()
        return 0
    f.seek(0)
    for chunk in iter(lambda: f.read(1 << 20), b""):
        state.digest.update(chunk)
    state.offset = f.tell()
    return state.offset


def _transfer(url: str, state: _State, size: int | None, bar,
              max_size: int | None = None) -> None:
    """Fill the partial file to the end, retrying transient errors with backoff."""
    attempt = 0
    restarts = 0
    while True:
        try:
            if urlsplit(url).scheme.lower() == "file":
                _copy_file(url, state, size, bar, max_size)
            else:
                _request(url, state, size, bar, max_size)
            return
        except _Restart as why:
            restarts += 1
            if restarts > 2:
                raise DownloadError(f"{redact_url(url)}: {why}") from None
            say(f"{why}; downloading from the start")
            state.reset()
        except _Transient as error:
            state.check_rate(url)  # the watchdog cut a wait that outlasted the deadline
            attempt += 1
            if attempt > RETRIES:
                raise
            delay = min(BACKOFF_S * 2 ** (attempt - 1), BACKOFF_MAX_S)
            say(f"download interrupted ({error}); retrying from byte {state.offset} "
                f"in {delay:.1f}s ({attempt}/{RETRIES})")
            time.sleep(delay)


def _request(url: str, state: _State, size: int | None, bar,
             max_size: int | None = None) -> None:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    url_sent, authorization = _without_userinfo(url)
    if authorization:
        headers["Authorization"] = authorization
    if state.offset:
        headers["Range"] = f"bytes={state.offset}-"
        if state.validator:  # the rest of the same file, or else the whole new one
            headers["If-Range"] = state.validator
    try:
        response = urlopen(Request(url_sent, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as error:
        error.close()
        if error.code == 416 and state.offset:
            raise _Restart("the server cannot resume the partial file") from None
        if error.code in RETRY_STATUS:
            raise _Transient(f"HTTP {error.code} {first_line(error.reason, '')}") from None
        raise DownloadError(f"{redact_url(url)}: "
                            f"HTTP {error.code} {first_line(error.reason, '')}") from None
    except URLError as error:
        if isinstance(error.reason, ssl.SSLCertVerificationError):
            raise DownloadError(f"{redact_url(url)}: {first_line(error.reason, '')}") from None
        raise _Transient(first_line(error.reason, "")) from None
    except http.client.InvalidURL as error:  # retrying cannot mend the URL
        raise DownloadError(f"{redact_url(url)}: "
                            f"not a valid URL ({first_line(error, '')})") from None
    except (OSError, http.client.HTTPException) as error:
        raise _Transient(typed_line(error)) from None
    with response:
        total = None
        if state.offset and response.status == 206:
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)",
                                 response.headers.get("Content-Range", "").strip())
            if not match or int(match[1]) != state.offset:
                raise _Restart("the server answered the range request with other bytes")
            etag = response.headers.get("ETag")
            if etag and state.validator and state.validator.startswith('"') \
                    and etag != state.validator:
                raise _Restart("the file changed on the server")
            total = int(match[3]) if match[3] != "*" else None
        elif state.offset:  # 200: the server ignores Range, or its file changed (If-Range):
            state.reset()  # the whole file comes
        if not state.offset or state.validator is None:
            state.set_validator(_validator_of(response.headers))
        if total is None:
            length = response.headers.get("Content-Length", "")
            total = state.offset + int(length) if length.isdigit() else None
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{redact_url(url)}: the server has {total} bytes, expected {size}")
        _check_cap(url, total, max_size)
        _copy(response, state, size, bar, total, max_size, url)
        if total is not None and state.offset < total:
            raise _Transient(f"connection closed at byte {state.offset} of {total}")


def _validator_of(headers) -> str | None:
    """What identifies the server's file for If-Range: a strong ETag, else Last-Modified."""
    etag = (headers.get("ETag") or "").strip()
    if etag and not etag.startswith("W/"):
        return etag
    return (headers.get("Last-Modified") or "").strip() or None


def _without_userinfo(url: str) -> tuple[str, str | None]:
    """``http://user:secret@host/p`` -> (``http://host/p``, a Basic Authorization header):
    the secret goes in a header (dropped on a redirect to another host), never in a line."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


class _Redirects(HTTPRedirectHandler):
    """Redirects keep to http(s) (an https URL never to http); credentials go to the host
    they were given for only."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urlsplit(req.full_url), urlsplit(newurl)
        scheme = new.scheme.lower()
        if scheme not in SCHEMES or (old.scheme.lower() == "https" and scheme == "http"):
            raise DownloadError(f"{redact_url(req.full_url)}: redirected to "
                                f"{redact_url(newurl)}; only http(s) redirects are followed "
                                "(never from https to http)")
        request = super().redirect_request(req, fp, code, msg, headers, newurl)
        if request is not None and (new.hostname, new.port) != (old.hostname, old.port):
            for name in ("Authorization", "Cookie"):
                request.remove_header(name)
        return request


_OPENER = build_opener(_Redirects, _HTTPHandler, _HTTPSHandler)


def urlopen(request: Request, timeout: float):
    """urllib's urlopen with sirenup's redirect rules (``_Redirects``)."""
    return _OPENER.open(request, timeout=timeout)


def _copy_file(url: str, state: _State, size: int | None, bar,
               max_size: int | None = None) -> None:
    parts = urlsplit(url)
    path = Path(url2pathname(parts.path))
    if parts.netloc not in ("", "localhost"):
        raise DownloadError(f"{redact_url(url)}: "
                            f"file:// URLs must name a local file (file:///path)")
    try:
        check_regular_file(path)  # a FIFO would block the open for ever
        source = open(path, "rb")
    except SirenupError as error:
        raise DownloadError(f"{redact_url(url)}: {error}") from None
    except OSError as error:
        raise DownloadError(f"{redact_url(url)}: {error.strerror or error}") from None
    with source:
        total = os.fstat(source.fileno()).st_size
        if state.offset > total:
            raise _Restart(f"{path} is shorter than the partial file")
        _check_cap(url, total, max_size)
        source.seek(state.offset)
        _copy(source, state, size, bar, total, max_size, url)


def _check_cap(url: str, total: int | None, max_size: int | None) -> None:
    if max_size is not None and total is not None and total > max_size:
        raise DownloadError(f"{redact_url(url)}: {total} bytes, more than the limit of {max_size} "
                            f"({mention('max_size')}); not downloaded")


def _copy(source, state: _State, size: int | None, bar, total: int | None,
          max_size: int | None = None, url: str = "") -> None:
    bar.total = total
    bar.n = state.offset
    bar.refresh()
    read = getattr(source, "read1", source.read)  # what has arrived, not a full CHUNK
    while True:
        try:
            chunk = read(CHUNK)
        except http.client.IncompleteRead as error:
            state.write(error.partial)
            raise _Transient(f"connection dropped at byte {state.offset}") from None
        except (OSError, http.client.HTTPException) as error:
            raise _Transient(typed_line(error)) from None
        if not chunk:
            return
        state.write(chunk)
        bar.update(len(chunk))
        state.check_rate(url)
        if size is not None and state.offset > size:
            raise DownloadError(f"{redact_url(url)}: more than the expected {size} bytes; stopped")
        if max_size is not None and state.offset > max_size:
            raise DownloadError(f"{redact_url(url)}: "
                                f"more than the limit of {max_size} bytes "
                                f"({mention('max_size')}); "
                                "stopped, nothing kept")


@contextlib.contextmanager
def _progress(name: str, total: int | None, initial: int):
    """A tqdm bar on stderr (bytes, rate, ETA), hidden with --quiet or when stderr is not a
    terminal."""
    disable = not (verbose and sys.stderr.isatty())
    bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
               desc=name, file=sys.stderr, disable=disable, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
