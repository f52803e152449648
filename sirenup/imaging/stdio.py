"""``-`` as a file name: standard input for an image read, standard output for one written.

The one place that knows about ``-``: the bytes go through a private temporary folder, so an
image from a pipe is checked and decoded, and one for a pipe encoded (atomically, every byte
checked), exactly as files are; the output's format is ``--format`` (default PNG), as a pipe
has no extension. A file really named ``-`` is ``./-``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sirenup.errors import SirenupError, UsageError, mention
from sirenup.imaging.imageio import EXTENSIONS, output_format

STDIO = "-"


def is_stdio(path: str | os.PathLike | None) -> bool:
    return path is not None and os.fspath(path) == STDIO


@contextlib.contextmanager
def stdio_paths(src: str | os.PathLike, dst: str | os.PathLike | None,
                format: str | None = None) -> Iterator[tuple[Path, Path | None]]:
    """-> (input path, output path) to work with: ``src``/``dst`` themselves, or for ``-``
    files in a temporary folder; on a clean exit an output for ``-`` is copied to stdout."""
    if not is_stdio(src) and not is_stdio(dst):
        yield Path(src), None if dst is None else Path(dst)
        return
    if is_stdio(src) and dst is None:
        raise UsageError("-: reading standard input, there is no folder to write beside it; "
                         f"give {mention('output')} FILE, or -o - for standard output")
    if is_stdio(src) and sys.stdin.isatty():
        raise UsageError("-: standard input is a terminal; pipe an image in (cat photo.png | "
                         "sirenup upscale - ...)")
    if is_stdio(dst) and sys.stdout.isatty():
        raise UsageError("-o -: standard output is a terminal; redirect it to a file or a "
                         "pipe (> out.png)")
    to_stdout = is_stdio(dst)
    with tempfile.TemporaryDirectory(prefix="sirenup-") as folder:
        if is_stdio(src):
            data = sys.stdin.buffer.read()
            if not data:
                raise SirenupError("-: standard input is empty (no image was piped in)")
            src = Path(folder, "stdin")
            src.write_bytes(data)
            del data
        if to_stdout:
            dst = Path(folder, "stdout" + EXTENSIONS[output_format(None, format or "png")])
        try:
            yield Path(src), None if dst is None else Path(dst)
        except SirenupError as error:  # messages name "-", not the temporary files
            for path in (src, dst):
                if path is not None and Path(path).parent == Path(folder):
                    error.message = error.message.replace(str(path), STDIO)
            error.args = (error.message,)
            raise
        if to_stdout:
            sys.stdout.buffer.write(dst.read_bytes())
            sys.stdout.buffer.flush()
