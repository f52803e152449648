"""The per-image pipeline ``upscale`` and ``batch`` share: ``planning.OutputSpec`` (checked
once), ``planning.prepare_job`` and ``upscaler.process``."""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import pytest
from PIL import Image

import sirenup.imaging.imageio as imageio
from sirenup.errors import UsageError
from sirenup.inference.batch import BatchOptions, run_batch
from sirenup.inference.planning import OutputSpec, plan_upscale, prepare_job
from sirenup.inference.upscaler import process


class FakeUpscaler:
    """Black RGB outputs of the asked size; keeps a weak reference to each output array."""

    model_name, device = "fake", "cpu"

    def __init__(self):
        self.outputs: list[weakref.ref] = []

    def upscale_image(self, image, size, progress=None):
        rgb = np.zeros((size[1], size[0], 3), np.uint8)
        self.outputs.append(weakref.ref(rgb))
        return dataclasses.replace(image, rgb=rgb, alpha=None, grey=False)


def _image(path, size=(12, 10)):
    Image.new("RGB", size, (200, 100, 50)).save(path)
    return path


def test_spec_checks_the_options_once():
    with pytest.raises(UsageError, match="quality"):
        OutputSpec.checked(quality=0)
    with pytest.raises(UsageError, match="give either scale"):
        OutputSpec.checked(scale=2, width=40)
    spec = OutputSpec.checked(scale=2, background="white")
    assert spec.background == (255, 255, 255)
    assert spec.output_size((12, 10), None) == (24, 20)


def test_prepare_job_sizes_warns_and_checks_the_output(tmp_path):
    src = _image(tmp_path / "a.png")
    job = prepare_job(src, tmp_path / "a.jpg", OutputSpec.checked(width=48, height=20))
    assert job.size == (48, 20) and job.image.size == (12, 10)
    assert any("aspect ratio" in w for w in job.warnings)


def test_upscale_and_batch_free_the_output_before_encoding(tmp_path, monkeypatch):
    seen: list[bool] = []
    upscaler = FakeUpscaler()
    real = imageio.atomic_write

    def watched(path, write, *args, **kwargs):
        seen.append(all(ref() is None for ref in upscaler.outputs))  # every output freed?
        return real(path, write, *args, **kwargs)

    monkeypatch.setattr(imageio, "atomic_write", watched)
    (tmp_path / "in").mkdir()
    src = _image(tmp_path / "in" / "a.png")
    facts, write = process(upscaler, plan_upscale(src, tmp_path / "a_x2.png", scale=2))
    write()
    assert facts["out_size"] == [24, 20]
    report = run_batch([tmp_path / "in"], tmp_path / "out", BatchOptions(scale=2),
                       lambda: upscaler)
    assert report["done"] == 1 and report["results"][0]["out_size"] == [24, 20]
    assert seen == [True, True]
