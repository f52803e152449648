"""Upscale many images into one folder (``sirenup batch``).

- Inputs are folders (their files; with ``recursive`` the whole tree, hidden folders aside,
  mirrored under the output folder), files, or glob patterns (``**`` included).
- Files are recognised by content (Pillow's header check), not by extension. A file Pillow does
  not recognise is skipped as "not an image" (Thumbs.db, .DS_Store, notes.txt) unless its
  extension claims an image (.png, .jpg, ...): then it is a failure, as is any image that does
  not decode (empty, truncated, over --max-input-pixels).
- Output names: ``<stem><suffix><ext>``, ext = the --format's, else the input's when sirenup
  writes that format, else .png (a converted name already taken becomes ``<name><suffix>.png``).
  An existing output is skipped unless ``overwrite``, so an interrupted run resumes; one that
  does not decode to its end is redone, but a file that is not an image at all (the user's,
  in an output's place) is never replaced without ``overwrite``: that input fails. An output
  name the file system refuses (too long) fails its input only.
- ``shard`` "K/N" keeps the files whose relative path hashes to K (1..N): N processes given the
  same inputs split the work with no coordination.
- One model; decoding the next images and encoding the previous one run in a small thread pool
  while the model works on the current image. Every write is atomic (imageio.atomic_write), and
  temporary files a killed run left for this run's outputs are removed.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sirenup.errors import SirenupError, UsageError, describe, mention, typed_line
from sirenup.files import TEMP_SUFFIX, os_reason, temp_prefix
from sirenup.imaging.imageio import (
    EXTENSIONS,
    FORMATS,
    completeness,
    image_extensions,
    is_temp_of,
    output_format,
    probe_image,
    read_image,
)
from sirenup.inference.planning import ImageJob, OutputSpec, prepare_job
from sirenup.text import plural

Event = Callable[[str, dict], None]


@dataclass
class BatchOptions:
    scale: float | None = None
    width: int | None = None
    height: int | None = None
    recursive: bool = False
    overwrite: bool = False
    suffix: str = ""
    format: str | None = None
    quality: int | None = None
    png_compression: int | None = None  # None: DEFAULT_PNG_COMPRESSION
    background: str | None = None
    max_input_pixels: int | None = None  # None: Pillow's limit; 0: none
    max_output_pixels: int | None = None  # None: 400 MP; 0: none
    shard: str | None = None  # "K/N"
    prefetch: int = 2  # images decoded ahead of the model


@dataclass
class Job:
    src: Path
    rel: Path  # path relative to its INPUT folder (what the output mirrors)
    dst: Path | None = None
    error: str | None = None  # a planning failure
    skip: str | None = None  # a planning skip
    named: bool = False  # named on the command line (not found in a folder)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/4' -> (2, 4); K counts from 1."""
    if text is None:
        return None
    try:
        k, n = (int(part) for part in text.strip().split("/"))
    except ValueError:
        raise UsageError(f"{text}: expected K/N, e.g. 1/4", option="shard") from None
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"{text}: K must be between 1 and N (N >= 1)", option="shard")
    return k, n


def in_shard(rel: Path, shard: tuple[int, int] | None) -> bool:
    """Whether the file at ``rel`` belongs to ``shard`` (stable across runs and machines)."""
    if shard is None:
        return True
    digest = hashlib.sha1(rel.as_posix().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shard[1] == shard[0] - 1


def find_inputs(inputs: list[str | os.PathLike], output_dir: Path, *,
                recursive: bool = False, unsearched: list[Path] | None = None) -> list[Job]:
    """Jobs (src, rel) for every file the INPUTs name, in a stable order, each file once.
    Without ``recursive``, the subfolders (hidden ones aside) that were not entered are
    appended to ``unsearched``."""
    exclude = _resolved(output_dir)
    jobs: list[Job] = []
    seen: set[Path] = set()

    def add(src: Path, rel: Path, named: bool = False) -> None:
        key = _resolved(src)
        if key not in seen:
            seen.add(key)
            jobs.append(Job(src=src, rel=rel, named=named))

    for spec in inputs:
        spec = str(spec)
        path = Path(spec)
        if path.exists():  # a folder, a file, or a FIFO/device (refused when read)
            matches = [path]
        elif glob.has_magic(spec):
            matches = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
            if not matches:
                raise UsageError(f"{spec}: no file matches this pattern")
        else:
            raise UsageError(f"{spec}: no such file or folder")
        for match in matches:
            if match.is_dir():
                files, unreadable = _walk(match, recursive, exclude, unsearched)
                for src in files:
                    add(src, src.relative_to(match))
                for folder, reason in unreadable:
                    jobs.append(Job(src=folder, rel=folder.relative_to(match),
                                    error=f"cannot read the folder ({reason})"))
            elif match.exists():
                add(match, Path(match.name), named=True)
    return jobs


def plan_outputs(jobs: list[Job], output_dir: Path, *, suffix: str = "",
                 format: str | None = None) -> None:
    """Set ``job.dst`` for every job, no two alike (case-insensitive), deterministically.

    Names that keep their extension are claimed first, then converted ones from image
    extensions, then the rest (likely non-images), so a stray file never takes an image's name.
    """
    forced = EXTENSIONS[output_format(None, format)] if format else None

    def rank(job: Job) -> int:
        ext = job.src.suffix.lower()
        if forced is None and ext.lstrip(".") in FORMATS:
            return 0
        return 1 if ext in image_extensions() else 2

    check_suffix(suffix)
    claimed: dict[str, Job] = {}
    planned = [job for job in jobs if job.error is None]  # unreadable folders have no output
    for job in sorted(planned, key=rank):  # sorted() is stable: input order within a rank
        folder = output_dir / job.rel.parent
        stem, name = Path(job.rel.name).stem, job.rel.name
        if forced is not None:
            candidates = [f"{stem}{suffix}{forced}", f"{name}{suffix}{forced}"]
        elif rank(job) == 0:
            candidates = [f"{stem}{suffix}{job.src.suffix}"]
        else:
            candidates = [f"{stem}{suffix}.png", f"{name}{suffix}.png"]
        for candidate in candidates:
            key = (folder / candidate).as_posix().lower()
            if key not in claimed:
                claimed[key] = job
                job.dst = folder / candidate
                break
        else:
            other = claimed[(folder / candidates[0]).as_posix().lower()]
            job.dst = folder / candidates[0]
            job.error = f"output {job.dst} is also the output of {other.src}"
        if job.error is None and not _inside(job.dst, output_dir):
            job.error = f"output {job.dst} would be outside {output_dir}; not written"
    outputs = {_resolved(job.dst): job for job in planned if job.error is None}
    for job in planned:
        source = _resolved(job.src)
        owner = outputs.get(source)
        if owner is not None and owner is not job:  # e.g. OUTPUT_DIR inside an INPUT folder
            job.error, job.skip = None, f"it is the output of {owner.src}"
        elif job.error is None and source == _resolved(job.dst):
            job.error = ("the output would replace the input (use another folder or "
                         f"{mention('suffix')})")


def check_suffix(suffix: str) -> None:
    """--suffix is part of a file name: no folder separators, no '..', no NUL."""
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in suffix for sep in separators) or ".." in suffix or "\0" in suffix:
        raise UsageError(f"{suffix}: must not contain '/', '\\', '..' or NUL (it is appended "
                         "to file names inside OUTPUT_DIR)", option="suffix")


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (resolved: links and '..' followed) lies under ``folder``."""
    return _resolved(path).is_relative_to(_resolved(folder))


def run_batch(inputs: list[str | os.PathLike], output_dir: str | os.PathLike,
              options: BatchOptions, load_upscaler: Callable[[], object], *,
              on_event: Event | None = None, spell: Callable[[str], str] = str) -> dict:
    """Upscale every image the INPUTs name into ``output_dir``; one bad file never stops it.

    ``load_upscaler()`` is called once, after the options and inputs are checked.
    ``on_event(kind, record)``, from the calling thread: 'failed' ({input, output, error}),
    'skipped' ({input, output, reason}), 'start' ({total, model, device}: the images to
    process), 'warning' ({input, message}), 'progress' ({input, done, total}: the current
    image's output pixels, after each band), 'done' (the image's record), 'note' ({message}:
    subfolders not searched without ``recursive``).
    ``spell(option)``: how a failure's reason names an option (the CLI: its flag).
    -> the report (see ``sirenup batch --json``).
    """
    start = time.perf_counter()
    emit = on_event or (lambda kind, record: None)
    output_dir = Path(output_dir)
    if not inputs:
        raise UsageError("give at least one INPUT and an OUTPUT_DIR")
    shard = parse_shard(options.shard)
    output_spec = OutputSpec.checked(
        scale=options.scale, width=options.width, height=options.height, format=options.format,
        quality=options.quality, png_compression=options.png_compression,
        background=options.background, max_input_pixels=options.max_input_pixels,
        max_output_pixels=options.max_output_pixels)
    if options.format:
        output_format(None, options.format)
    check_suffix(options.suffix)
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"{output_dir}: exists and is not a folder")
    if not options.suffix and not options.format:
        for spec in inputs:
            if Path(spec).is_dir() and _resolved(Path(spec)) == _resolved(output_dir):
                raise UsageError(f"{output_dir}: is the input folder, so the outputs would "
                                 "replace the inputs; choose another folder or "
                                 f"{mention('suffix')}")

    unsearched: list[Path] = []
    jobs = find_inputs(inputs, output_dir, recursive=options.recursive, unsearched=unsearched)
    if unsearched:
        emit("note", {"message": _spelled(f"{plural(len(unsearched), 'subfolder')} not "
                                          f"searched ({mention('recursive')} goes through "
                                          "them)", spell)})
    plan_outputs(jobs, output_dir, suffix=options.suffix, format=options.format)
    # An unreadable folder is reported by every shard: each may have missed files in it.
    jobs = [job for job in jobs if job.dst is None or in_shard(job.rel, shard)]
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SirenupError(f"{output_dir}: cannot create the folder "
                           f"({error.strerror or error})") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise SirenupError(f"{output_dir}: the output folder is not writable")
    _remove_stale_temps(jobs)

    results: list[dict] = []
    failures: list[dict] = []
    skipped: list[dict] = []
    not_images = 0

    def progress(src: str, done: int, total: int) -> None:
        emit("progress", {"input": src, "done": done, "total": total})

    def fail(job: Job, error: Exception | str) -> None:
        record = {"input": str(job.src), "output": None if job.dst is None else str(job.dst),
                  "error": _reason(error, job, spell)}
        failures.append(record)
        emit("failed", record)

    def skip(job: Job, reason: str) -> None:
        record = {"input": str(job.src), "output": str(job.dst),
                  "reason": _spelled(reason, spell)}
        skipped.append(record)
        emit("skipped", record)

    todo: list[Job] = []
    claims_image = image_extensions()

    def classify(job: Job) -> str:
        """-> 'todo', 'not image' or 'reported' (a failure or skip, already reported)."""
        if job.error is not None:
            fail(job, job.error)
        elif job.skip is not None:
            skip(job, job.skip)
        elif _is_special(job.src):
            if not job.named:
                skip(job, "not a regular file")
                return "reported"
            fail(job, SirenupError("not a regular file (a FIFO, device or socket); "
                                   "sirenup reads only regular files"))
        elif _exists(job.dst) and not options.overwrite and \
                (done := completeness(job.dst, options.max_output_pixels)) is not False:
            if done is True:
                skip(job, f"output exists (use {mention('overwrite')} to redo it)")
            else:  # "could not check it" is not "it is truncated": the file stays
                fail(job, SirenupError(f"{job.dst}: exists, and whether it is complete could "
                                       f"not be checked ({done}); not replaced (use "
                                       f"{mention('overwrite')} to redo it)"))
        elif (recognised := probe_image(job.src) is not None) \
                or job.src.suffix.lower() in claims_image:
            try:  # the reason read_image gives: empty, not an image, permission denied
                if not recognised:
                    read_image(job.src, max_pixels=options.max_input_pixels)
            except Exception as error:
                fail(job, error)
                return "reported"
            if not _exists(job.dst) or options.overwrite:
                return "todo"
            if probe_image(job.dst) is None:  # not an output cut short: a file of the user's
                fail(job, SirenupError(f"{job.dst}: exists and is not an image; not replaced "
                                       f"(use {mention('overwrite')} to replace it)"))
                return "reported"
            emit("warning", {"input": str(job.src),
                             "message": f"{job.dst}: exists but does not decode to the end "
                                        "(truncated?); redoing it"})
            return "todo"
        else:
            skip(job, "not an image")
            return "not image"
        return "reported"

    for job in jobs:
        try:
            outcome = classify(job)
        except OSError as error:  # the output's name: too long for the file system, a loop
            fail(job, f"cannot use the output name {job.dst} ({os_reason(error)})")
            continue
        if outcome == "todo":
            todo.append(job)
        not_images += outcome == "not image"

    upscaler = load_upscaler()
    from sirenup.inference.upscaler import process  # torch: only once the inputs are checked
    model, device = getattr(upscaler, "model_name", None), str(getattr(upscaler, "device", ""))
    emit("start", {"total": len(todo), "model": model, "device": device})
    out_pixels = 0

    def prepare(job: Job) -> ImageJob:
        return prepare_job(job.src, job.dst, output_spec)

    def write(job: Job, encode: Callable[[], None]) -> None:
        try:
            job.dst.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SirenupError(f"cannot create the folder {job.dst.parent} "
                               f"({(error.strerror or str(error)).lower()})") from None
        encode()

    def finish(pending: tuple[Job, Future, dict] | None) -> None:
        nonlocal out_pixels
        if pending is None:
            return
        job, future, record = pending
        try:
            future.result()
        except Exception as error:
            fail(job, error)
            return
        out_pixels += record["out_size"][0] * record["out_size"][1]
        results.append(record)
        emit("done", record)

    prefetch = max(1, options.prefetch)
    pool = ThreadPoolExecutor(max_workers=prefetch + 1, thread_name_prefix="sirenup-io")
    decoding: deque[tuple[Job, Future]] = deque()
    queue = deque(todo)
    writing: tuple[Job, Future, dict] | None = None
    try:
        while queue or decoding:
            while queue and len(decoding) < prefetch:
                job = queue.popleft()
                decoding.append((job, pool.submit(prepare, job)))
            job, future = decoding.popleft()
            if queue:
                nxt = queue.popleft()
                decoding.append((nxt, pool.submit(prepare, nxt)))
            try:
                prepared = future.result()
            except Exception as error:
                fail(job, error)
                continue
            finally:
                future = None  # the decoded image lives only as long as it is needed
            for message in prepared.warnings:
                emit("warning", {"input": str(job.src), "message": message})
            began = time.perf_counter()
            try:  # the output's array is freed before it is encoded, as in upscale
                facts, encode = process(upscaler, prepared, functools.partial(
                    progress, str(job.src)))
            except Exception as error:
                fail(job, error)
                continue
            record = {**facts, "seconds": round(time.perf_counter() - began, 3),
                      "warnings": prepared.warnings}
            del prepared
            finish(writing)  # the previous write overlapped this image's compute
            writing = (job, pool.submit(write, job, encode), record)
            del encode
        finish(writing)
        writing = None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    seconds = time.perf_counter() - start
    megapixels = out_pixels / 1e6
    return {
        "inputs": [str(spec) for spec in inputs],
        "output_dir": str(output_dir),
        "model": model,
        "device": device,
        "shard": options.shard,
        "files": len(jobs),
        "done": len(results),
        "skipped": len(skipped),
        "skipped_existing": sum(r["reason"].startswith("output exists") for r in skipped),
        "not_images": not_images,
        "subfolders_not_searched": len(unsearched),
        "failed": len(failures),
        "output_megapixels": round(megapixels, 3),
        "seconds": round(seconds, 3),
        "megapixels_per_second": round(megapixels / seconds, 3) if seconds > 0 else None,
        "results": results,
        "failures": failures,
        "skipped_files": skipped,
    }


def _walk(root: Path, recursive: bool, exclude: Path, unsearched: list[Path] | None = None
          ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files of ``root`` (the whole tree if ``recursive``; hidden folders and ``exclude``
    not entered), sorted by relative path, and the folders that could not be listed, with
    why (each one a failure of the batch, never a silent skip). FIFOs, devices and sockets
    are not files here."""
    files: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = _list_folder(folder)
        except OSError as error:
            unreadable.append((folder, os_reason(error)))
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):  # as os.walk: no link loops
                    if not entry.name.startswith(".") and _resolved(path) != exclude:
                        if recursive:
                            pending.append(path)
                        elif unsearched is not None:
                            unsearched.append(path)
                elif entry.is_symlink() and not os.path.exists(path):
                    files.append(path)  # a link to nothing (or a loop): read_image says so
                elif entry.is_file():
                    files.append(path)
            except OSError:
                continue  # vanished meanwhile
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    unreadable.sort(key=lambda item: item[0].as_posix())
    return files, unreadable


def _list_folder(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as found:
        return list(found)


def _remove_stale_temps(jobs: list[Job]) -> None:
    """Remove temporary files a killed run left for the outputs of ``jobs`` (only those: a
    concurrent process working on another shard keeps its own)."""
    targets: dict[Path, dict[str, str]] = {}  # folder -> {temporary-name prefix: output name}
    for job in jobs:
        if job.dst is not None:
            targets.setdefault(job.dst.parent, {})[temp_prefix(job.dst.name)] = job.dst.name
    for folder, prefixes in targets.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            if not (entry.startswith(".") and entry.endswith(TEMP_SUFFIX)):
                continue
            prefix = entry[:entry.rfind(".", 0, -len(TEMP_SUFFIX)) + 1]
            target = prefixes.get(prefix)
            if target is not None and is_temp_of(entry, target):
                try:
                    (folder / entry).unlink()
                except OSError:
                    pass


def _is_special(path: Path) -> bool:
    """A FIFO, device or socket (reading one could block forever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # missing or unreadable: read_image says why
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; a name the file system refuses (too long) raises OSError."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _resolved(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (Python < 3.13)
        return Path(os.path.abspath(path))


def _spelled(text: str, spell: Callable[[str], str]) -> str:
    """A reason or note of this module's, the options it mentions spelled by ``spell``."""
    return describe(SirenupError(text), spell)


def _reason(error: Exception | str, job: Job, spell: Callable[[str], str] = str) -> str:
    """The error's message without a leading '<path>: ' (the record names the file)."""
    if isinstance(error, str):
        return _spelled(error, spell)
    text = describe(error, spell).strip() if isinstance(error, SirenupError) else \
        typed_line(error)
    for path in (job.src, job.dst):  # before the first line is taken: a name may hold '\n'
        prefix = f"{path}: "
        if path is not None and text.startswith(prefix):
            text = text[len(prefix):]
            break
    return text.splitlines()[0] if text.strip() else type(error).__name__
