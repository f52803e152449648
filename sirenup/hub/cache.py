"""The model cache: where downloaded weights live, how they are shared and verified.

Folder: ``$SIRENUP_CACHE_DIR`` if set, else ``platformdirs.user_cache_dir("sirenup")``::

    models/<id>/<file>                    a downloaded weights file, verified on every use
    models/<id>/meta.json                 its URL, sha256, size, pinned, registry name, time
    models/<id>/<file>.<unique>.incomplete  a download in progress, or one to resume
    models/<id>.lock                      locked (filelock) while one process fetches <id>;
                                          the empty file stays

``<id>`` is the URL's file stem plus 12 hex digits of the URL's sha256, so every URL has one
entry. ``ensure(url)`` returns a verified entry: from the cache when its file still matches its
sha256 (no connection at all), else fetched under the lock (a second process waits, then uses
the first one's file). A file whose hash no longer matches is deleted and fetched again.
``SIRENUP_OFFLINE=1`` never opens a connection.

A download is capped (the registry's size, else ``max_size``) and must load as weights before
its meta.json is written, so an endless response or an HTML page never enters the cache.
``pinned``: whether a sha256 was known before the download (the URL's ``#sha256=`` or the
registry's). An unpinned entry is checked against the hash recorded when it arrived (later
damage shows) but is listed as *unpinned*, never as verified.
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

import filelock
import platformdirs

from sirenup.errors import SirenupError, UsageError, mention
from sirenup.files import (  # noqa: F401 (sha256_file: API)
    atomic_write_bytes,
    os_reason,
    read_bounded,
    sha256_file,
)
from sirenup.hub import download
from sirenup.hub.download import ENV_OFFLINE, OfflineError, offline, say
from sirenup.untrusted import redact_url

ENV_CACHE = "SIRENUP_CACHE_DIR"
META = "meta.json"
MAX_STEM = 120  # characters of a URL's file name kept for the cached file's name
# Largest download when the registry records no size (--max-size): sirenup models are a few
# MB, so a response beyond this is not a model (an endless stream, a wrong URL).
DEFAULT_MAX_DOWNLOAD = 1 << 30


def cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE, "").strip()
    if env:
        try:
            return Path(env).expanduser()
        except RuntimeError:  # ~user of no such user: kept as written, as the shell does
            return Path(env)
    return Path(platformdirs.user_cache_dir("sirenup"))


def models_dir() -> Path:
    return cache_dir() / "models"


# -- URLs --------------------------------------------------------------------------------------

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def split_url(spec: str) -> tuple[str, str | None]:
    """'URL#sha256=HEX' -> ('URL', 'hex'); a URL without a fragment -> ('URL', None)."""
    url, _, fragment = spec.strip().partition("#")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as error:  # an unclosed [IPv6] bracket
        raise UsageError(f"{redact_url(spec)}: not a valid URL ({error})") from None
    if scheme not in {"http", "https", "file"}:
        raise UsageError(f"{redact_url(spec)}: "
                         f"only http://, https:// and file:// URLs are supported")
    if scheme != "file":  # a malformed URL is not a retry's business
        _check_network_url(spec, url, scheme)
    if not fragment:
        return url, None
    key, _, value = fragment.partition("=")
    if key.lower() != "sha256" or not _SHA256.fullmatch(value):
        raise UsageError(f"{redact_url(spec)}: the URL fragment must be #sha256=<64 hex digits>")
    return url, value.lower()


def _check_network_url(spec: str, url: str, scheme: str) -> None:
    """UsageError unless ``url`` names a host, a valid port and no spaces or control
    characters (http.client refuses those only after the retries)."""
    if any(not char.isprintable() or char.isspace() for char in url):
        raise UsageError(f"{redact_url(spec)}: "
                         f"the URL holds spaces or control characters (write them "
                         "as %20 and the like)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number 0-65535)
    except ValueError as error:
        raise UsageError(f"{redact_url(spec)}: not a valid URL ({error})") from None
    if not parts.hostname:
        raise UsageError(f"{redact_url(spec)}: "
                         f"the URL names no host (expected {scheme}://HOST/PATH)")


def url_filename(url: str) -> str:
    """The weights file name a URL gives (its last path segment, made safe)."""
    name = unquote(urlsplit(url).path.rstrip("/").rpartition("/")[2])
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    known = [ext for ext in (".safetensors", ".pt", ".pth") if name.lower().endswith(ext)]
    if known:
        name, suffix = name[:-len(known[0])], name[-len(known[0]):]
    else:
        suffix = ".safetensors"
    # the partial download's name adds ~30 characters: the whole stays far below NAME_MAX
    return name[:MAX_STEM] + suffix


def entry_id(url: str) -> str:
    stem = Path(url_filename(url)).stem[:48]
    return f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


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

    @property
    def pinned(self) -> bool:
        """Whether the download was checked against a sha256 given beforehand (a URL's
        #sha256= or the registry's). Without one, the recorded sha256 is only what arrived:
        it shows later damage, but says nothing about whether the right file came."""
        return bool(self.meta.get("pinned"))

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
        """``verified``: True (intact, pinned sha256), False (``problem`` says why), None (not
        checked, or intact but unpinned: never reported as verified)."""
        problem = self.check() if verify else None
        return {"id": self.id, "name": self.name, "url": self.url, "path": str(self.path),
                "size": self.meta.get("size"), "sha256": self.sha256,
                "downloaded": self.meta.get("downloaded"), "pinned": self.pinned,
                "verified": verified_state(problem, self.pinned) if verify else None,
                "problem": problem}


def verified_state(problem: str | None, pinned: bool) -> bool | None:
    """False when there is a problem, True when intact and pinned, None when intact but
    unpinned (listed as such)."""
    if problem is not None:
        return False
    return True if pinned else None


MAX_META = 1 << 16  # bytes of a meta.json: a few hundred in practice


def read_entry(entry_dir: Path) -> CacheEntry | None:
    """The entry in ``entry_dir``, or None when its meta.json is missing, damaged or not
    ours. The file is read bounded: a FIFO is not waited on, /dev/zero not read to the end
    of memory (``files.read_bounded``)."""
    try:
        meta = json.loads(read_bounded(entry_dir / META, MAX_META).decode("utf-8"))
        if not isinstance(meta, dict) or not _plain_name(meta.get("filename")):
            return None  # not ours, or edited to point outside its folder
    except (SirenupError, OSError, ValueError):
        return None
    if not all(isinstance(meta.get(key), kinds) for key, kinds in _META_TYPES.items()) \
            or isinstance(meta.get("size"), bool):
        return None  # edited by hand or damaged: not an entry to trust (or to print)
    return CacheEntry(entry_dir.name, entry_dir, meta)


# meta.json's fields and their types (None: absent); "filename" is checked by _plain_name
_META_TYPES = {"url": (str, type(None)), "sha256": (str, type(None)), "size": (int, type(None)),
               "pinned": (bool, type(None)), "name": (str, type(None)),
               "downloaded": (str, type(None))}


def _plain_name(name: object) -> bool:
    return (isinstance(name, str) and name not in {"", ".", ".."} and "/" not in name
            and "\\" not in name and "\0" not in name)


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


_ENTRY_ID = re.compile(r"[A-Za-z0-9._-]+-[0-9a-f]{12}")


def _partial_entry(path: Path) -> bool:
    """A folder an interrupted download left: an entry's name, only partial downloads in
    it (no meta.json yet)."""
    if not (_ENTRY_ID.fullmatch(path.name) and path.is_dir() and not path.is_symlink()):
        return False
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return all(name.endswith((".incomplete", download.VALIDATOR_SUFFIX)) for name in names)


def remove_all() -> tuple[int, int, list[str]]:
    """Remove every entry sirenup created in the cache (complete ones, the folders of
    interrupted downloads, their lock files); nothing else: a shared folder may hold other
    files. -> (entries removed, bytes freed, names left in the models folder)."""
    root = models_dir()
    if not root.is_dir():
        return 0, 0, []
    count = freed = 0
    for entry in entries():
        freed += folder_size(entry.dir)
        remove(entry)
        count += 1
    for path in sorted(root.iterdir()):
        if _partial_entry(path):
            freed += folder_size(path)
            shutil.rmtree(path, ignore_errors=True)
    for path in sorted(root.iterdir()):  # locks of entries that are gone, empty as made
        if path.name.endswith(".lock") and _ENTRY_ID.fullmatch(path.name[:-5]) and \
                path.is_file() and not path.is_symlink() and path.stat().st_size == 0 and \
                not (root / path.name[:-5]).exists():
            path.unlink(missing_ok=True)
    left = sorted(p.name for p in root.iterdir())
    if not left:
        _remove_if_empty(root)
    return count, freed, left


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
    """meta.json, readable by its owner only: its URL may carry a token."""
    atomic_write_bytes(entry_dir / META, (json.dumps(meta, indent=2) + "\n").encode("utf-8"),
                       mode=0o600)


def _make_cache_folder(folder: Path) -> None:
    """Create the cache's models folder, or say in one line why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SirenupError(f"{folder}: cannot create the model cache folder "
                           f"({os_reason(error)}); set {ENV_CACHE} to a writable folder") \
            from None


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def ensure(spec: str, *, sha256: str | None = None, size: int | None = None,
           name: str | None = None, force: bool = False,
           max_size: int | None = None) -> CacheEntry:
    """A verified cache entry for the URL ``spec`` (``#sha256=`` allowed), fetched if needed.

    ``sha256``/``size`` (from the registry) are checked as well as the URL's fragment.
    ``force`` fetches again even when the cached file is intact. A download is capped at
    ``size`` when known, else at ``max_size`` (None: DEFAULT_MAX_DOWNLOAD), and must load as
    a valid weights file (``sirenup.models.weights.validate_file``) before it enters the cache.
    """
    url, fragment = split_url(spec)
    if fragment and sha256 and fragment != sha256.lower():
        raise UsageError(f"{redact_url(spec)}: "
                         f"the URL's sha256 differs from the registry's ({sha256})")
    sha256 = (fragment or sha256 or "").lower() or None
    eid = entry_id(url)
    entry_dir = models_dir() / eid
    is_file_url = urlsplit(url).scheme.lower() == "file"

    entry = read_entry(entry_dir)
    if entry is not None and not force and entry.check(sha256, size) is None:
        return entry  # from the cache: no connection at all
    if offline() and not is_file_url:
        raise OfflineError(_offline_message(spec, entry, sha256, size))

    _make_cache_folder(entry_dir.parent)
    with FileLock(lock_path(eid), on_wait=lambda: say(
            f"waiting for another sirenup process to download {redact_url(url)}")) as lock:
        entry = read_entry(entry_dir)  # another process may have fetched it meanwhile
        if entry is not None:
            problem = entry.check(sha256, size)
            if problem is None and not (force and not lock.waited):
                return entry
            if entry.corrupt():
                say(f"cached {entry.filename} is corrupt ({problem}); fetching it again")
                shutil.rmtree(entry_dir, ignore_errors=True)
            elif problem is not None:  # intact: the hash asked for is another
                asked = "the URL's #sha256=" if fragment else "the registry's sha256"
                say(f"cached {entry.filename} is intact (sha256 {entry.sha256}, as downloaded) "
                    f"but {asked} is {sha256}; downloading it again to compare")
        _make_cache_folder(entry_dir)
        filename = url_filename(url)
        cap = size if size is not None else (
            DEFAULT_MAX_DOWNLOAD if max_size is None else max_size)
        try:
            actual_sha, actual_size = download.fetch(
                url, entry_dir / filename, sha256=sha256, size=size, max_size=cap,
                check=lambda part: _check_weights(part, filename))
        except download.ChecksumError as error:
            _remove_if_empty(entry_dir)
            if not fragment:
                raise
            raise download.ChecksumError(f"{error} (the file the URL serves is not the one "
                                         "its #sha256= names: check the hash you gave)") \
                from None
        except BaseException:
            _remove_if_empty(entry_dir)
            raise
        meta = {"url": url, "filename": filename, "sha256": actual_sha, "size": actual_size,
                "pinned": sha256 is not None, "name": name,
                "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _write_meta(entry_dir, meta)
        return CacheEntry(eid, entry_dir, meta)


def _check_weights(path: Path, filename: str) -> None:
    """Raise (one line, without the temporary path) unless ``path`` is a usable weights file;
    ``filename`` is the name it will have (.safetensors, or .pt/.pth)."""
    # lazy: weights imports torch; the registry imports this module, and the torch-free
    # checks before the work (train --init, tests/test_startup.py) import the registry
    from sirenup.models.weights import WeightsError, validate_file

    try:
        validate_file(path, suffix=Path(filename).suffix)
    except WeightsError as error:
        text = str(error)
        prefix = f"{path}: "
        raise download.DownloadError(text[len(prefix):] if text.startswith(prefix) else text) \
            from None


def _offline_message(spec: str, entry: CacheEntry | None, sha256: str | None,
                     size: int | None) -> str:
    if entry is None:
        state = "is not in the cache"
    else:
        state = f"is in the cache but unusable ({entry.check(sha256, size)})"
    return (f"{redact_url(spec)} "
            f"{state}, and {ENV_OFFLINE}=1 forbids downloading it. Unset {ENV_OFFLINE} "
            f"and run 'sirenup models download {redact_url(spec)}' once with network access, "
            "or pass a "
            f"local weights file to {mention('model')} (cache: {cache_dir()})")


# -- locking -----------------------------------------------------------------------------------

class FileLock:
    """An exclusive lock on ``path`` between processes and threads (the ``filelock`` package,
    as huggingface_hub uses). ``on_wait`` is called once when another holder makes us wait,
    and ``waited`` tells afterwards. The (empty) lock file stays: removing it while another
    process waits on it would let a third one take a second lock."""

    def __init__(self, path: Path, on_wait: Callable[[], None] | None = None):
        self.path = Path(path)
        self.on_wait = on_wait
        self.waited = False
        self._lock = None

    def __enter__(self) -> FileLock:
        _make_cache_folder(self.path.parent)
        self._lock = filelock.FileLock(str(self.path), thread_local=False)
        try:
            try:
                self._lock.acquire(timeout=0)
            except filelock.Timeout:
                self.waited = True
                if self.on_wait is not None:
                    self.on_wait()
                self._lock.acquire()
        except filelock.Timeout:
            raise
        except OSError as error:  # a read-only cache folder (Timeout is an OSError too)
            raise SirenupError(f"{self.path}: cannot create the lock file "
                               f"({os_reason(error)}); set {ENV_CACHE} to a writable "
                               "folder") from None
        return self

    def __exit__(self, *exc) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()
