"""``--shard auto``: this task's part of a folder, from the scheduler's array-job variables.

A batch over a million files is split by ``--shard K/N`` (``inference.batch.in_shard`` hashes each
relative path, so N processes split the files with no coordination). Under a scheduler the
task's index is in the environment; ``auto`` reads it:

- Slurm job arrays (``sbatch --array=1-N``): ``SLURM_ARRAY_TASK_ID`` and
  ``SLURM_ARRAY_TASK_COUNT``; ``SLURM_ARRAY_TASK_MIN`` and ``SLURM_ARRAY_TASK_STEP`` map ids
  such as 1..N or 0, 4, 8, ... onto 1..N.
- Kubernetes indexed Jobs (``completionMode: Indexed``): ``JOB_COMPLETION_INDEX`` (from 0);
  the pod is not told the count, so it comes from ``--shard-count N`` or ``SIRENUP_SHARD_COUNT``
  (set it to the Job's ``completions``).

Only the standard library: the CLI resolves the option before anything heavy is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from sirenup.errors import UsageError, mention

COUNT_VARIABLE = "SIRENUP_SHARD_COUNT"
NONE_FOUND = ("auto: no array job in the environment: expected Slurm's "
              "SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (sbatch --array), or a Kubernetes "
              f"indexed Job's JOB_COMPLETION_INDEX with {mention('shard_count')} N or "
              f"{COUNT_VARIABLE}; elsewhere give {mention('shard')} K/N")


def resolve_shard(shard: str | None, count: int | None = None,
                  environ: Mapping[str, str] | None = None) -> str | None:
    """The --shard option as "K/N" (K from 1): "auto" is read from ``environ`` (default
    os.environ); anything else passes through unchanged (``batch.parse_shard`` checks it).
    ``count``: --shard-count, only meaningful with auto."""
    if shard is None or shard.strip().lower() != "auto":
        if count is not None:
            raise UsageError(f": only with {mention('shard')} auto ({mention('shard')} K/N "
                             "names the count itself)", option="shard_count")
        return shard
    k, n = shard_from_environment(os.environ if environ is None else environ, count)
    return f"{k}/{n}"


def shard_from_environment(environ: Mapping[str, str], count: int | None = None) -> tuple[int, int]:
    """(K, N) of this array task, K from 1, or UsageError saying what is missing."""
    if count is not None and count < 1:
        raise UsageError(f"{count}: must be 1 or more", option="shard_count")
    if environ.get("SLURM_ARRAY_TASK_ID", "").strip():
        return _slurm(environ, count)
    if environ.get("JOB_COMPLETION_INDEX", "").strip():
        return _indexed_job(environ, count)
    raise UsageError(NONE_FOUND, option="shard")


def _integer(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = environ.get(name, "").strip()
    if not text and default is not None:
        return default
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"auto: {name}={text!r} is not an integer", option="shard") from None


def _slurm(environ: Mapping[str, str], count: int | None) -> tuple[int, int]:
    task = _integer(environ, "SLURM_ARRAY_TASK_ID")
    first = _integer(environ, "SLURM_ARRAY_TASK_MIN", 0)
    step = max(_integer(environ, "SLURM_ARRAY_TASK_STEP", 1), 1)
    if "SLURM_ARRAY_TASK_COUNT" in environ:
        slurm_count = _integer(environ, "SLURM_ARRAY_TASK_COUNT")
        if count is not None and count != slurm_count:
            raise UsageError(f"{count}: Slurm says this array has {slurm_count} tasks "
                             "(SLURM_ARRAY_TASK_COUNT)", option="shard_count")
        count = slurm_count
    if count is None:
        raise UsageError("auto: SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_COUNT; "
                         f"give {mention('shard_count')} N", option="shard")
    offset, rest = divmod(task - first, step)
    k = offset + 1
    if rest or not 1 <= k <= count:
        raise UsageError(f"auto: Slurm task {task} is not one of {count} evenly spaced ids "
                         f"from {first} (step {step}); use --array=A-B[:S], or "
                         f"{mention('shard')} K/N", option="shard")
    return k, count


def _indexed_job(environ: Mapping[str, str], count: int | None) -> tuple[int, int]:
    index = _integer(environ, "JOB_COMPLETION_INDEX")
    if count is None:
        if not environ.get(COUNT_VARIABLE, "").strip():
            raise UsageError("auto: JOB_COMPLETION_INDEX is set (Kubernetes indexed Job) but "
                             f"not the count: give {mention('shard_count')} N or set "
                             f"{COUNT_VARIABLE} to the Job's completions", option="shard")
        count = _integer(environ, COUNT_VARIABLE)
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"auto: JOB_COMPLETION_INDEX={index} is not below the count {count}",
                         option="shard")
    return index + 1, count
