"""The LIIF-SIREN model: shapes, SIREN initialisation, coordinate convention, config."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sirenup.models import patch_siren
from sirenup.models.coords import cell_size, output_coords
from sirenup.models.patch_siren import (
    CELL_FEATURES,
    OFFSET_FEATURES,
    LiifSiren,
    LiifSirenConfig,
    offset_encoding,
)
from sirenup.models.siren import SineLayer, siren_bound

SMALL = LiifSirenConfig(channels=8, n_blocks=2, hidden=16, n_hidden=2)


def make_model(config: LiifSirenConfig | None = None, seed: int = 0) -> LiifSiren:
    torch.manual_seed(seed)
    return LiifSiren(config=config).eval()


def reference_sample(image: torch.Tensor, coords: torch.Tensor, mode: str) -> torch.Tensor:
    """Independent reference: sample (B, C, h, w) at LR pixel coords (B, N, 2) -> (B, N, C),
    pixel centres at integers (align_corners=False), edges replicated."""
    h, w = image.shape[-2:]
    grid = torch.stack([(coords[..., 0] + 0.5) / w * 2 - 1, (coords[..., 1] + 0.5) / h * 2 - 1],
                       dim=-1).unsqueeze(1)
    out = F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=False)
    return out[:, :, 0, :].transpose(1, 2)


def random_lr(b: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=gen)


# -- shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [SMALL, LiifSirenConfig()], ids=["small", "default"])
def test_shapes(config):
    model = make_model(config)
    lr = random_lr(2, 11, 7)
    feats = model.encoder(lr)
    assert feats.shape == (2, config.channels, 11, 7)
    pre = model.encode(lr)
    assert pre.shape == (2, config.hidden, 11, 7)
    coords = torch.rand(2, 13, 2) * torch.tensor([7.0, 11.0]) - 0.5
    cell = torch.full((2, 2), 0.5)
    residual = model.decoder(pre, coords, cell)
    # the decoder's internal layout may be channels-first or -last; it holds B x N x RGB values
    assert residual.shape[0] == 2 and sorted(residual.shape[1:]) == [3, 13]
    assert model.decode(pre, lr, coords, cell).shape == (2, 13, 3)
    out = model(lr, coords, cell)
    assert out.shape == (2, 13, 3)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


# -- initialisation ----------------------------------------------------------------------------

@pytest.mark.parametrize("is_first", [True, False])
@pytest.mark.parametrize("w0", [1.0, 30.0])
def test_sine_layer_init_range(is_first, w0):
    torch.manual_seed(0)
    n = 64
    layer = SineLayer(n, 128, w0=w0, is_first=is_first)
    bound = 1.0 / n if is_first else math.sqrt(6.0 / n) / w0
    assert siren_bound(n, w0, is_first=is_first) == pytest.approx(bound)
    for p in (layer.linear.weight, layer.linear.bias):
        assert p.abs().max() <= bound
        # actually drawn at that scale, not left at PyTorch's default init
        assert p.abs().max() > 0.8 * bound
    x = torch.rand(5, n)
    expected = torch.sin(w0 * (x @ layer.linear.weight.T + layer.linear.bias))
    torch.testing.assert_close(layer(x), expected)


def test_decoder_first_layer_init_range():
    config = LiifSirenConfig()
    model = make_model(config)
    dec = model.decoder
    fan_in = 9 * config.channels + OFFSET_FEATURES + CELL_FEATURES
    assert fan_in == 9 * config.channels + 4 + 2
    bound = 1.0 / fan_in
    parts = {
        "patch_proj.weight": dec.patch_proj.weight,
        "patch_proj.bias": dec.patch_proj.bias,
        "offset_proj.weight": dec.offset_proj.weight,
        "cell_proj.weight": dec.cell_proj.weight,
        "cell_proj.bias": dec.cell_proj.bias,
    }
    assert dec.patch_proj.weight.shape == (config.hidden, config.channels, 3, 3)
    for name, p in parts.items():
        assert p.abs().max() <= bound, name
        assert p.abs().max() > 0.5 * bound, name
    for layer in dec.hidden_layers:
        hidden_bound = math.sqrt(6.0 / config.hidden) / config.w0_hidden
        assert layer.linear.weight.abs().max() <= hidden_bound
        assert layer.w0 == config.w0_hidden
    assert dec.w0_first == config.w0_first
    assert dec.out.weight.abs().max() <= 1e-3
    assert torch.count_nonzero(dec.out.bias) == 0


def test_fresh_model_is_close_to_bicubic():
    model = make_model()
    lr = random_lr(1, 12, 10)
    out_h, out_w = 24, 20
    coords = output_coords(out_h, out_w, 12, 10)
    cell = cell_size(out_h, out_w, 12, 10)
    with torch.no_grad():
        out = model(lr, coords, cell)  # (1, N, 3)
        base = reference_sample(lr, coords, "bicubic")
    residual = (out - base).abs().max().item()
    assert 0 < residual < 0.02
    # the bicubic base is torch's bicubic upscaling (align_corners=False, edges replicated)
    ref = F.interpolate(lr, size=(out_h, out_w), mode="bicubic", align_corners=False)
    image = out[0].T.reshape(3, out_h, out_w)
    assert (image - ref[0]).abs().max().item() < 0.02


# -- coordinates -------------------------------------------------------------------------------

def test_output_coords_2x_pixel_centres():
    coords = output_coords(4, 4, 2, 2)
    assert coords.shape == (1, 16, 2)
    xs = coords[0, :4, 0].tolist()  # first row: x varies, y fixed
    assert xs == pytest.approx([-0.25, 0.25, 0.75, 1.25])
    assert coords[0, :4, 1].tolist() == pytest.approx([-0.25] * 4)
    ys = coords[0, ::4, 1].tolist()  # first column: y varies
    assert ys == pytest.approx([-0.25, 0.25, 0.75, 1.25])


def test_output_coords_1x_is_integer_grid_and_sampling_is_identity():
    coords = output_coords(3, 5, 3, 5)
    grid_y, grid_x = torch.meshgrid(torch.arange(3.0), torch.arange(5.0), indexing="ij")
    expected = torch.stack([grid_x, grid_y], dim=-1).reshape(1, -1, 2)
    assert torch.equal(coords, expected)
    # at 1x a freshly initialised model reproduces the LR image (residual ~0)
    model = make_model(SMALL)
    lr = random_lr(1, 3, 5)
    with torch.no_grad():
        out = model(lr, coords, cell_size(3, 5, 3, 5))  # (1, N, 3)
    assert (out[0].T.reshape(3, 3, 5) - lr[0]).abs().max() < 0.02


def test_output_coords_non_integer_scale_and_sub_ranges():
    out_h, out_w, in_h, in_w = 7, 9, 3, 4
    full = output_coords(out_h, out_w, in_h, in_w).reshape(out_h, out_w, 2)
    for x in range(out_w):
        assert full[0, x, 0].item() == pytest.approx((x + 0.5) * in_w / out_w - 0.5)
    for y in range(out_h):
        assert full[y, 0, 1].item() == pytest.approx((y + 0.5) * in_h / out_h - 0.5)
    part = output_coords(out_h, out_w, in_h, in_w, y0=2, y1=5, x0=3, x1=8)
    assert torch.equal(part.reshape(3, 5, 2), full[2:5, 3:8])
    shifted = output_coords(out_h, out_w, in_h, in_w, y0=2, y1=5, x0=3, x1=8, origin=(3.0, 5.0))
    torch.testing.assert_close(shifted.reshape(3, 5, 2),
                               full[2:5, 3:8] - torch.tensor([3.0, 5.0]))


def test_output_coords_symmetric_about_image_centre():
    # pixel centres of the output are symmetric around the LR centre, at any scale
    for out_w, in_w in [(10, 4), (37, 10), (25, 10), (7, 7)]:
        xs = output_coords(1, out_w, 1, in_w)[0, :, 0]
        torch.testing.assert_close(xs + xs.flip(0), torch.full_like(xs, in_w - 1.0))


def test_cell_size():
    cell = cell_size(8, 6, 4, 2)
    assert cell.shape == (1, 2)
    assert cell[0].tolist() == pytest.approx([0.5, 1 / 3])  # (height, width)
    assert cell_size(10, 10, 10, 10)[0].tolist() == pytest.approx([1.0, 1.0])


def test_cell_input_clamps_beyond_trained_range():
    model = make_model(LiifSirenConfig(max_cell_scale=4.0))
    cells = torch.tensor([[1.0, 0.5], [0.25, 0.1]])
    out = model.cell_input(cells)
    torch.testing.assert_close(out, torch.tensor([[2.0, 1.0], [0.5, 0.5]]))


def test_offset_encoding_continuous_at_half_pixels():
    eps = 1e-4
    for edge in (-1.5, -0.5, 0.5, 1.5, 2.5, 10.5):
        below = offset_encoding(torch.tensor([[[edge - eps, edge - eps]]]))
        at = offset_encoding(torch.tensor([[[edge, edge]]]))
        above = offset_encoding(torch.tensor([[[edge + eps, edge + eps]]]))
        assert below.shape == (1, 1, 4)
        assert (below - above).abs().max() < 1e-2
        assert (below - at).abs().max() < 1e-2
    # integer-periodic: shifting the coordinates by whole pixels changes nothing
    coords = torch.rand(1, 50, 2) * 4 - 2
    torch.testing.assert_close(offset_encoding(coords), offset_encoding(coords + 3.0),
                               atol=1e-4, rtol=0)
    enc = offset_encoding(torch.tensor([[[0.0, 0.25]]]))[0, 0]
    assert enc.tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0], abs=1e-6)


def test_model_output_continuous_across_lr_pixel_borders():
    model = make_model(SMALL)
    with torch.no_grad():
        model.decoder.out.weight.uniform_(-0.5, 0.5)  # a residual that is far from zero
        lr = random_lr(1, 8, 8)
        xs = torch.tensor([3.5 - 1e-4, 3.5 + 1e-4])
        coords = torch.stack([xs, torch.full_like(xs, 4.0)], dim=-1).unsqueeze(0)
        out = model(lr, coords, torch.full((1, 2), 0.5))
    assert (out[0, 0] - out[0, 1]).abs().max() < 0.02


@pytest.mark.parametrize("n_blocks", [1, 2])
def test_receptive_radius_matches_architecture(n_blocks):
    config = LiifSirenConfig(channels=8, n_blocks=n_blocks, hidden=16)
    model = make_model(config)
    radius = model.receptive_radius
    assert radius == 1 + 2 * n_blocks + 1 + 1 + 2
    size, c = 41, 20
    lr = random_lr(1, size, size).requires_grad_(True)
    # queries whose centres fall in LR pixel c's cell, [c - 0.5, c + 0.5) on both axes (what a
    # tile owns per LR pixel), at several scales
    t = torch.linspace(-0.5, 0.5 - 1e-3, 9)
    gy, gx = torch.meshgrid(c + t, c + t, indexing="ij")
    coords = torch.stack([gx, gy], dim=-1).reshape(1, -1, 2)
    grads = []
    for cell in (1.0, 0.5, 0.25):
        lr.grad = None
        out = model(lr, coords, torch.full((1, 2), cell))
        out.square().sum().backward()
        grads.append(lr.grad.abs().sum(dim=(0, 1)))
    touched = torch.nonzero(sum(grads) > 0)
    reach = (touched - c).abs().max().item()
    # every LR pixel the output depends on lies within the radius, and the radius is not
    # wastefully larger than what the architecture needs
    assert reach <= radius
    assert reach >= radius - 1


# -- config ------------------------------------------------------------------------------------

def test_config_round_trip():
    config = LiifSirenConfig(channels=16, n_blocks=3, res_scale=0.1, hidden=32, n_hidden=2,
                             w0_first=20.0, w0_hidden=2.0, max_cell_scale=6.0)
    data = config.to_dict()
    assert isinstance(data, dict)
    assert LiifSirenConfig.from_dict(data) == config
    assert LiifSirenConfig.from_dict({**data, "unknown_key": 1, "future": "x"}) == config
    assert LiifSirenConfig.from_dict({}) == LiifSirenConfig()
    model = LiifSiren(config=LiifSirenConfig.from_dict(data))
    assert model.config == config


@pytest.mark.parametrize("layers", [
    {},  # version 1: the output layer as it is
    {"version": 2, "refine_features": 4},  # 7 outputs, padded to 16 (OUT_ROWS_MULTIPLE)
    {"version": 2, "refine_features": 4, "n_hidden": 0},  # the ones channel feeds the output
    {"version": 2, "refine_features": 13, "n_hidden": 2},  # 16 outputs: nothing to pad
])
@pytest.mark.parametrize("block", [None, 7])
@pytest.mark.parametrize("out_hw", [(40, 52), (23, 31), (17, 17)])
def test_decode_grid_matches_pointwise_decode(out_hw, block, layers):
    """The separable inference path computes the same function as the training path, also
    when a band is decoded in several blocks of columns (7 queries) or in one (None, GPUs),
    whatever the decoder's depth and outputs (the refiner's features after RGB)."""
    from sirenup.inference.tiler import output_axis

    torch.manual_seed(3)
    model = LiifSiren(config=LiifSirenConfig(channels=8, n_blocks=1, hidden=16,
                                             **layers)).eval()
    with torch.no_grad():
        model.decoder.out.weight.uniform_(-0.5, 0.5)  # a residual large enough to compare
    lr = torch.rand(1, 3, 11, 13)
    (out_h, out_w), (in_h, in_w) = out_hw, lr.shape[-2:]
    cell = cell_size(out_h, out_w, in_h, in_w)
    with torch.no_grad():
        pre = model.encode(lr)
        points = model.decode(pre, lr, output_coords(out_h, out_w, in_h, in_w), cell)
        grid = model.decode_grid(pre, lr, output_axis(out_w, in_w, 0, out_w, 0),
                                 output_axis(out_h, in_h, 0, out_h, 0), cell,
                                 block_queries=block)
    expected = points[0].T.reshape(-1, out_h, out_w)
    assert grid.shape[1] == 3 + model.extra_out
    assert torch.allclose(grid[0], expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_separable_sampler_matches_grid_sample(mode):
    """Both passes, edges included (coordinates reach half a pixel past the border)."""
    torch.manual_seed(5)
    image = torch.randn(2, 5, 9, 12)
    xs, ys = torch.linspace(-0.5, 11.5, 17), torch.linspace(-0.5, 8.5, 13)
    taps = patch_siren.linear_taps if mode == "bilinear" else patch_siren.cubic_taps
    sampler = patch_siren.SeparableSampler(image, xs, ys, taps)
    got = torch.cat([sampler.columns(0, 6), sampler.columns(6, 17)], dim=2)  # (B, H, W, C)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([gx, gy], dim=-1).reshape(1, -1, 2).expand(2, -1, -1)
    expected = patch_siren.sample(image, coords, mode).view(2, 5, 13, 17).permute(0, 2, 3, 1)
    assert torch.allclose(got, expected, atol=1e-5)
