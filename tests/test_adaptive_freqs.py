"""Content-adaptive frequencies (``AdaptiveFrequencies``): added to a trained model they compute
exactly what it did, once trained the grid decoder and the tiles agree with the per-query
path, the waves blend without seams at LR pixel borders, and `sirenup train` records them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sirenup.errors import UsageError
from sirenup.inference.tiler import output_axis, upscale_tensor
from sirenup.models.coords import cell_size, output_coords
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig
from sirenup.models.weights import load_weights, save_weights
from sirenup.training.loop import add_adaptive_frequencies

SMALL = LiifSirenConfig(channels=8, n_blocks=2, hidden=16, version=2, refine_features=4,
                        refine_hidden=8)


def lr_image(h: int = 30, w: int = 38, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def moved_model(pairs: int = 4, seed: int = 0) -> LiifSiren:
    """A small model whose adaptive frequencies do something (amplitudes no longer zero)."""
    torch.manual_seed(seed)
    model = add_adaptive_frequencies(LiifSiren(config=SMALL), pairs).eval()
    with torch.no_grad():
        model.decoder.adaptive.conv.weight.normal_(0, 0.3)
        model.decoder.adaptive.conv.bias.normal_(0, 0.3)
    return model


def test_added_frequencies_start_as_the_identity():
    torch.manual_seed(0)
    before = LiifSiren(config=SMALL).eval()
    after = add_adaptive_frequencies(before, 4).eval()
    assert after.config.adaptive_freqs == 4 and after.halo == before.halo
    lr = lr_image()
    with torch.no_grad():
        coords = torch.rand(1, 50, 2) * 30
        assert torch.equal(after.decoder.adaptive_term(after.encode(lr), coords),
                           torch.zeros(1, 50, SMALL.hidden))
    for size in ((90, 114), (111, 141)):
        torch.testing.assert_close(upscale_tensor(after, lr, size, tile=0),
                                   upscale_tensor(before, lr, size, tile=0), rtol=0, atol=1e-6)
    assert add_adaptive_frequencies(after, 4) is after
    assert add_adaptive_frequencies(after, 0) is after
    with pytest.raises(UsageError):
        add_adaptive_frequencies(after, 8)  # training does not change K


@pytest.mark.parametrize("size", [(60, 76), (111, 141)])
@torch.no_grad()
def test_grid_decoder_equals_the_per_query_path(size):
    model = moved_model()
    lr = lr_image()
    (h, w), (in_h, in_w) = size, lr.shape[-2:]
    pre = model.encode(lr)
    cell = cell_size(h, w, in_h, in_w)
    per_query = model.decode(pre, lr, output_coords(h, w, in_h, in_w), cell)  # (1, N, 3 + k)
    grid = model.decode_grid(pre, lr, output_axis(w, in_w, 0, w, 0),
                             output_axis(h, in_h, 0, h, 0), cell, block_queries=500)
    torch.testing.assert_close(grid, per_query.view(1, h, w, -1).permute(0, 3, 1, 2),
                               rtol=0, atol=2e-5)
    # and the term is there: without it the output differs
    plain = LiifSiren(config=SMALL).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    assert (upscale_tensor(plain, lr, size, tile=0)
            - upscale_tensor(model, lr, size, tile=0)).abs().max() > 1e-3


@pytest.mark.parametrize("scale", [2.0, 3.7, 4.0])
def test_tiled_equals_untiled(scale):
    model = moved_model()
    lr = lr_image()
    size = (round(30 * scale), round(38 * scale))
    torch.testing.assert_close(upscale_tensor(model, lr, size, tile=12, overlap=4),
                               upscale_tensor(model, lr, size, tile=0), rtol=0, atol=2e-5)


@torch.no_grad()
def test_waves_have_no_seam_at_lr_pixel_borders():
    """Area blending: the waves are continuous where the nearest LR centre changes (x = n + 0.5)
    and where the 4 nearest centres change (x = n), so a fine sweep has no jump."""
    model = moved_model()
    maps = model.encode(lr_image())[:, SMALL.hidden:]
    x = torch.arange(2.0, 8.0, 1e-3)
    coords = torch.stack([x, torch.full_like(x, 5.3)], -1)[None]  # (1, N, 2)
    waves = model.decoder.adaptive.waves(maps, coords)[0]  # (N, 2K)
    steps = (waves[1:] - waves[:-1]).abs().max(dim=1).values
    assert float(steps.max()) < 20 * float(steps.median()) + 1e-4
    assert float(waves.abs().max()) > 0.05  # not trivially smooth: the waves are there


def test_weights_file_keeps_them_and_old_files_have_none(tmp_path):
    path = tmp_path / "m.safetensors"
    save_weights(path, moved_model())
    loaded = load_weights(path)[0].decoder.adaptive
    for name, tensor in moved_model().decoder.adaptive.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert LiifSirenConfig.from_dict({"channels": 8}).adaptive_freqs == 0
    assert LiifSiren(config=SMALL).decoder.adaptive is None  # off: no new layers, no new keys


def test_train_adds_them_to_an_init_model(tmp_path, invoke, gan_photos):
    """`sirenup train --init F --adaptive-freqs K` trains and exports them; the file upscales
    through the CLI; asking a model that has them for another K is a usage error."""
    init = tmp_path / "init.safetensors"
    torch.manual_seed(0)
    save_weights(init, LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=1, hidden=16)))
    small = ["--steps", "2", "--batch", "2", "--patch", "16", "--device", "cpu"]
    result = invoke("train", str(gan_photos), "--out", str(tmp_path / "run"), "--init",
                    str(init), "--adaptive-freqs", "4", *small)
    assert result.exit_code == 0, result.output
    model_path = tmp_path / "run" / "model.safetensors"
    model, meta = load_weights(model_path)
    assert model.config.adaptive_freqs == 4 and meta["steps"] == 2
    assert model.decoder.adaptive.conv.weight[8:].abs().max() > 0  # the amplitudes moved
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    result = invoke("upscale", str(tmp_path / "in.png"), "--model", str(model_path),
                    "--scale", "3", "-o", str(tmp_path / "out.png"))
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out.png").size == (72, 60)
    result = invoke("train", str(gan_photos), "--out", str(tmp_path / "again"), "--init",
                    str(model_path), "--adaptive-freqs", "8", *small)
    assert result.exit_code == 2
    assert "--adaptive-freqs 8" in result.output
