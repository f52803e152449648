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

import contextlib
import hashlib
import http.client
import os
import re
import secrets
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, url2pathname, urlopen

from sirenup import __version__
from sirenup.errors import SirenupError
from sirenup.files import check_regular_file, first_line

ENV_OFFLINE = "SIRENUP_OFFLINE"
RETRIES = 5  # retries after the first try, on errors that may go away (drops, 5xx, timeouts)
BACKOFF_S = 0.5  # first wait; doubles each retry
BACKOFF_MAX_S = 10.0
TIMEOUT_S = 30.0  # per connect and per read
CHUNK = 1 << 16
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
USER_AGENT = f"sirenup/{__version__}"

verbose = True  # the CLI sets this to False for --quiet: no messages, no progress bar


class DownloadError(SirenupError):
    """A download that failed; what to do is in the message."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256 or size."""


class OfflineError(SirenupError):
    """A model is needed from the network while SIRENUP_OFFLINE is set."""


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def say(message: str) -> None:
    """Download messages go to stderr, unless --quiet."""
    if verbose:
        print(message, file=sys.stderr, flush=True)


class _Transient(Exception):
    """An error worth retrying (the partial file is kept and resumed)."""


class _Restart(Exception):
    """The server cannot continue the partial file: start again from byte 0."""


class _State:
    """The partial file's length and running sha256."""

    def __init__(self, file, offset: int):
        self.file = file
        self.offset = offset
        self.digest = hashlib.sha256()

    def reset(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.offset = 0
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.digest.update(chunk)
        self.offset += len(chunk)


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
        raise DownloadError(f"{url}: only http://, https:// and file:// URLs are supported")
    if scheme != "file" and offline():
        raise OfflineError(f"{url}: not downloaded, {ENV_OFFLINE}=1 forbids network access")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _claim_partial(dest)
    keep = False
    try:
        with open(part, "r+b") as f:
            state = _State(f, 0)
            resumed = _hash_existing(state, size if size is not None else max_size)
            say(f"resuming {dest.name} at byte {resumed}" if resumed else f"downloading {url}")
            with _progress(dest.name, size, resumed) as bar:
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
                        f"{url}: {error} (gave up after {RETRIES + 1} tries; run the command "
                        "again to resume)") from None
                if problem:
                    raise ChecksumError(f"{url}: {problem}; the file was not kept")
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the cached file
        if check is not None:
            try:
                check(part)
            except SirenupError as error:
                raise DownloadError(f"{url}: not a usable weights file ({error}); the "
                                    "download was not kept") from None
        os.replace(part, dest)
        return state.digest.hexdigest(), state.offset
    except KeyboardInterrupt:
        keep = True
        raise
    except OSError as error:  # writing the partial file: a full disk, a read-only cache
        reason = error.strerror.lower() if error.strerror else str(error)
        raise DownloadError(f"{url}: cannot write {part.parent} ({reason}); nothing was "
                            "kept") from None
    finally:
        if not keep:
            part.unlink(missing_ok=True)


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
                raise DownloadError(f"{url}: {why}") from None
            say(f"{why}; downloading from the start")
            state.reset()
        except _Transient as error:
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
    if state.offset:
        headers["Range"] = f"bytes={state.offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as error:
        error.close()
        if error.code == 416 and state.offset:
            raise _Restart("the server cannot resume the partial file") from None
        if error.code in RETRY_STATUS:
            raise _Transient(f"HTTP {error.code} {first_line(error.reason, '')}") from None
        raise DownloadError(f"{url}: HTTP {error.code} {first_line(error.reason, '')}") from None
    except URLError as error:
        if isinstance(error.reason, ssl.SSLCertVerificationError):
            raise DownloadError(f"{url}: {first_line(error.reason, '')}") from None
        raise _Transient(first_line(error.reason, "")) from None
    except http.client.InvalidURL as error:  # retrying cannot mend the URL
        raise DownloadError(f"{url}: not a valid URL ({first_line(error, '')})") from None
    except (OSError, http.client.HTTPException) as error:
        raise _Transient(f"{type(error).__name__}: {first_line(error, '')}") from None
    with response:
        total = None
        if state.offset and response.status == 206:
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)",
                                 response.headers.get("Content-Range", "").strip())
            if not match or int(match[1]) != state.offset:
                raise _Restart("the server answered the range request with other bytes")
            total = int(match[3]) if match[3] != "*" else None
        elif state.offset:  # 200: the server ignores Range and sends the whole file
            state.reset()
        if total is None:
            length = response.headers.get("Content-Length", "")
            total = state.offset + int(length) if length.isdigit() else None
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{url}: the server has {total} bytes, expected {size}")
        _check_cap(url, total, max_size)
        _copy(response, state, size, bar, total, max_size, url)
        if total is not None and state.offset < total:
            raise _Transient(f"connection closed at byte {state.offset} of {total}")


def _copy_file(url: str, state: _State, size: int | None, bar,
               max_size: int | None = None) -> None:
    parts = urlsplit(url)
    path = Path(url2pathname(parts.path))
    if parts.netloc not in ("", "localhost"):
        raise DownloadError(f"{url}: file:// URLs must name a local file (file:///path)")
    try:
        check_regular_file(path)  # a FIFO would block the open for ever
        source = open(path, "rb")
    except SirenupError as error:
        raise DownloadError(f"{url}: {error}") from None
    except OSError as error:
        raise DownloadError(f"{url}: {error.strerror or error}") from None
    with source:
        total = os.fstat(source.fileno()).st_size
        if state.offset > total:
            raise _Restart(f"{path} is shorter than the partial file")
        _check_cap(url, total, max_size)
        source.seek(state.offset)
        _copy(source, state, size, bar, total, max_size, url)


def _check_cap(url: str, total: int | None, max_size: int | None) -> None:
    if max_size is not None and total is not None and total > max_size:
        raise DownloadError(f"{url}: {total} bytes, more than the limit of {max_size} "
                            "(--max-size); not downloaded")


def _copy(source, state: _State, size: int | None, bar, total: int | None,
          max_size: int | None = None, url: str = "") -> None:
    bar.total = total
    bar.n = state.offset
    bar.refresh()
    while True:
        try:
            chunk = source.read(CHUNK)
        except http.client.IncompleteRead as error:
            state.write(error.partial)
            raise _Transient(f"connection dropped at byte {state.offset}") from None
        except (OSError, http.client.HTTPException) as error:
            raise _Transient(f"{type(error).__name__}: {error}") from None
        if not chunk:
            return
        state.write(chunk)
        bar.update(len(chunk))
        if size is not None and state.offset > size:
            raise DownloadError(f"{url}: more than the expected {size} bytes; stopped")
        if max_size is not None and state.offset > max_size:
            raise DownloadError(f"{url}: more than the limit of {max_size} bytes (--max-size); "
                                "stopped, nothing kept")


@contextlib.contextmanager
def _progress(name: str, total: int | None, initial: int):
    """A tqdm bar on stderr (bytes, rate, ETA), hidden with --quiet or when stderr is not a
    terminal."""
    from tqdm import tqdm

    disable = not (verbose and sys.stderr.isatty())
    bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
               desc=name, file=sys.stderr, disable=disable, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
