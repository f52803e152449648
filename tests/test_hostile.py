"""A corpus of hostile and awkward inputs, generated here, run through every command that
reads or writes: a disk that fills during the write of each format, names that look like rich
markup, --suffix with separators, hostile weights files, an endless download and an HTML page
served as weights, a FIFO, non-finite numbers, a 250-character name. The bar: an output is
complete or absent, every failure is one line (no traceback without --debug) with the right
exit code, and nothing is written outside OUTPUT_DIR.
"""

from __future__ import annotations

import errno
import io
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_image, deep_pattern, write_png16
from loopback_server import LoopbackServer
from PIL import Image

from sirenup import files
from sirenup.imaging import imageio
from sirenup.inference import batch as batch_engine
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
from sirenup.models.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]
BASE_BYTES = (ROOT / "sirenup" / "assets" / "sirenup-base.safetensors").read_bytes()
SMALL = LiifSirenConfig(channels=8, n_blocks=1, hidden=16, n_hidden=1)
FORMATS = ["png", "jpg", "bmp", "tif", "webp", "png16", "tif16"]


def no_traceback(result) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)


def one_error_line(result) -> str:
    no_traceback(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def temps_in(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(files.TEMP_SUFFIX)]


def make_input(folder: Path, kind: str, name: str = "in") -> Path:
    """A small input whose output keeps the ``kind`` format (16-bit colour for *16)."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "png16":
        return write_png16(folder / f"{name}.png", deep_pattern(16, 12))
    if kind == "tif16":
        path = folder / f"{name}.tif"
        import tifffile

        tifffile.imwrite(path, deep_pattern(16, 12), photometric="rgb")
        return path
    path = folder / f"{name}.{kind}"
    build_image("RGB", (16, 12)).save(path)
    return path


@pytest.fixture
def disk_full(monkeypatch):
    """Every atomic write gets ``limit[0]`` bytes onto the disk, then ENOSPC (or, with
    ``mode[0] == 'short'``, writes of nothing, as some file systems report a full disk)."""
    limit, mode, written = [0], ["enospc"], [0]

    def full(fd, data):
        room = limit[0] - written[0]
        if room <= 0:
            if mode[0] == "short":
                return 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        count = os.write(fd, data[:room])
        written[0] += count
        return count

    monkeypatch.setattr(files, "_write", full)

    class Control:
        def set(self, nbytes: int, how: str = "enospc") -> None:
            limit[0], mode[0], written[0] = nbytes, how, 0

        def off(self) -> None:
            monkeypatch.setattr(files, "_write", lambda fd, data: os.write(fd, data))

    return Control()


# -- outputs are complete or absent ------------------------------------------------------------

@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("how", ["enospc", "short"])
@pytest.mark.parametrize("room", [0, 100, 3000])
def test_disk_full_during_each_format(tmp_path, disk_full, kind, how, room):
    from sirenup.errors import SirenupError

    noise = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    image = imageio.DecodedImage(rgb=noise, bit_depth=16 if kind.endswith("16") else 8)
    out = tmp_path / f"result.{'tif' if kind == 'tif16' else kind.removesuffix('16')}"
    disk_full.set(room, how)
    with pytest.raises(SirenupError, match="no space left on device") as caught:
        imageio.write_image(out, image)
    assert "\n" not in str(caught.value)
    assert not out.exists() and temps_in(tmp_path) == []


@pytest.mark.parametrize("how", ["enospc", "short"])
def test_disk_full_during_upscale_write(invoke, tmp_path, disk_full, how):
    src = make_input(tmp_path / "in", "jpg")
    out = tmp_path / "out" / "result.jpg"
    out.parent.mkdir()
    disk_full.set(100, how)
    result = invoke("upscale", src, "-o", out, "--device", "cpu", "--scale", "2")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "no space left on device" in line and str(out) in line
    assert not out.exists() and temps_in(out.parent) == []


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


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("cut", [1, 12, 0.5])
def test_truncated_outputs_are_not_complete(tmp_path, kind, cut):
    noise = np.random.default_rng(0).random((40, 48, 3), dtype=np.float32)
    image = imageio.DecodedImage(rgb=noise, bit_depth=16 if kind.endswith("16") else 8)
    out = tmp_path / f"out.{'tif' if kind == 'tif16' else kind.removesuffix('16')}"
    imageio.write_image(out, image)
    assert imageio.is_complete_image(out)
    data = out.read_bytes()
    out.write_bytes(data[: int(len(data) * cut) if cut < 1 else len(data) - cut])
    assert not imageio.is_complete_image(out)


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


def test_encoder_error_is_one_line(invoke, tmp_path, monkeypatch):
    src = make_input(tmp_path, "png")

    def broken(self, fp, format=None, **options):
        raise OSError("encoder error -2\nlibtiff: second line\nthird line")

    monkeypatch.setattr(Image.Image, "save", broken)
    result = invoke("upscale", src, "-o", tmp_path / "out.tif", "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "cannot encode (encoder error -2)" in line
    assert not (tmp_path / "out.tif").exists() and temps_in(tmp_path) == []


def test_weights_and_checkpoints_write_atomically(tmp_path, disk_full):
    from sirenup.errors import SirenupError
    from sirenup.training.loop import atomic_torch_save

    model = LiifSiren(config=SMALL)
    disk_full.set(1000)
    with pytest.raises(SirenupError, match="no space left"):
        save_weights(tmp_path / "w.safetensors", model)
    with pytest.raises(SirenupError, match="no space left"):
        atomic_torch_save({"x": torch.zeros(1000)}, tmp_path / "ckpt.pt")
    assert list(tmp_path.iterdir()) == []


def test_250_character_names(invoke, tmp_path):
    src = make_input(tmp_path, "png", name="i" * 246)  # 250 with ".png"
    out = tmp_path / ("o" * 246 + ".png")
    result = invoke("upscale", src, "-o", out, "--device", "cpu", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (32, 24)
    batch = invoke("batch", src, tmp_path / "out", "--device", "cpu", "--scale", "2")
    assert batch.exit_code == 0, batch.output
    assert (tmp_path / "out" / src.name).exists()
    # a leftover temporary file of a killed run, with its cut name, is recognised
    name = src.name
    prefix = files.temp_prefix(name)
    assert len((prefix + "abcd1234.tmp").encode()) <= 255
    assert files.is_temp_of(prefix + "abcd1234.tmp", name)


# -- user text is never markup -----------------------------------------------------------------

BRACKETED = ["holiday [edited].png", "[bold]x.png", "a]b.png", "open[.png"]


@pytest.mark.parametrize("name", BRACKETED)
def test_bracketed_names_in_errors(invoke, tmp_path, name):
    bad = tmp_path / name
    bad.write_bytes(b"not an image at all")
    result = invoke("upscale", bad, "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert str(bad) in line  # shown as it is: nothing eaten as markup


def test_bracket_slash_path(invoke, tmp_path):
    folder = tmp_path / "bad["
    folder.mkdir()
    path = folder / "x].png"  # the path reads bad[/x].png
    for run in (lambda: invoke("upscale", path, "--device", "cpu"),
                lambda: invoke("-q", "models", "download", path.as_uri().replace("%5B", "[")
                               .replace("%5D", "]")),
                lambda: invoke("compare", path, "--device", "cpu")):
        result = run()
        assert result.exit_code in (1, 2)
        line = one_error_line(result)
        assert "x]" in line
    path.write_bytes(b"")
    result = invoke("batch", path, tmp_path / "out", "--device", "cpu")
    no_traceback(result)
    assert result.exit_code == 1 and f"{path}" in result.stderr


def test_bracketed_names_succeed_and_show(invoke, tmp_path):
    src = make_input(tmp_path / "in", "png", name="holiday [edited]")
    result = invoke("upscale", src, "--device", "cpu", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert "holiday [edited]_x2.png" in result.stderr
    batch = invoke("batch", src.parent, tmp_path / "out", "--device", "cpu", "--scale", "2",
                   "--suffix", "[bold]")
    assert batch.exit_code == 0, batch.output
    assert (tmp_path / "out" / "holiday [edited][bold].png").exists()


# -- outputs stay in OUTPUT_DIR ----------------------------------------------------------------

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


# -- hostile weights files ---------------------------------------------------------------------

def weights_with(tmp_path: Path, *, config: dict | None = None, metadata=None,
                 tensors=None, name: str = "w.safetensors") -> Path:
    from safetensors.torch import save_file

    model = LiifSiren(config=SMALL)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if tensors is not None:
        state = tensors(state)
    header = {"format": "sirenup-weights/1", "architecture": "liif-siren",
              "config": json.dumps({**SMALL.to_dict(), **(config or {})}),
              "metadata": json.dumps({} if metadata is None else metadata)}
    path = tmp_path / name
    save_file(state, str(path), metadata=header)
    return path


def nan_weights(state):
    state["decoder.out.weight"] = torch.full_like(state["decoder.out.weight"], float("nan"))
    return state


def wrong_shape(state):
    state["encoder.head.weight"] = torch.zeros(9, 3, 3, 3)
    return state


def extra_tensor(state):
    state["sneaky.weight"] = torch.zeros(2)
    return state


def int_tensor(state):
    state["decoder.out.bias"] = torch.zeros(3, dtype=torch.int32)
    return state


@pytest.mark.parametrize(("options", "fragment"), [
    ({"config": {"n_blocks": 10**7}}, "n_blocks = 10000000"),
    ({"config": {"channels": -4}}, "channels = -4"),
    ({"config": {"hidden": "64"}}, 'hidden = "64"'),
    ({"config": {"w0_first": True}}, "w0_first = true"),
    ({"config": {"res_scale": 1e308 * 10}}, "res_scale"),
    ({"metadata": {"name": 5}}, "name is a int"),
    ({"metadata": {"scale_range": "1-4"}}, "scale_range"),
    ({"metadata": {"scale_range": [4, 1]}}, "scale_range"),
    ({"metadata": ["not", "a", "dict"]}, "invalid metadata"),
    ({"tensors": nan_weights}, "decoder.out.weight holds NaN"),
    ({"tensors": wrong_shape}, "encoder.head.weight has shape [9, 3, 3, 3]"),
    ({"tensors": extra_tensor}, "unexpected tensor sneaky.weight"),
    ({"tensors": int_tensor}, "decoder.out.bias is not a floating-point"),
])
def test_hostile_weights_fail_fast_in_one_line(invoke, make_image, tmp_path, options,
                                               fragment):
    weights = weights_with(tmp_path, **options)
    result = invoke("upscale", make_image("in.png"), "--model", weights, "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert fragment in line, line
    assert not list(tmp_path.glob("in_x*"))


def test_unknown_metadata_entries_are_allowed(invoke, make_image, tmp_path):
    weights = weights_with(tmp_path, metadata={
        "name": "gan-test", "gan": {"lambda_adv": 0.005, "layers": [1, 2]},
        "degrade": {"jpeg": [30, 95]}, "notes": "free text", "steps": 3})
    result = invoke("upscale", make_image("in.png"), "--model", weights, "--device", "cpu",
                    "--scale", "2")
    assert result.exit_code == 0, result.output


def test_html_page_as_local_weights(invoke, make_image, tmp_path):
    page = tmp_path / "model.safetensors"
    page.write_text("<!doctype html><html><body>Please log in to the Wi-Fi</body></html>")
    result = invoke("upscale", make_image("in.png"), "--model", page, "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "not a safetensors weights file" in line and "HTML page" in line


# -- downloads ---------------------------------------------------------------------------------

class _Endless(BaseHTTPRequestHandler):
    """Sends zeros for ever (with ``length``: announces that Content-Length)."""

    length: int | None = None

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        if self.length is not None:
            self.send_header("Content-Length", str(self.length))
        self.end_headers()
        chunk = bytes(65536)
        try:
            while True:
                self.wfile.write(chunk)
        except OSError:
            pass


@pytest.fixture
def endless():
    servers = []

    def start(length: int | None = None) -> str:
        handler = type("Handler", (_Endless,), {"length": length})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/model.safetensors"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def cache_files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(p.name for p in root.rglob("*") if p.is_file() and p.suffix != ".lock")


@pytest.mark.parametrize("sha", [False, True])
def test_endless_download_is_capped(invoke, cache_root, endless, sha):
    url = endless() + (f"#sha256={'a' * 64}" if sha else "")
    result = invoke("-q", "models", "download", url, "--max-size", "1M")
    assert result.exit_code == 1
    assert "more than the limit of 1048576 bytes" in one_error_line(result)
    assert cache_files(cache_root) == []


def test_announced_size_over_the_cap_is_refused(invoke, cache_root, endless):
    result = invoke("-q", "models", "download", endless(length=10 << 30), "--max-size", "1M")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "more than the limit" in line and "not downloaded" in line
    assert cache_files(cache_root) == []


def test_bad_max_size_is_usage_error(invoke, cache_root):
    result = invoke("models", "download", "http://127.0.0.1:9/m.safetensors",
                    "--max-size", "lots")
    assert result.exit_code == 2
    assert "--max-size" in one_error_line(result)


def test_html_page_served_as_weights_is_not_cached(invoke, cache_root, make_image):
    page = b"<!doctype html><html><body>Sign in to the hotel Wi-Fi</body></html>" * 20
    with LoopbackServer({"/model.safetensors": page}) as server:
        url = server.url("/model.safetensors")
        result = invoke("-q", "models", "download", url)
        assert result.exit_code == 1
        line = one_error_line(result)
        assert "not a usable weights file" in line and "not kept" in line
        assert cache_files(cache_root) == []
        upscale = invoke("-q", "upscale", make_image("in.png"), "--model", url,
                         "--device", "cpu")
        assert upscale.exit_code == 1 and "not a usable weights file" in upscale.stderr
    listed = json.loads(invoke("models", "list", "--json").stdout)
    assert [row for row in listed["models"] if row["source"] == "cached"] == []


def test_unpinned_download_is_listed_as_unpinned(invoke, cache_root):
    with LoopbackServer({"/m.safetensors": BASE_BYTES}) as server:
        result = invoke("models", "download", server.url("/m.safetensors"))
        assert result.exit_code == 0, result.output
        assert "unpinned" in result.stderr
    [row] = [r for r in json.loads(invoke("models", "list", "--json").stdout)["models"]
             if r["source"] == "cached"]
    assert row["verified"] is None and row["pinned"] is False and row["problem"] is None
    table = invoke("models", "list")
    assert "unpinned" in table.stdout
    verify = invoke("models", "verify")
    assert verify.exit_code == 0 and "unpinned" in verify.stderr


def test_broken_cache_entry_says_how_to_remove_it(invoke, cache_root, make_image):
    with LoopbackServer({"/m.safetensors": BASE_BYTES}) as server:
        url = server.url("/m.safetensors")
        assert invoke("models", "download", url).exit_code == 0
    [meta] = list(cache_root.rglob("meta.json"))
    weights = meta.parent / "m.safetensors"
    # damaged after download, with meta.json rewritten to match (so it is not re-fetched)
    model = LiifSiren(config=SMALL)
    save_weights(weights, model)
    state = json.loads(meta.read_text())
    state.update(size=weights.stat().st_size, sha256=files.sha256_file(weights))
    meta.write_text(json.dumps(state))
    bad = dict(model.state_dict())
    bad["decoder.out.bias"] = torch.tensor([float("nan")] * 3)
    from safetensors.torch import save_file

    save_file(bad, str(weights), metadata={"architecture": "liif-siren",
                                           "config": json.dumps(SMALL.to_dict())})
    state.update(size=weights.stat().st_size, sha256=files.sha256_file(weights))
    meta.write_text(json.dumps(state))
    result = invoke("-q", "upscale", make_image("in.png"), "--model", url, "--device", "cpu")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert f"sirenup models remove {meta.parent.name}" in line


# -- smaller cases -----------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused_without_hanging(invoke, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = invoke("upscale", fifo, "--device", "cpu")
    assert result.exit_code == 1
    assert "FIFO" in one_error_line(result)
    named = invoke("batch", fifo, tmp_path / "out", "--device", "cpu", "--json")
    no_traceback(named)
    assert named.exit_code == 1 and "FIFO" in json.loads(named.stdout)["failures"][0]["error"]
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "inner.png")
    make_input(folder, "png", name="ok")
    inside = invoke("batch", folder, tmp_path / "out2", "--device", "cpu", "--json",
                    "--scale", "2")
    assert inside.exit_code == 0, inside.output
    assert json.loads(inside.stdout)["done"] == 1
    model = invoke("upscale", make_input(tmp_path, "png"), "--model", fifo, "--device", "cpu")
    assert model.exit_code in (1, 2)
    one_error_line(model)


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e999", "1e308"])
def test_non_finite_scale_is_usage_error(invoke, make_image, value):
    result = invoke("upscale", make_image("in.png"), "--scale", value, "--device", "cpu")
    assert result.exit_code == 2
    assert "--scale" in one_error_line(result)
    batch = invoke("batch", make_image("in.png"), "out", "--scale", value, "--device", "cpu")
    assert batch.exit_code == 2
    one_error_line(batch)


@pytest.mark.parametrize("options", [["--width", "1" + "0" * 400],
                                     ["--width", "100", "--height", "9" * 40]])
def test_absurd_sizes_are_usage_errors(invoke, make_image, options):
    result = invoke("upscale", make_image("in.png"), *options, "--device", "cpu")
    assert result.exit_code == 2
    assert "pixels on a side" in one_error_line(result)


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


def test_output_limit_checked_before_decoding(invoke, make_image, monkeypatch):
    def no_decode(*args, **kwargs):
        raise AssertionError("decoded before the size was checked")

    monkeypatch.setattr(imageio, "_decode", no_decode)
    result = invoke("upscale", make_image("in.png"), "--max-output-pixels", "100",
                    "--device", "cpu")
    assert result.exit_code == 1
    assert "--max-output-pixels" in one_error_line(result)
    batch = invoke("batch", make_image("in.png"), "out", "--max-output-pixels", "100",
                   "--device", "cpu", "--json")
    assert batch.exit_code == 1 and "--max-output-pixels" in batch.stdout


def test_float_tiff_with_nan_is_mapped_with_a_note(invoke, tmp_path, recwarn):
    values = np.linspace(-0.5, 2.0, 16 * 12, dtype=np.float32).reshape(12, 16)
    values[3, 4] = np.nan
    values[5, 6] = np.inf
    src = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(src)
    decoded = imageio.read_image(src)
    assert np.isfinite(decoded.rgb).all() and decoded.rgb.min() >= 0 and decoded.rgb.max() <= 1
    assert decoded.rgb[3, 4, 0] == 0.0 and decoded.rgb[5, 6, 0] == 1.0
    [note] = decoded.warnings
    assert "2 NaN/inf" in note and "clipped" in note
    result = invoke("upscale", src, "-o", tmp_path / "out.png", "--device", "cpu",
                    "--scale", "2")
    assert result.exit_code == 0, result.output
    assert "floating-point image" in result.stderr and "RuntimeWarning" not in result.output
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_aspect_ratio_change_warns(invoke, make_image):
    stretched = invoke("upscale", make_image("in.png"), "--width", "96", "--height", "40",
                       "--device", "cpu")
    assert stretched.exit_code == 0
    assert "changes the aspect ratio" in stretched.stderr
    kept = invoke("upscale", make_image("in.png"), "--width", "48", "--height", "40",
                  "--device", "cpu")
    assert kept.exit_code == 0 and "changes the aspect ratio" not in kept.stderr


# -- results on stdout -------------------------------------------------------------------------

def test_reports_go_to_stdout(invoke, cache_root, make_image, tmp_path, monkeypatch):
    from sirenup.inference import devices

    monkeypatch.setattr(devices, "nvidia_driver_version", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    doctor = invoke("doctor", "--quick")
    assert "Versions" in doctor.stdout and "Versions" not in doctor.stderr
    listed = invoke("models", "list")
    assert listed.exit_code == 0
    assert "sirenup-base" in listed.stdout and listed.stderr == ""
    assert "clean images, most faithful" in listed.stdout
    src = make_image("in.png")
    batch = invoke("batch", src, tmp_path / "out", "--device", "cpu", "--scale", "2")
    assert batch.exit_code == 0
    assert "sirenup batch" in batch.stdout and "sirenup batch" not in batch.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_file_url_to_a_fifo_is_refused(invoke, cache_root, tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    result = invoke("-q", "models", "download", fifo.as_uri())
    assert result.exit_code == 1
    assert "FIFO" in one_error_line(result)


def test_cache_entry_pointing_outside_is_ignored(invoke, cache_root, tmp_path):
    entry = cache_root / "models" / "evil-0123456789ab"
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps({"filename": "../../../secret", "size": 1}))
    listed = invoke("models", "list", "--json")
    assert listed.exit_code == 0
    assert [r for r in json.loads(listed.stdout)["models"] if r["source"] == "cached"] == []


def test_temporary_names_fit_with_multibyte_names(tmp_path):
    name = "é" * 123 + ".png"  # 250 bytes in UTF-8
    prefix = files.temp_prefix(name)
    assert len(f"{prefix}abcd1234.tmp".encode()) <= 255 and name.startswith(prefix[1:-1])
    files.atomic_write_bytes(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data" and temps_in(tmp_path) == []


def test_truncated_tiff_input_is_one_line(invoke, tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buffer, "TIFF", compression="tiff_deflate")
    src = tmp_path / "cut.tif"
    src.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    result = invoke("upscale", src, "-o", tmp_path / "out.png", "--device", "cpu")
    assert result.exit_code == 1
    assert str(src) in one_error_line(result)
