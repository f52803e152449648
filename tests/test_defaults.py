"""Defaults written once (``sirenup.defaults`` and the config dataclasses): the CLI passes None
for an option not given, so the library can tell ``--tile 512`` from no --tile."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import sirenup.inference.upscaler as upscaler_module
from sirenup.cli.app import app
from sirenup.defaults import DEFAULT_OVERLAP, DEFAULT_TILE
from sirenup.errors import SirenupError
from sirenup.inference import devices
from sirenup.inference.devices import auto_tile
from sirenup.inference.upscaler import Upscaler


def test_a_chosen_tile_never_grows_even_the_default_size(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(devices, "free_memory", lambda device: 80 * 2**30)
    assert auto_tile(cuda, 4.0, None) > DEFAULT_TILE  # not chosen: grows with free memory
    assert auto_tile(cuda, 4.0, DEFAULT_TILE) == DEFAULT_TILE  # --tile 512: kept
    fake = Upscaler.__new__(Upscaler)  # no model: the default architecture's tile cost
    fake.device, fake.tile, fake.model = cuda, DEFAULT_TILE, None
    assert fake.tile_for((100, 100), (400, 400)) == DEFAULT_TILE
    fake.tile = None
    assert fake.tile_for((100, 100), (400, 400)) > DEFAULT_TILE


@pytest.mark.parametrize("args, expected", [
    ([], (None, None)),
    (["--tile", str(DEFAULT_TILE), "--overlap", str(DEFAULT_OVERLAP)],
     (DEFAULT_TILE, DEFAULT_OVERLAP)),
    (["--tile", "0"], (0, None)),
])
def test_the_cli_passes_none_for_tiling_not_given(tmp_path, monkeypatch, args, expected):
    seen = []

    def load_upscaler(model=None, *, tile=None, overlap=None, **settings):
        seen.append((tile, overlap))
        raise SirenupError("stop here")

    monkeypatch.setattr(upscaler_module, "load_upscaler", load_upscaler)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["upscale", str(tmp_path / "a.png"), "-o",
                                      str(tmp_path / "b.png"), *args])
    assert "stop here" in result.output
    assert seen == [expected]
