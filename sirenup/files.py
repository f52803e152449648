"""Files sirenup writes are complete or absent; files it reads are regular files.

``atomic_write`` is the one way sirenup writes a file (images, weights, checkpoints, the
registry, the model cache): the content is produced in memory first, so an encoder error never
touches the disk, then written to a temporary file beside the target with every short write
and OS error checked, flushed, fsynced, its size compared with what was meant to be written,
and only then renamed over the target. Any failure removes the temporary file and raises
``SirenupError`` with one line: the target keeps its old content, or does not exist.

Temporary names are ``.<name>.<8 hex>.tmp``, the name cut so the whole stays within 255 bytes
(the usual limit of one path component), so a 250-character file name still works.

Standard library only: the CLI's start-up imports this (no torch).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from sirenup.errors import SirenupError

TEMP_SUFFIX = ".tmp"
NAME_MAX = 255  # bytes in one path component on the common file systems
_RANDOM_HEX = 8
WRITE_CHUNK = 1 << 20


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], object]) -> None:
    """Let ``writer(buffer)`` produce the content in memory, then ``atomic_write_bytes`` it.

    Any exception of ``writer`` (an encoder's error) becomes a one-line SirenupError, and
    nothing is written.
    """
    buffer = io.BytesIO()
    try:
        writer(buffer)
    except (SirenupError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:
        raise SirenupError(f"{path}: cannot encode ({first_line(error)})") from None
    atomic_write_bytes(path, buffer.getbuffer())


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview, *,
                       mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically: complete, fsynced and renamed, or not at all.

    ``mode``: the file's permissions (0o644: images and weights are meant to be shared;
    0o600 for what may hold a secret, such as a URL with a token). Only a regular file (or
    nothing) is replaced: a device, FIFO or socket in ``path``'s place is refused."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise SirenupError(f"{path}: the folder {folder} does not exist")
    check_output_path(path)
    try:
        fd, tmp = _create_temp(path, mode)
    except OSError as error:
        raise SirenupError(f"{path}: cannot write ({os_reason(error)})") from None
    try:
        try:
            _write_all(fd, memoryview(data).cast("B"))
            os.fsync(fd)
            written = os.fstat(fd).st_size
            if written != len(data):
                raise OSError(errno.EIO, f"wrote {written} of {len(data)} bytes")
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise SirenupError(f"{path}: cannot write ({os_reason(error)}); nothing was "
                               "written") from None
        raise
    _fsync_folder(folder)


def _write(fd: int, data: memoryview) -> int:
    """One ``os.write`` (tests replace this to simulate a full disk)."""
    return os.write(fd, data)


def _write_all(fd: int, data: memoryview) -> None:
    """Write every byte of ``data``: a short write is retried, a write of nothing is a full
    disk (some file systems report it so instead of ENOSPC)."""
    offset = 0
    while offset < len(data):
        count = _write(fd, data[offset:offset + WRITE_CHUNK])
        if count <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        offset += count


def temp_prefix(name: str) -> str:
    """'.<name>.' with ``name`` cut (at a character boundary) so that the temporary name
    ``.<name>.<8 hex>.tmp`` fits in NAME_MAX bytes."""
    room = NAME_MAX - len(b"..") - _RANDOM_HEX - len(TEMP_SUFFIX)
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > room:
        name = encoded[:room].decode("utf-8", "ignore")
    return f".{name}."


def _create_temp(path: Path, mode: int = 0o644) -> tuple[int, str]:
    prefix = temp_prefix(path.name)
    for _ in range(100):
        tmp = path.parent / f"{prefix}{secrets.token_hex(_RANDOM_HEX // 2)}{TEMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         mode & 0o600)  # never readable by others before the chmod below
        except FileExistsError:
            continue
        try:
            os.chmod(tmp, mode)  # not the umask's: weights and images are meant to be shared
        except OSError:
            pass
        return fd, str(tmp)
    raise OSError(errno.EEXIST, "no free temporary name")


def is_temp_of(name: str, target: str) -> bool:
    """Whether ``name`` is a temporary file ``atomic_write`` made for a file named ``target``
    (left behind only when the process was killed)."""
    prefix = temp_prefix(target)
    return (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)
            and "." not in name[len(prefix):-len(TEMP_SUFFIX)])


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows it (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_regular_file(path: str | os.PathLike) -> None:
    """SirenupError unless ``path`` is a regular file (a FIFO or a device would block or never
    end). Follows symbolic links, as opening the file would."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SirenupError(f"{path}: no such file") from None
    except OSError as error:
        raise SirenupError(f"{path}: cannot read ({os_reason(error)})") from None
    if stat.S_ISDIR(mode):
        raise SirenupError(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise SirenupError(f"{path}: is {_kind(mode)}; sirenup reads only regular files")


def _kind(mode: int) -> str:
    return "a FIFO" if stat.S_ISFIFO(mode) else "a device" if (
        stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else "a socket" if stat.S_ISSOCK(mode) \
        else "not a regular file"


def check_output_path(path: str | os.PathLike) -> None:
    """SirenupError unless ``path`` may receive an output file: it does not exist (a link to
    nothing included), or it is a regular file (or a link to one). A device (``/dev/null``,
    ``/proc/self/fd/1``), a FIFO or a socket, or a link to one, is refused in one line:
    the atomic rename would replace the node itself with a regular file. A folder is refused
    too. The one check of every output path (the CLI's, before any work, and
    ``atomic_write_bytes``'s)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as error:
        if error.errno == errno.ELOOP:  # a link loop points at nothing: the rename replaces
            return  # the link itself
        raise SirenupError(f"{path}: cannot write ({os_reason(error)})") from None
    if stat.S_ISDIR(mode):
        raise SirenupError(f"{path}: is a folder; give a file name for the output")
    if not stat.S_ISREG(mode):
        raise SirenupError(f"{path}: is {_kind(mode)}; sirenup writes its outputs only to "
                           "regular files")


def check_folder_writable(folder: str | os.PathLike, what: str = "the output folder") -> None:
    """SirenupError unless ``folder`` exists and this process may create files in it (a
    read-only file system or folder is known before any work)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SirenupError(f"{folder}: {what} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only_mount(folder) else "permission denied"
        raise SirenupError(f"{folder}: {what} is not writable ({reason})")


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def read_bounded(path: str | os.PathLike, limit: int) -> bytes:
    """The content of ``path``, a regular file of at most ``limit`` bytes (metadata: a
    meta.json, a JSON report). A FIFO is not waited on (opened non-blocking, then refused),
    a device such as /dev/zero or a link to one is refused, and no more than ``limit`` bytes
    are ever read: SirenupError (one line) otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise SirenupError(f"{path}: no such file") from None
    except OSError as error:
        raise SirenupError(f"{path}: cannot read ({os_reason(error)})") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SirenupError(f"{path}: is {_kind(mode)}; sirenup reads only regular files")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SirenupError(f"{path}: more than {limit} bytes; not read (damaged?)")
    return data


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` and a newline to the log ``path`` (created if missing): a regular file
    only (a FIFO there is refused at once instead of blocking the writer for ever)."""
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_BINARY", 0))
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:  # ENXIO: a FIFO that nobody reads
        raise SirenupError(f"{path}: cannot write ({os_reason(error)})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SirenupError(f"{path}: is {_kind(mode)}; sirenup writes only regular files")
        _write_all(fd, memoryview((line + "\n").encode("utf-8")))
    except OSError as error:
        raise SirenupError(f"{path}: cannot write ({os_reason(error)})") from None
    finally:
        os.close(fd)


def os_reason(error: OSError) -> str:
    return error.strerror.lower() if error.strerror else first_line(error)


def first_line(error: object, empty: str | None = None) -> str:
    """The first line of an error's (or a server's message's) text; if it has none,
    ``empty``, else the error's type name."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if empty is None else empty
    return text.splitlines()[0]

