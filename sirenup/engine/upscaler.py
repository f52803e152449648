"""The Upscaler: one object per run that holds a loaded model on a device and upscales
RGB arrays with the tiler; plus the file and folder operations the CLI calls
(``upscale_file``, ``upscale_folder``)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sirenup.engine.devices import resolve_device
from sirenup.engine.imageio import (
    ALPHA_FORMATS,
    EXTENSIONS,
    FORMATS,
    LUMA,
    DecodedImage,
    check_writable,
    output_format,
    probe_image,
    read_image,
    write_image,
)
from sirenup.engine.sizing import scale_label, target_size
from sirenup.engine.tiler import MIN_TILE, upscale_tensor
from sirenup.errors import SirenupError, UsageError
from sirenup.hub.registry import DEFAULT_MODEL, resolve_model
from sirenup.models.weights import WeightsError, load_weights


class Upscaler:
    """Load ``model`` (registry name or weights path) once; upscale many images."""

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "auto", tile: int = 256,
                 overlap: int = 8):
        self.device = resolve_device(device)
        self.model_name, self.model_path = resolve_model(model)
        self.model, self.metadata = load_weights(self.model_path, device=self.device)
        self.model_name = self.metadata.get("name", self.model_name)
        self.tile, self.overlap = tile, overlap

    @torch.inference_mode()
    def upscale_rgb(self, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(h, w, 3) float32 in [0, 1] -> (H, W, 3) float32 in [0, 1], size = (W, H)."""
        lr = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
        lr = lr.permute(2, 0, 1).unsqueeze(0).to(self.device)  # (1, 3, h, w)
        out = upscale_tensor(self.model, lr, (size[1], size[0]), tile=self.tile,
                             overlap=self.overlap)
        return out[0].permute(1, 2, 0).float().cpu().numpy()  # (H, W, 3)

    def upscale_image(self, image: DecodedImage, size: tuple[int, int]) -> DecodedImage:
        """Upscale a decoded image to ``size`` = (W, H): colour through the model, alpha with
        Pillow's bicubic filter; grey stays grey (the model's RGB back to luminance)."""
        rgb = self.upscale_rgb(image.rgb, size)
        if image.grey:
            rgb = np.repeat((rgb @ LUMA)[..., None], 3, axis=2)
        alpha = None
        if image.alpha is not None:
            plane = Image.fromarray(np.ascontiguousarray(image.alpha, dtype=np.float32))  # "F"
            plane = plane.resize(size, Image.Resampling.BICUBIC)
            alpha = np.clip(np.asarray(plane, dtype=np.float32), 0.0, 1.0)
        return dataclasses.replace(image, rgb=np.ascontiguousarray(rgb, dtype=np.float32),
                                   alpha=alpha, warnings=list(image.warnings))


def check_tiling(tile: int, overlap: int) -> None:
    if tile != 0 and tile < MIN_TILE:
        raise UsageError(f"--tile {tile}: must be 0 (whole image) or at least {MIN_TILE}")
    if overlap < 0:
        raise UsageError(f"--overlap {overlap}: must be 0 or more")


def load_upscaler(model: str | os.PathLike | None = None, *, device: str = "auto",
                  tile: int = 256, overlap: int = 8) -> Upscaler:
    """Check the tiling options and load the model once; weights errors -> SirenupError."""
    check_tiling(tile, overlap)
    try:
        return Upscaler(str(model) if model else DEFAULT_MODEL, device=device, tile=tile,
                        overlap=overlap)
    except WeightsError as error:
        raise SirenupError(str(error)) from None


def default_output(src: Path, in_size: tuple[int, int], size: tuple[int, int],
                   format: str | None = None) -> Path:
    """``<stem>_x<S>.png`` beside the input (photo_x4.png, photo_x1920x1080.png); the extension
    follows ``format`` when one is given."""
    ext = EXTENSIONS[output_format(src, format)] if format else ".png"
    return src.with_name(f"{src.stem}_x{scale_label(in_size[0], in_size[1], size)}{ext}")


def same_file(a: Path, b: Path) -> bool:
    try:
        if b.exists() and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return a.resolve() == b.resolve()


def upscale_file(upscaler: Upscaler, src: str | os.PathLike, dst: str | os.PathLike | None = None,
                 *, scale: float | None = None, width: int | None = None,
                 height: int | None = None, format: str | None = None,
                 quality: int | None = None, overwrite_input: bool = False,
                 on_warning: Callable[[str], None] | None = None) -> dict:
    """Read ``src``, upscale it to the size the options give, write ``dst`` atomically.

    ``dst`` None: ``default_output`` beside the input. -> report dict (input, output, in_size,
    out_size, seconds, model, device, warnings).
    """
    start = time.perf_counter()
    src = Path(src)
    if dst is not None:
        dst = Path(dst)
        output_format(dst, format)  # an unknown extension fails before any work
    image = read_image(src)
    for message in image.warnings:
        if on_warning is not None:
            on_warning(message)
    size = target_size(image.width, image.height, scale=scale, out_width=width,
                       out_height=height)
    if dst is None:
        dst = default_output(src, image.size, size, format)
    if not overwrite_input and same_file(src, dst):
        raise SirenupError(f"{dst}: is the input file; choose another output")
    check_writable(dst, image, format)
    if quality is not None and not 1 <= quality <= 100:
        raise UsageError(f"--quality {quality}: must be between 1 and 100")
    result = upscaler.upscale_image(image, size)
    write_image(dst, result, format=format, quality=quality)
    return {
        "input": str(src),
        "output": str(dst),
        "in_size": list(image.size),
        "out_size": list(size),
        "seconds": round(time.perf_counter() - start, 3),
        "model": upscaler.model_name,
        "device": str(upscaler.device),
        "warnings": list(image.warnings),
    }


def upscale_folder(upscaler: Upscaler, src_dir: str | os.PathLike, dst_dir: str | os.PathLike,
                   *, scale: float | None = None, width: int | None = None,
                   height: int | None = None,
                   on_event: Callable[[str, dict], None] | None = None) -> dict:
    """Upscale every image directly in ``src_dir`` into ``dst_dir`` (same stem; the input's
    extension when sirenup writes that format, else .png). Files Pillow does not recognise are
    skipped; a file that fails is recorded and the batch goes on.

    ``on_event(kind, record)`` is called per file, kind = 'done' (record: upscale_file's
    report), 'failed' ({'input', 'error'}), 'skipped' ({'input'}) or, before 'done',
    'warning' ({'input', 'message'}).
    -> {'done', 'skipped', 'failed', 'seconds', 'results', 'failures', 'skipped_files'}.
    """
    start = time.perf_counter()
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise UsageError(f"{src_dir}: not a folder")
    if dst_dir.exists() and not dst_dir.is_dir():
        raise UsageError(f"{dst_dir}: exists and is not a folder")
    if dst_dir.exists() and same_file(src_dir, dst_dir):
        raise UsageError("the output folder must differ from the input folder")
    target_size(1, 1, scale=scale, out_width=width, out_height=height)  # option errors first
    emit = on_event or (lambda kind, record: None)

    images, skipped = [], []
    for path in sorted(p for p in src_dir.iterdir() if p.is_file()):
        probe = probe_image(path)
        if probe is None:
            skipped.append(str(path))
            emit("skipped", {"input": str(path)})
        else:
            images.append((path, probe))
    dst_dir.mkdir(parents=True, exist_ok=True)

    results, failures = [], []
    for path, dst in _plan_outputs(images, dst_dir):
        try:
            report = upscale_file(
                upscaler, path, dst, scale=scale, width=width, height=height,
                on_warning=lambda message, p=path: emit("warning", {"input": str(p),
                                                                    "message": message}))
        except Exception as error:  # one bad file must not stop the batch
            record = {"input": str(path), "error": _reason(error, path)}
            failures.append(record)
            emit("failed", record)
            continue
        results.append(report)
        emit("done", report)
    return {
        "done": len(results),
        "skipped": len(skipped),
        "failed": len(failures),
        "seconds": round(time.perf_counter() - start, 3),
        "results": results,
        "failures": failures,
        "skipped_files": skipped,
    }


def _plan_outputs(images: list[tuple[Path, dict]], dst_dir: Path) -> list[tuple[Path, Path]]:
    """Output path per input, in input order, no two alike: inputs that keep their extension
    are placed first, converted ones (.gif -> .png) take ``stem.png`` only if it is free."""
    kept, converted = {}, []
    for path, probe in images:
        fmt = FORMATS.get(path.suffix.lower().lstrip("."))
        if fmt is not None and not (probe["alpha"] and fmt not in ALPHA_FORMATS):
            kept[path] = dst_dir / path.name
        else:
            converted.append(path)
    used = {p.name.lower() for p in kept.values()}
    planned = dict(kept)
    for path in converted:
        for name in (f"{path.stem}.png", f"{path.name}.png"):
            if name.lower() not in used:
                break
        else:
            n = 1
            while f"{path.stem}-{n}.png".lower() in used:
                n += 1
            name = f"{path.stem}-{n}.png"
        used.add(name.lower())
        planned[path] = dst_dir / name
    return [(path, planned[path]) for path, _ in images]


def _reason(error: Exception, path: Path) -> str:
    """The error's message without a leading '<path>: ' (the caller names the file)."""
    text = str(error) if isinstance(error, SirenupError) else f"{type(error).__name__}: {error}"
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text
