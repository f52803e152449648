"""``sirenup batch``: the generated corpus, resuming, naming, sharding, exit codes, the I/O
pipeline and a SIGKILL in the middle of a run (bundled model, CPU, tiny images)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import build_corpus, build_image, png_bit_depth
from helpers import make_input, no_traceback, one_error_line, png, write_png
from PIL import Image

from sirenup.imaging import imageio
from sirenup.inference import batch as batch_engine

ROOT = Path(__file__).resolve().parents[1]


def run(invoke, *args):
    """-> (result, JSON report or None)."""
    result = invoke("batch", *args)
    assert "Traceback" not in result.output, result.output
    try:
        report = json.loads(result.stdout) if "--json" in args else None
    except json.JSONDecodeError:
        report = None
    return result, report


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def make_folder(root: Path, names: list[str], size=(16, 12)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(build_image("RGB", size), i, axis=1)).save(path)
    return root


# --------------------------------------------------------------------------------------------
# The corpus


def test_corpus_recursive_json(invoke, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    expected = build_corpus(src)
    result, report = run(invoke, src, out, "--recursive", "--json", "--scale", "2",
                         "--max-input-pixels", "2000")
    assert result.exit_code == 1, result.output
    assert report["done"] == len(expected["done"])
    assert report["failed"] == len(expected["failed"])
    assert report["not_images"] == len(expected["not_images"])
    # right sizes and modes; alpha, 16-bit and grey kept; nothing else in the output folder
    assert files_under(out) == set(expected["done"])
    for name, (size, mode) in expected["done"].items():
        with Image.open(out / name) as im:
            assert (im.size, im.mode) == (size, mode), name
            im.load()
    assert png_bit_depth(out / "deep_rgb.png") == 16
    assert np.any(np.asarray(Image.open(out / "deep.png")).astype(np.int64) % 257 != 0)
    assert Image.open(out / "rotated.jpg").getexif().get(0x0112) == 1
    # every failure reported once, with its reason, on stderr too
    reasons = {Path(r["input"]).name: r["error"] for r in report["failures"]}
    assert set(reasons) == set(expected["failed"])
    for name, fragment in expected["failed"].items():
        assert fragment in reasons[name], (name, reasons[name])
        assert name in result.stderr
    skipped = {Path(r["input"]).relative_to(src).as_posix() for r in report["skipped_files"]}
    assert skipped == set(expected["not_images"])
    assert "summary" not in result.stdout and "done" in result.stderr  # the table: stderr
    # the second run skips what is done, fails the same files again
    result, again = run(invoke, src, out, "--recursive", "--json", "--scale", "2",
                        "--max-input-pixels", "2000")
    assert result.exit_code == 1
    assert again["done"] == 0 and again["skipped_existing"] == len(expected["done"])
    assert again["failed"] == len(expected["failed"])
    assert files_under(out) == set(expected["done"])


def test_not_recursive_stays_at_the_top(invoke, tmp_path):
    src = make_folder(tmp_path / "in", ["a.png", "sub/b.png"])
    result, report = run(invoke, src, tmp_path / "out", "--json", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert files_under(tmp_path / "out") == {"a.png"}


def test_all_good_exits_0_and_quiet(invoke, tmp_path):
    src = make_folder(tmp_path / "in", ["a.png", "b.png"])
    result = invoke("--quiet", "batch", src, tmp_path / "out", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == ""


# --------------------------------------------------------------------------------------------
# Names, resuming, inputs


def test_overwrite_suffix_format(invoke, make_image, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(make_image("a.png", "RGBA"), src / "a.png")
    shutil.copy(make_image("b.jpg"), src / "b.jpg")
    out = tmp_path / "out"
    args = (src, out, "--scale", "2", "--suffix", "_x2", "--format", "webp", "--json")
    result, report = run(invoke, *args)
    assert result.exit_code == 0, result.output
    assert files_under(out) == {"a_x2.webp", "b_x2.webp"}
    assert Image.open(out / "a_x2.webp").mode == "RGBA"
    _, report = run(invoke, *args)
    assert report["done"] == 0 and report["skipped_existing"] == 2
    _, report = run(invoke, *args, "--overwrite")
    assert report["done"] == 2 and report["skipped_existing"] == 0


def test_alpha_into_jpeg_needs_background(invoke, make_image, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(make_image("a.png", "RGBA"), src / "a.png")
    result, report = run(invoke, src, tmp_path / "o1", "--format", "jpg", "--json")
    assert result.exit_code == 1
    assert "--background" in report["failures"][0]["error"]
    assert not files_under(tmp_path / "o1")
    result, report = run(invoke, src, tmp_path / "o2", "--format", "jpg", "--background",
                         "white", "--json", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "o2" / "a.jpg").mode == "RGB"


def test_converted_names_do_not_collide(invoke, make_image, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(make_image("a.png"), src / "a.png")
    shutil.copy(make_image("a.gif", "P"), src / "a.gif")
    result, _ = run(invoke, src, tmp_path / "out", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert files_under(tmp_path / "out") == {"a.png", "a.gif.png"}


def test_files_and_glob_patterns(invoke, tmp_path):
    src = make_folder(tmp_path / "in", ["a.png", "b.png", "c.jpg", "deep/d.png"])
    out = tmp_path / "out"
    result, _ = run(invoke, f"{src}/*.png", src / "c.jpg", out, "--scale", "2")
    assert result.exit_code == 0, result.output
    assert files_under(out) == {"a.png", "b.png", "c.jpg"}
    result, _ = run(invoke, f"{src}/**/*.png", tmp_path / "out2", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert files_under(tmp_path / "out2") == {"a.png", "b.png", "d.png"}


def test_output_path_equal_to_input_path(invoke, tmp_path):
    src = make_folder(tmp_path / "in", ["a.png", "b.png"])
    before = (src / "a.png").read_bytes()
    result, report = run(invoke, src / "a.png", src, "--json")
    assert result.exit_code == 1
    assert "replace the input" in report["failures"][0]["error"]
    assert (src / "a.png").read_bytes() == before
    result, _ = run(invoke, src, src)  # the whole folder onto itself: bad usage
    assert result.exit_code == 2
    assert (src / "a.png").read_bytes() == before


def test_output_inside_input_is_not_read_back(invoke, tmp_path):
    src = make_folder(tmp_path / "in", ["a.png", "sub/b.png"])
    for _ in range(2):
        result, _ = run(invoke, src, src / "up", "--recursive", "--scale", "2")
        assert result.exit_code == 0, result.output
    assert files_under(src / "up") == {"a.png", "sub/b.png"}
    for _ in range(2):  # same folder with a suffix: the outputs are not inputs the next time
        result, _ = run(invoke, src, src, "--suffix", "_x2", "--scale", "2")
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in src.glob("*.png")) == ["a.png", "a_x2.png"]


def test_stale_temporary_files_are_removed(invoke, tmp_path):
    src = make_folder(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.png.k1llme99.tmp").write_bytes(b"partial")  # what a SIGKILL leaves
    (out / ".other.tmp").write_bytes(b"not ours")
    result, _ = run(invoke, src, out, "--scale", "2")
    assert result.exit_code == 0, result.output
    assert files_under(out) == {"a.png", ".other.tmp"}


@pytest.mark.parametrize("args", [
    ["nope"], ["--shard", "0/3"], ["--shard", "4/3"], ["--shard", "x"], ["--format", "gif"],
    ["--quality", "0"], ["--png-compression", "10"], ["--scale", "0.5"], ["--tile", "8"],
    ["--background", "nope"], ["--max-input-pixels", "-1"], ["--model", "no-such-model"]])
def test_bad_usage_exit_2(invoke, tmp_path, args):
    src = make_folder(tmp_path / "in", ["a.png"])
    extra = [tmp_path / "nope"] if args == ["nope"] else []
    args = [] if args == ["nope"] else args
    result, _ = run(invoke, *(extra or [src]), tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "out").exists() or not files_under(tmp_path / "out")


def test_png_compression(invoke, tmp_path):
    src = make_folder(tmp_path / "in", ["a.png"])
    for level in ("0", "9"):
        result, _ = run(invoke, src, tmp_path / f"l{level}", "--scale", "2",
                        "--png-compression", level)
        assert result.exit_code == 0, result.output
    lo, hi = tmp_path / "l0" / "a.png", tmp_path / "l9" / "a.png"
    assert lo.stat().st_size > hi.stat().st_size
    assert np.array_equal(np.asarray(Image.open(lo)), np.asarray(Image.open(hi)))


def test_missing_output_dir_argument_exit_2(invoke, tmp_path):
    result = invoke("batch", make_folder(tmp_path / "in", ["a.png"]))
    assert result.exit_code == 2


def test_output_dir_is_a_file_exit_2(invoke, tmp_path):
    src = make_folder(tmp_path / "in", ["a.png"])
    (tmp_path / "out").write_text("a file")
    result, _ = run(invoke, src, tmp_path / "out")
    assert result.exit_code == 2


# --------------------------------------------------------------------------------------------
# Unwritable output


def test_unwritable_output_folder(invoke, tmp_path):
    src = make_folder(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes")
        result, _ = run(invoke, src, out)
        assert result.exit_code == 1
        assert "not writable" in result.stderr
    finally:
        out.chmod(0o700)
    assert not files_under(out)


def test_unwritable_output_folder_simulated(invoke, tmp_path, monkeypatch):
    src = make_folder(tmp_path / "in", ["a.png"])
    real = os.access
    out = tmp_path / "out"
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if Path(p) == out else
                        real(p, m, **k))
    result, _ = run(invoke, src, out)
    assert result.exit_code == 1
    assert "not writable" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def test_blocked_output_subfolder_fails_its_files_only(invoke, tmp_path):
    src = make_folder(tmp_path / "in", ["a.png", "sub/b.png", "sub/c.png"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the folder should be")
    result, report = run(invoke, src, out, "--recursive", "--json", "--scale", "2")
    assert result.exit_code == 1
    assert report["done"] == 1 and report["failed"] == 2
    assert all("cannot create the folder" in r["error"] for r in report["failures"])
    assert files_under(out) == {"a.png", "sub"}


# --------------------------------------------------------------------------------------------
# Sharding, the model, the pipeline


def test_shards_split_the_files(invoke, tmp_path):
    names = [f"im{i}.png" for i in range(9)]
    src = make_folder(tmp_path / "in", names, size=(8, 6))
    parts = []
    for k in (1, 2, 3):
        result, report = run(invoke, src, tmp_path / f"out{k}", "--shard", f"{k}/3",
                             "--json", "--scale", "2")
        assert result.exit_code == 0, result.output
        parts.append({Path(r["input"]).name for r in report["results"]})
    assert set().union(*parts) == set(names)
    assert sum(len(p) for p in parts) == len(names)
    shutil.copytree(src, tmp_path / "elsewhere")  # same names: same shard anywhere
    _, report = run(invoke, tmp_path / "elsewhere", tmp_path / "again", "--shard", "2/3",
                    "--json", "--scale", "2")
    assert {Path(r["input"]).name for r in report["results"]} == parts[1]


def test_model_loaded_once(invoke, tmp_path, monkeypatch):
    import sirenup.inference.upscaler as upscaler

    calls = []
    real = upscaler.load_upscaler
    monkeypatch.setattr(upscaler, "load_upscaler",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    src = make_folder(tmp_path / "in", ["a.png", "b.png", "c.png"])
    result, _ = run(invoke, src, tmp_path / "out", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert len(calls) == 1


class SlowUpscaler:
    """Stands in for the model: 40 ms per image, records when it ran."""

    model_name, device = "slow", "cpu"

    def __init__(self):
        self.spans = []

    def upscale_image(self, image, size, progress=None):
        began = time.perf_counter()
        time.sleep(0.04)
        self.spans.append((began, time.perf_counter()))
        alpha = None if image.alpha is None else np.zeros((size[1], size[0]), np.float32)
        return dataclasses.replace(image, rgb=np.zeros((size[1], size[0], 3), np.float32),
                                   alpha=alpha)


def test_decode_and_encode_overlap_the_model(tmp_path, monkeypatch):
    import sirenup.inference.batch as batch

    src = make_folder(tmp_path / "in", [f"im{i}.png" for i in range(6)])
    spans = {"read": [], "write": []}
    threads = set()

    def slow(kind, function):
        def wrapper(*args, **kwargs):
            began = time.perf_counter()
            threads.add(threading.current_thread() is threading.main_thread())
            time.sleep(0.03)
            value = function(*args, **kwargs)
            spans[kind].append((began, time.perf_counter()))
            return value
        return wrapper

    import sirenup.imaging.imageio as imageio
    import sirenup.inference.planning as planning

    # the shared pipeline reads (planning.prepare_job); the encoder writes (atomic_write)
    monkeypatch.setattr(planning, "read_image", slow("read", planning.read_image))
    monkeypatch.setattr(imageio, "atomic_write", slow("write", imageio.atomic_write))
    model = SlowUpscaler()
    report = batch.run_batch([src], tmp_path / "out", batch.BatchOptions(scale=2), lambda: model)
    assert report["done"] == 6 and report["failed"] == 0
    assert threads == {False}  # decoding and encoding never ran on the model's thread

    def overlaps(kind):
        return sum(1 for a, b in spans[kind] for c, d in model.spans if a < d and c < b)

    # Structural, not a timing bar: reads and writes happened while the model was busy.
    assert overlaps("read") >= 3 and overlaps("write") >= 3


# --------------------------------------------------------------------------------------------
# SIGKILL in the middle of a run


def test_sigkill_mid_batch_leaves_only_complete_outputs(tmp_path):
    names = [f"im{i:02d}.png" for i in range(15)]
    src = make_folder(tmp_path / "in", names, size=(96, 72))
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "sirenup", "batch", str(src), str(out), "--scale", "4",
               "--json"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if out.is_dir() and any(n.endswith(".png") and not n.startswith(".")
                                    for n in os.listdir(out)):
                break
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    finished = [n for n in os.listdir(out) if not n.startswith(".")]
    assert 1 <= len(finished) < len(names), "the kill did not land mid-batch"
    for name in finished:  # a final name is always a complete image
        with Image.open(out / name) as im:
            assert im.size == (384, 288)
            im.load()
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=180)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["failed"] == 0
    assert report["done"] + report["skipped_existing"] == len(names)
    assert sorted(os.listdir(out)) == names  # no temporary file left either
    for name in names:
        with Image.open(out / name) as im:
            im.load()


# -- failures: one line, the right exit code, nothing partial, nothing of the user's replaced ------

def test_disk_full_during_batch_then_rerun_redoes_it(invoke, tmp_path, disk_full):
    kinds = ["jpg", "tif16"]  # every format's write: test_disk_full_during_each_format
    sources = [make_input(tmp_path / "in", kind, name=f"in_{kind}") for kind in kinds]
    out = tmp_path / "out"
    disk_full.set(50)
    first = invoke("batch", tmp_path / "in", out, "--device", "cpu", "--scale", "2", "--json")
    no_traceback(first)
    assert first.exit_code == 1
    report = json.loads(first.stdout)
    assert report["done"] == 0 and report["failed"] == len(kinds)
    assert all("no space left" in r["error"] for r in report["failures"])
    assert not out.exists() or (list(out.iterdir()) == [])
    disk_full.off()
    again = invoke("batch", tmp_path / "in", out, "--device", "cpu", "--scale", "2", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["done"] == len(kinds)
    assert all(imageio.is_complete_image(out / src.name) for src in sources)


def test_batch_redoes_truncated_outputs(invoke, tmp_path):
    """An output cut short (by an older version, another tool) is not counted as done."""
    kinds = ["png", "jpg"]
    sources = [make_input(tmp_path / "in", kind, name=f"in_{kind}") for kind in kinds]
    out = tmp_path / "out"
    args = ("batch", tmp_path / "in", out, "--device", "cpu", "--scale", "2", "--json")
    assert invoke(*args).exit_code == 0
    for src in sources:
        data = (out / src.name).read_bytes()
        (out / src.name).write_bytes(data[: len(data) - 12])
        assert not imageio.is_complete_image(out / src.name), src.name
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["done"] == len(kinds) and "redoing it" in again.stderr
    assert all(imageio.is_complete_image(out / src.name) for src in sources)
    third = invoke(*args)  # complete ones are skipped
    assert json.loads(third.stdout)["skipped_existing"] == len(kinds)


@pytest.mark.parametrize("suffix", ["/../../escape", "..", "a/b", "a\\b", "_x..y"])
def test_suffix_with_separators_is_refused(invoke, tmp_path, suffix):
    src = make_input(tmp_path / "deep" / "er" / "in", "png")
    out = tmp_path / "deep" / "er" / "out"
    result = invoke("batch", src.parent, out, "--suffix", suffix, "--device", "cpu")
    assert result.exit_code == 2
    assert "--suffix" in one_error_line(result)
    produced = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert produced == {src}


def test_output_inside_output_dir_checked(tmp_path):
    """A symbolic link inside OUTPUT_DIR that points elsewhere does not carry outputs out."""
    src = make_input(tmp_path / "in" / "sub", "png")
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside)
    jobs = batch_engine.find_inputs([tmp_path / "in"], out, recursive=True)
    batch_engine.plan_outputs(jobs, out)
    [job] = jobs
    assert job.src == src and job.error and "outside" in job.error


def test_unreadable_folder_is_a_failure(invoke, tmp_path, monkeypatch):
    make_input(tmp_path / "in", "png", name="a")
    locked = tmp_path / "in" / "locked"
    locked.mkdir()
    real = batch_engine._list_folder

    def listing(folder):
        if Path(folder) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(folder))
        return real(folder)

    monkeypatch.setattr(batch_engine, "_list_folder", listing)
    result = invoke("batch", tmp_path / "in", tmp_path / "out", "--recursive", "--json",
                    "--device", "cpu", "--scale", "2")
    no_traceback(result)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["done"] == 1 and report["failed"] == 1
    assert report["failures"][0]["input"] == str(locked)
    assert "cannot read the folder (permission denied)" in report["failures"][0]["error"]


def test_newline_in_a_name_in_batch(invoke, tmp_path):
    write_png(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "bad\nname.png").write_bytes(b"not an image")
    result = invoke("batch", tmp_path / "in", tmp_path / "out", "--device", "cpu",
                    "--scale", "2", "--json")
    no_traceback(result)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["done"] == 1
    [failure] = report["failures"]
    assert failure["error"].startswith("not an image")  # not the name's second half
    [line] = [x for x in result.stderr.splitlines() if x.startswith("failed:")]
    assert "bad\\nname.png: not an image" in line


def test_output_name_too_long_fails_that_file_only(invoke, tmp_path):
    write_png(tmp_path / "in" / "a.png")
    write_png(tmp_path / "in" / ("l" * 245 + ".png"))
    result = invoke("batch", tmp_path / "in", tmp_path / "out", "--suffix", "_upscaled",
                    "--device", "cpu", "--scale", "2", "--json")
    no_traceback(result)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["done"] == 1 and report["failed"] == 1
    assert "file name too long" in report["failures"][0]["error"]
    assert (tmp_path / "out" / "a_upscaled.png").exists()


def test_batch_does_not_replace_a_non_image_in_an_outputs_place(invoke, tmp_path):
    write_png(tmp_path / "in" / "a.png")
    write_png(tmp_path / "in" / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "a.png"
    mine.write_text("the user's notes, not an image\n")
    args = ("batch", tmp_path / "in", out, "--device", "cpu", "--scale", "2", "--json")
    result = invoke(*args)
    no_traceback(result)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["done"] == 1 and "not replaced" in report["failures"][0]["error"]
    assert mine.read_text() == "the user's notes, not an image\n"
    again = invoke(*args, "--overwrite")
    assert again.exit_code == 0, again.output
    assert Image.open(mine).size == (48, 40)


def test_batch_reports_dangling_and_looping_links(invoke, tmp_path):
    folder = tmp_path / "in"
    write_png(folder / "a.png")
    (folder / "gone.png").symlink_to(folder / "missing.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "stray").symlink_to(folder / "nothing")  # no image name: skipped, as before
    result = invoke("batch", folder, tmp_path / "out", "--device", "cpu", "--scale", "2",
                    "--json")
    no_traceback(result)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["done"] == 1 and report["not_images"] == 1
    assert sorted(Path(f["input"]).name for f in report["failures"]) == ["gone.png", "loop.png"]


def test_batch_check_of_an_existing_output_respects_the_pixel_limit(invoke, tmp_path):
    src = png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    existing = png(out / "a.png", size=(60, 50))
    before = existing.read_bytes()
    result = invoke("batch", tmp_path / "in", out, "--scale", "2", "--device", "cpu",
                    "--max-output-pixels", "2000", "--json")
    no_traceback(result)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == 1 and "could not be checked" in report["failures"][0]["error"]
    assert existing.read_bytes() == before  # not called truncated, not replaced
    assert src.exists()
