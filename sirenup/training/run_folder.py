"""A training run's folder (``train --out``): what is in it, who may write to it.

Torch-free: ``sirenup train`` checks the folder before torch is imported.

- Without ``--resume``, a folder that holds a run (a checkpoint, exported weights or a
  metrics log: hours of training, or the user's own files of those names) is refused: nothing
  of it is replaced, and old and new lines never mix in one metrics.jsonl.
- With ``--resume``, a folder holding weights or metrics but no checkpoint is refused as well
  (the run could not continue; a fresh one would replace them).
- The folder must be writable (a read-only file system fails now, not at the first
  checkpoint), and its metrics log a regular file (a FIFO would block the first write).
- ``RunLock``: one training at a time writes to a folder (``filelock``, held for the whole
  run); a second one fails at once, in one line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import filelock

from sirenup.errors import SirenupError, UsageError, mention
from sirenup.files import check_folder_writable, os_reason

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"
LOCK = ".sirenup-train.lock"
RUN_FILES = (CHECKPOINT, WEIGHTS, METRICS)


def check_run_folder(out: Path, resume: bool) -> None:
    """UsageError (exit 2) or SirenupError (exit 1) unless a run may write to ``out``;
    creates the folder when it does not exist."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder", option="out")
    present = [name for name in RUN_FILES if os.path.lexists(out / name)]
    if present and not resume:
        raise UsageError(f"{out}: holds a run ({', '.join(present)}); pass {mention('resume')} "
                         "to continue it, or choose another folder (nothing was changed)",
                         option="out")
    if resume and present and CHECKPOINT not in present:
        raise UsageError(f"{out}: holds {', '.join(present)} but no {CHECKPOINT} to resume "
                         "from; choose another folder (nothing was changed)", option="out")
    for name in RUN_FILES:
        try:
            mode = os.stat(out / name).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            raise SirenupError(f"{out / name}: is not a regular file (a FIFO, device or "
                               "folder); sirenup writes only regular files", option="out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SirenupError(f"{out}: cannot create the folder ({os_reason(error)})",
                           option="out") from None
    check_folder_writable(out, f"the {mention('out')} folder")


class RunLock:
    """Held while a training writes to ``out``: a second training there fails at once."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK
        self._lock = None

    def __enter__(self) -> RunLock:
        lock = filelock.FileLock(str(self.path), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise SirenupError(f"{self.path.parent}: another training is writing to this "
                               f"folder (it holds the lock {self.path.name}); wait for it to "
                               f"end, or choose another {mention('out')}", option="out") \
                from None
        except OSError as error:
            raise SirenupError(f"{self.path.parent}: cannot lock the folder "
                               f"({os_reason(error)})", option="out") from None
        self._lock = lock
        return self

    def __exit__(self, *exc) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()
