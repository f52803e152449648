"""The model cache: where downloaded weights live, how they are shared and verified.

Folder: ``$SIRENUP_CACHE_DIR`` if set, else ``platformdirs.user_cache_dir("sirenup")``::

    models/<id>/<file>                    a downloaded weights file, verified on every use
    models/<id>/meta.json                 its URL, sha256, size, registry name, download time
    models/<id>/<file>.<unique>.incomplete  a download in progress, or one to resume
    models/<id>.lock                      held while one process fetches <id> (then removed)

``<id>`` is the URL's file stem plus 12 hex digits of the URL's sha256, so every URL has one
entry. ``ensure(url)`` returns a verified entry: from the cache when its file still matches its
sha256 (no connection at all), else fetched under the lock (a second process waits, then uses
the first one's file). A file whose hash no longer matches is deleted and fetched again.
``SIRENUP_OFFLINE=1`` never opens a connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sirenup.errors import UsageError
from sirenup.hub import download
from sirenup.hub.download import ENV_OFFLINE, OfflineError, offline, say

ENV_CACHE = "SIRENUP_CACHE_DIR"
META = "meta.json"
LOCK_POLL_S = 0.1
STALE_LOCK_S = 3600.0  # only for the O_EXCL fallback lock (no fcntl, no msvcrt)


def cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("sirenup"))


def models_dir() -> Path:
    return cache_dir() / "models"


# -- URLs --------------------------------------------------------------------------------------

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def split_url(spec: str) -> tuple[str, str | None]:
    """'URL#sha256=HEX' -> ('URL', 'hex'); a URL without a fragment -> ('URL', None)."""
    url, _, fragment = spec.strip().partition("#")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in {"http", "https", "file"}:
        raise UsageError(f"{spec}: only http://, https:// and file:// URLs are supported")
    if not fragment:
        return url, None
    key, _, value = fragment.partition("=")
    if key.lower() != "sha256" or not _SHA256.fullmatch(value):
        raise UsageError(f"{spec}: the URL fragment must be #sha256=<64 hex digits>")
    return url, value.lower()


def url_filename(url: str) -> str:
    """The weights file name a URL gives (its last path segment, made safe)."""
    name = unquote(urlsplit(url).path.rstrip("/").rpartition("/")[2])
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    if not name.lower().endswith((".safetensors", ".pt", ".pth")):
        name += ".safetensors"
    return name


def entry_id(url: str) -> str:
    stem = Path(url_filename(url)).stem[:48]
    return f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- entries -----------------------------------------------------------------------------------

@dataclass
class CacheEntry:
    id: str
    dir: Path
    meta: dict

    @property
    def filename(self) -> str:
        return self.meta["filename"]

    @property
    def path(self) -> Path:
        return self.dir / self.filename

    @property
    def url(self) -> str | None:
        return self.meta.get("url")

    @property
    def sha256(self) -> str | None:
        return self.meta.get("sha256")

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.id

    def check(self, sha256: str | None = None, size: int | None = None) -> str | None:
        """None if the file is intact (and matches ``sha256``/``size`` when given), else why
        not."""
        if not self.path.is_file():
            return "file missing"
        actual_size = self.path.stat().st_size
        if actual_size != self.meta.get("size"):
            return f"size {actual_size} bytes, recorded {self.meta.get('size')}"
        actual = sha256_file(self.path)
        if actual != self.sha256:
            return f"sha256 {actual} differs from the recorded {self.sha256}"
        if sha256 and actual != sha256:
            return f"sha256 {actual}, expected {sha256}"
        if size is not None and actual_size != size:
            return f"size {actual_size} bytes, expected {size}"
        return None

    def corrupt(self) -> bool:
        """The file no longer matches what was recorded when it was downloaded."""
        return self.check() is not None

    def to_dict(self, verify: bool = True) -> dict:
        problem = self.check() if verify else None
        return {"id": self.id, "name": self.name, "url": self.url, "path": str(self.path),
                "size": self.meta.get("size"), "sha256": self.sha256,
                "downloaded": self.meta.get("downloaded"),
                "verified": (problem is None) if verify else None, "problem": problem}


def read_entry(entry_dir: Path) -> CacheEntry | None:
    try:
        meta = json.loads((entry_dir / META).read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or "filename" not in meta:
            return None
    except (OSError, ValueError):
        return None
    return CacheEntry(entry_dir.name, entry_dir, meta)


def entries() -> list[CacheEntry]:
    """Every complete entry in the cache (one with its meta.json), by id."""
    root = models_dir()
    if not root.is_dir():
        return []
    found = (read_entry(d) for d in sorted(root.iterdir()) if d.is_dir())
    return [e for e in found if e is not None]


def find(spec: str) -> CacheEntry | None:
    """The entry for a URL (fragment ignored), an entry id, or a registry name."""
    spec = spec.strip()
    if spec.lower().startswith(("http://", "https://", "file://")):
        return read_entry(models_dir() / entry_id(split_url(spec)[0]))
    if spec and "/" not in spec and "\\" not in spec and (models_dir() / spec).is_dir():
        return read_entry(models_dir() / spec)
    matches = [e for e in entries() if e.meta.get("name") == spec]
    return matches[0] if matches else None


def remove(entry: CacheEntry) -> None:
    with FileLock(lock_path(entry.id)):
        shutil.rmtree(entry.dir, ignore_errors=True)


def folder_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def lock_path(eid: str) -> Path:
    return models_dir() / f"{eid}.lock"


def _write_meta(entry_dir: Path, meta: dict) -> None:
    tmp = entry_dir / f".{META}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, entry_dir / META)


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def ensure(spec: str, *, sha256: str | None = None, size: int | None = None,
           name: str | None = None, force: bool = False) -> CacheEntry:
    """A verified cache entry for the URL ``spec`` (``#sha256=`` allowed), fetched if needed.

    ``sha256``/``size`` (from the registry) are checked as well as the URL's fragment.
    ``force`` fetches again even when the cached file is intact.
    """
    url, fragment = split_url(spec)
    if fragment and sha256 and fragment != sha256.lower():
        raise UsageError(f"{spec}: the URL's sha256 differs from the registry's ({sha256})")
    sha256 = (fragment or sha256 or "").lower() or None
    eid = entry_id(url)
    entry_dir = models_dir() / eid
    is_file_url = urlsplit(url).scheme.lower() == "file"

    entry = read_entry(entry_dir)
    if entry is not None and not force and entry.check(sha256, size) is None:
        return entry  # from the cache: no connection at all
    if offline() and not is_file_url:
        raise OfflineError(_offline_message(spec, entry, sha256, size))

    entry_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(eid), on_wait=lambda: say(
            f"waiting for another sirenup process to download {url}")) as lock:
        entry = read_entry(entry_dir)  # another process may have fetched it meanwhile
        if entry is not None:
            problem = entry.check(sha256, size)
            if problem is None and not (force and not lock.waited):
                return entry
            if entry.corrupt():
                say(f"cached {entry.filename} is corrupt ({problem}); fetching it again")
                shutil.rmtree(entry_dir, ignore_errors=True)
            elif problem is not None:
                say(f"cached {entry.filename} does not match ({problem}); fetching it again")
        entry_dir.mkdir(parents=True, exist_ok=True)
        filename = url_filename(url)
        try:
            actual_sha, actual_size = download.fetch(url, entry_dir / filename, sha256=sha256,
                                                     size=size)
        except BaseException:
            _remove_if_empty(entry_dir)
            raise
        meta = {"url": url, "filename": filename, "sha256": actual_sha, "size": actual_size,
                "name": name, "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _write_meta(entry_dir, meta)
        return CacheEntry(eid, entry_dir, meta)


def _offline_message(spec: str, entry: CacheEntry | None, sha256: str | None,
                     size: int | None) -> str:
    if entry is None:
        state = "is not in the cache"
    else:
        state = f"is in the cache but unusable ({entry.check(sha256, size)})"
    return (f"{spec} {state}, and {ENV_OFFLINE}=1 forbids downloading it. Unset {ENV_OFFLINE} "
            f"and run 'sirenup models download {spec}' once with network access, or pass a "
            f"local weights file to --model (cache: {cache_dir()})")


# -- locking -----------------------------------------------------------------------------------

class FileLock:
    """An exclusive lock on ``path`` between processes (and threads): fcntl.flock on POSIX,
    msvcrt.locking on Windows, else an O_EXCL lock file. The lock file is removed on release
    (POSIX, O_EXCL), so a finished cache holds no lock files."""

    def __init__(self, path: Path, on_wait: Callable[[], None] | None = None):
        self.path = Path(path)
        self.on_wait = on_wait
        self.waited = False
        self._fd: int | None = None
        self._kind = ""

    def __enter__(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl  # noqa: F401
            self._kind = "fcntl"
            self._acquire_fcntl()
        except ImportError:
            try:
                import msvcrt  # noqa: F401
                self._kind = "msvcrt"
                self._acquire_msvcrt()
            except ImportError:
                self._kind = "excl"
                self._acquire_excl()
        return self

    def _waiting(self) -> None:
        if not self.waited:
            self.waited = True
            if self.on_wait is not None:
                self.on_wait()

    def _acquire_fcntl(self) -> None:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._waiting()
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            try:  # the holder before us may have removed the file: lock the current one
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self._fd = fd
                    return
            except FileNotFoundError:
                pass
            os.close(fd)

    def _acquire_msvcrt(self) -> None:
        import msvcrt

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                self._fd = fd
                return
            except OSError:
                self._waiting()
                time.sleep(LOCK_POLL_S)

    def _acquire_excl(self) -> None:
        while True:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                return
            except FileExistsError:
                with contextlib.suppress(OSError):
                    if time.time() - self.path.stat().st_mtime > STALE_LOCK_S:
                        self.path.unlink()
                        continue
                self._waiting()
                time.sleep(LOCK_POLL_S)

    def __exit__(self, *exc) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._kind == "msvcrt":
            import msvcrt

            with contextlib.suppress(OSError):
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            os.close(fd)
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still holding it: see _acquire_fcntl
        os.close(fd)  # closing releases the flock
