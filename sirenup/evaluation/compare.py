"""``sirenup compare``: one image through classical resampling and models, side by side.

Three modes:
- plain: INPUT is upscaled to the size --scale / --width / --height give; no metrics;
- ``reference``: INPUT is the low-resolution image and the reference the high-resolution one;
  every method produces the reference's size and is scored against it;
- ``self_reference``: INPUT is the high-resolution image; the pair is made with the protocol
  of ``metrics.protocol_pair`` (HR cropped to a multiple of the scale, Pillow-bicubic LR).

Methods: ``--methods`` (classical resamplers and models) and ``--model A,B`` (models, shown
beside bicubic). Scores follow ``metrics``: PSNR on RGB and on Y (BT.601, 0..255), SSIM
(scikit-image, Y) and the texture ratio (Y energy above the input's Nyquist frequency, output
over reference, whole and per octave band; none at scale 1), all after shaving ceil(scale)
pixels from every border. Images are compared as 8-bit RGB (alpha is ignored, 16-bit inputs
are rounded to 8 bits), as in the papers' benchmarks.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sirenup.errors import SirenupError, UsageError, mention
from sirenup.evaluation.metrics import (
    energy_ratios,
    grid_lock,
    protocol_pair,
    psnr_rgb,
    psnr_y,
    ssim,
    texture_bands,
    texture_energies,
)
from sirenup.evaluation.montage import make_montage, most_detailed_region
from sirenup.files import atomic_write_bytes, check_output_path, read_bounded, sha256_file
from sirenup.hub.registry import DEFAULT_MODEL
from sirenup.imaging.imageio import (
    DecodedImage,
    as_float,
    check_output_size,
    read_image,
    save_pil,
)
from sirenup.inference.sizing import DEFAULT_SCALE, target_size

CLASSICAL = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
MIN_SCORED = 7  # SSIM's window: the scored area (borders shaved) must be this wide at least
DEFAULT_METHODS = ("nearest", "bilinear", "bicubic", "lanczos", DEFAULT_MODEL)


@dataclass
class CompareOptions:
    reference: Path | None = None
    self_reference: bool = False
    scale: float | None = None
    width: int | None = None
    height: int | None = None
    methods: str | None = None  # comma-separated; None: DEFAULT_METHODS (or bicubic + models)
    models: str | None = None  # comma-separated model names or weights files (--model)
    output_dir: Path | None = None  # None: <stem>_compare beside INPUT
    crop: str | None = None  # "x,y,w,h" in output pixels; None: the most detailed region
    overwrite: bool = False  # replace files already in the output folder


def parse_methods(text: str | None) -> list[str]:
    if text is None:
        return list(DEFAULT_METHODS)
    methods: list[str] = []
    for name in _split(text):
        if name not in methods:
            methods.append(name.lower() if name.lower() in CLASSICAL else name)
    if not methods:
        raise UsageError(f"{text!r}: give at least one method", option="methods")
    return methods


def resolve_methods(methods: str | None, models: str | None) -> list[str]:
    """The methods to run, in order: --methods (default: the classical four and sirenup-base;
    with --model: bicubic alone), then every --model not already among them."""
    chosen = [] if models is None else _split(models)
    if models is not None and not chosen:
        raise UsageError(f"{models!r}: give at least one model", option="model")
    for name in chosen:
        if name.lower() in CLASSICAL:
            raise UsageError(f"{name}: a classical method; list it in {mention('methods')}",
                             option="model")
    base = parse_methods(methods) if methods is not None or not chosen else ["bicubic"]
    return base + [name for name in chosen if name not in base]


def _split(text: str) -> list[str]:
    """Comma-separated names, each once; a weights file whose name holds a comma is one."""
    if "," in text and Path(text.strip()).is_file():
        return [text.strip()]
    return list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def method_label(name: str) -> str:
    """How a method is shown: registry names as given, weights files by their file name."""
    return Path(name.replace("\\", "/")).name if ("/" in name or "\\" in name) else name


def parse_crop(text: str | None, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """'x,y,w,h' (output pixels) -> a box inside ``size`` = (W, H), or UsageError."""
    if text is None:
        return None
    try:
        x, y, w, h = (int(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise UsageError(f"{text}: expected x,y,w,h in output pixels, e.g. 100,80,64,64",
                         option="crop") from None
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > size[0] or y + h > size[1]:
        raise UsageError(f"{text}: must lie inside the {size[0]}x{size[1]} output",
                         option="crop")
    return x, y, w, h


def run_compare(input: str | os.PathLike, options: CompareOptions,
                load_model: Callable[[str], object], *,
                on_event: Callable[[str, dict], None] | None = None) -> dict:
    """Upscale INPUT with every method, save each output and a montage, score them.

    ``load_model(name)`` -> an Upscaler (called once per model method, before any work).
    ``on_event('start', {methods, in_size, out_size})`` before the first method,
    ``on_event('progress', {method, done, total})`` while a model upscales (after each band),
    ``on_event('method', record)`` after each method. -> the report (``compare --json``).
    """
    emit = on_event or (lambda kind, record: None)

    def progress(method: str, done: int, total: int) -> None:
        emit("progress", {"method": method, "done": done, "total": total})
    input = Path(input)
    methods = resolve_methods(options.methods, options.models)
    from_model_option = set(_split(options.models or ""))
    sizing = any(v is not None for v in (options.scale, options.width, options.height))
    if options.reference is not None and options.self_reference:
        raise UsageError(f"give either {mention('reference')} HR or {mention('self')}, not both")
    if options.reference is not None and sizing:
        raise UsageError("fixes the output size (the reference's); drop "
                         f"{mention('scale')}/{mention('width')}/{mention('height')}",
                         option="reference")
    if options.self_reference and (options.width is not None or options.height is not None):
        raise UsageError(f"works with {mention('scale')} S (the input is downscaled by S)",
                         option="self")
    if options.self_reference and options.scale is not None and not options.scale > 1:
        raise UsageError(f"{options.scale:g}: {mention('self')} needs a scale above 1",
                         option="scale")

    source = read_image(input, integers=True)  # uint8 stays uint8: a quarter of float32
    warnings = list(source.warnings)
    if source.alpha is not None:
        warnings.append(f"{input}: transparency is ignored (colour is compared)")
    if options.self_reference:
        scale = options.scale if options.scale is not None else DEFAULT_SCALE
        if min(source.size) < max(4 * math.ceil(scale), MIN_SCORED + 2 * math.ceil(scale)):
            raise UsageError(f"{input}: {source.width}x{source.height} is too small for "
                             f"{mention('self')} {mention('scale')} {scale:g}")
        hr, lr = protocol_pair(_rgb8(source), scale)
        size = hr.size
        mode = "self"
    elif options.reference is not None:
        lr = _rgb8(source)
        hr = _rgb8(read_image(options.reference, integers=True))
        if hr.size[0] < lr.size[0] or hr.size[1] < lr.size[1]:
            raise UsageError(f"{options.reference}: {hr.size[0]}x{hr.size[1]} is "
                             f"smaller than the input {lr.size[0]}x{lr.size[1]}",
                             option="reference")
        sx, sy = hr.size[0] / lr.size[0], hr.size[1] / lr.size[1]
        if abs(sx - sy) > 0.02 * max(sx, sy):
            warnings.append(f"the reference's aspect ratio differs from the input's "
                            f"(x{sx:.3g} wide, x{sy:.3g} high)")
        scale, size = (sx + sy) / 2, hr.size
        if min(size) < MIN_SCORED + 2 * math.ceil(scale):
            raise UsageError(f"{options.reference}: {size[0]}x{size[1]} is too small "
                             f"to score at x{scale:.3g} (at least {MIN_SCORED} pixels must remain "
                             f"after shaving {math.ceil(scale)} from each border)",
                             option="reference")
        mode = "reference"
    else:
        lr, hr = _rgb8(source), None
        size = target_size(lr.size[0], lr.size[1], scale=options.scale,
                           out_width=options.width, out_height=options.height)
        scale = (size[0] / lr.size[0] + size[1] / lr.size[1]) / 2
        mode = "plain"
    check_output_size(size)
    crop = parse_crop(options.crop, size)
    out_dir = Path(options.output_dir) if options.output_dir else \
        input.with_name(f"{input.stem}_compare")
    stem = _safe(input.stem)
    names = ([f"lr_x{scale:g}", "hr"] if mode == "self" else []) + methods + ["montage"]
    planned = dict(zip(names, output_files(out_dir, stem, names), strict=True))
    check_outputs(list(planned.values()), options.overwrite)

    models: dict[str, tuple[object, float]] = {}
    for name in methods:
        if name in CLASSICAL:
            continue
        began = time.perf_counter()
        try:
            models[name] = (load_model(name), time.perf_counter() - began)
        except UsageError as error:
            if name in from_model_option:
                raise UsageError(f"{name}: not a usable model", option="model",
                                 detail=error) from None
            raise UsageError(f"{name}: not one of {', '.join(CLASSICAL)} nor a usable model",
                             option="methods", detail=error) from None

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{out_dir}: cannot create the folder ({error.strerror or error})") \
            from None
    images: list[str] = []

    def save(image: Image.Image, name: str) -> str:
        path = planned[name]
        save_pil(path, image)
        images.append(str(path))
        return str(path)

    if mode == "self":
        save(lr, f"lr_x{scale:g}")
        save(hr, "hr")
    lr_array = np.array(lr)  # (h, w, 3) uint8: the tiler makes float of one tile at a time
    textured = hr is not None and scale > 1  # at scale 1 there is no band above the input's
    hr_energies = texture_energies(hr, scale) if textured else None
    # grid-lock needs an integer scale and a few LR pixels per side (metrics.grid_lock)
    gridded = scale == round(scale) >= 2 and min(size) >= 4 * round(scale)

    records: list[dict] = []
    outputs: dict[str, Image.Image] = {}
    emit("start", {"methods": list(methods), "in_size": list(lr.size), "out_size": list(size)})
    for name in methods:
        if name in CLASSICAL:
            began = time.perf_counter()
            out = lr.resize(size, CLASSICAL[name])
            seconds = time.perf_counter() - began
            record = {"method": name, "label": name, "kind": "classical"}
        else:
            upscaler, load_seconds = models[name]
            _warm_up(upscaler, lr_array)
            began = time.perf_counter()
            from sirenup.inference.upscaler import QuantizedSink  # torch: see _warm_up

            sink = QuantizedSink((size[1], size[0]))  # 8 bits as they come: no float output
            upscaler.upscale_into(lr_array, size, sink, functools.partial(progress, name))
            seconds = time.perf_counter() - began
            out = Image.fromarray(sink.array, "RGB")
            record = {"method": name, "label": method_label(name), "kind": "model",
                      "model": getattr(upscaler, "model_name", name),
                      "device": str(getattr(upscaler, "device", "")),
                      "load_seconds": round(load_seconds, 3)}
        record["seconds"] = round(seconds, 4)
        record["output"] = save(out, name)
        if hr is not None:
            record["psnr_rgb"] = _finite(psnr_rgb(out, hr, scale))
            record["psnr_y"] = _finite(psnr_y(out, hr, scale))
            record["ssim"] = round(ssim(out, hr, scale), 4)
        if textured:
            ratios = energy_ratios(texture_energies(out, scale), hr_energies)
            record["texture"] = _ratio(ratios[0])
            record["texture_bands"] = [_ratio(r) for r in ratios[1:]]
        if gridded:
            record["grid_lock"] = round(grid_lock(out, round(scale)), 3)
        outputs[name] = out
        records.append(record)
        emit("method", record)

    auto = crop is None
    if auto:
        crop = most_detailed_region(hr if hr is not None else lr.resize(size, CLASSICAL["bicubic"]))
    panels = []
    if hr is not None:
        panels.append(("reference (HR)", [f"{size[0]}x{size[1]}"], hr))
    for record in records:
        lines = []
        if hr is not None:
            lines.append(f"PSNR {_fmt(record['psnr_rgb'])} dB, Y {_fmt(record['psnr_y'])} dB")
            lines.append(f"SSIM {record['ssim']:.4f}, texture "
                         f"{fmt_ratio(record.get('texture'))}")
        if "grid_lock" in record:
            lines.append(f"grid-lock {record['grid_lock']:.2f}")
        lines.append(f"{record['seconds']:.3f} s")
        panels.append((record["label"], lines, outputs[record["method"]]))
    montage, note = make_montage(panels, crop)
    if note:
        warnings.append(note)
    montage_path = save(montage, "montage")
    _record_outputs(out_dir, images)

    return {
        "input": str(input),
        "mode": mode,
        "reference": str(options.reference) if options.reference is not None else
        ("self" if mode == "self" else None),
        "scale": round(scale, 4),
        "in_size": list(lr.size),
        "out_size": list(size),
        "crop": list(crop),
        "crop_auto": auto,
        "output_dir": str(out_dir),
        "montage": montage_path,
        "images": images,
        "methods": records,
        "protocol": (f"8-bit RGB; {math.ceil(scale)}-pixel border shaved; PSNR-Y on BT.601 "
                     "studio-range luma; SSIM (scikit-image) on Y; texture = Y energy above "
                     f"{0.5 / scale:.3g} cycles/px (the input's Nyquist), output over "
                     "reference") if hr is not None else None,
        "grid_lock": ("median over the LR grid's harmonics of the output's Y power there over "
                      "its neighbours' (~1: nothing repeats with the input's pixels)")
        if gridded else None,
        "texture_bands": [[round(lo, 4), round(hi, 4)] for lo, hi in texture_bands(scale)]
        if textured else None,
        "warnings": warnings,
    }


def _rgb8(image: DecodedImage) -> Image.Image:
    """8-bit RGB of a decoded image (grey as grey RGB, alpha dropped); 16-bit and float
    samples rounded to the nearest 8-bit level."""
    array = image.rgb
    if array.dtype != np.uint8:
        array = np.round(np.clip(as_float(array), 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def _warm_up(upscaler, lr_array: np.ndarray) -> None:
    """One tiny run first, so one-time set-up does not count in the model's time."""
    # lazy: the upscaler imports torch, and compare's option checks import this module
    # before torch (tests/test_startup.py)
    from sirenup.inference.upscaler import QuantizedSink

    patch = np.ascontiguousarray(lr_array[:16, :16])
    size = (patch.shape[1] * 2, patch.shape[0] * 2)
    upscaler.upscale_into(patch, size, QuantizedSink((size[1], size[0])))


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None  # identical images: no number


def _ratio(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None  # flat reference: none


def _fmt(value: float | None) -> str:
    return "inf" if value is None else f"{value:.2f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def output_files(out_dir: Path, stem: str, names: list[str]) -> list[Path]:
    """``<stem>_<name>.png`` in ``out_dir`` for each name, made file-name safe and distinct
    (two weights files called model.safetensors: model, model-2)."""
    used: set[str] = set()
    paths = []
    for name in names:
        base, n = _safe(name), 2
        file_name = base
        while file_name in used:
            file_name, n = f"{base}-{n}", n + 1
        used.add(file_name)
        paths.append(out_dir / f"{stem}_{file_name}.png")
    return paths


MANIFEST = ".sirenup-compare.json"  # in the output folder: the files compare wrote there
MAX_MANIFEST = 1 << 20


def _manifest(out_dir: Path) -> dict[str, str]:
    """{file name: sha256} of the files an earlier compare wrote into ``out_dir``."""
    try:
        files = json.loads(read_bounded(out_dir / MANIFEST, MAX_MANIFEST)).get("files")
    except (SirenupError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in files.items() if isinstance(v, str)} \
        if isinstance(files, dict) else {}


def _record_outputs(out_dir: Path, paths: list[str]) -> None:
    files = _manifest(out_dir)
    files.update({Path(p).name: sha256_file(p) for p in paths})
    atomic_write_bytes(out_dir / MANIFEST, json.dumps({"files": files}, indent=1).encode())


def _ours(path: Path, manifest: dict[str, str]) -> bool:
    """Whether ``path`` is, unchanged, a file an earlier compare wrote."""
    try:
        return path.name in manifest and path.is_file() and \
            sha256_file(path) == manifest[path.name]
    except OSError:
        return False


def check_outputs(paths: list[Path], overwrite: bool) -> None:
    """Before any work: every output may be written (a regular file or nothing), and without
    ``overwrite`` none exists but the unchanged outputs of an earlier compare (recorded in
    MANIFEST): the folder may hold the user's own cat_hr.png."""
    for path in paths:
        check_output_path(path)
    manifest = _manifest(paths[0].parent) if paths else {}
    existing = [path for path in paths if os.path.lexists(path) and not _ours(path, manifest)]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise SirenupError(f"{existing[0]}{more}: already exist(s) in the output folder; not "
                           f"replaced (use {mention('overwrite')} to replace them, or another "
                           "-d)")


def _safe(name: str) -> str:
    """A file-name-safe version of a method name ('runs/best.safetensors' -> 'best')."""
    if "/" in name or "\\" in name or name.endswith((".safetensors", ".pt", ".pth")):
        name = Path(name.replace("\\", "/")).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "method"
