"""models/coords.py: the pixel-centre rule, cells, offsets and scales, and that the tiler, the
model and training use it."""

import math

import pytest
import torch

from sirenup.models.coords import (
    cell_of,
    cell_size,
    centre_coords,
    edge_coords,
    first_output_at,
    offset_from_centre,
    output_coords,
    phase_in_pixel,
    pixel_centres,
    scale_of,
    to_grid,
)


def test_pixel_centres_known_values():
    # x2: output pixels 0..3 over 2 LR pixels -> a quarter of an LR pixel either side
    assert pixel_centres(0, 4, 2, 4).tolist() == [-0.25, 0.25, 0.75, 1.25]
    assert pixel_centres(0, 5, 5, 5).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # x1: the pixels
    assert pixel_centres(0, 2, 4, 2).tolist() == [0.5, 2.5]  # /2: between two LR pixels
    assert pixel_centres(2, 4, 2, 4, origin=1.0).tolist() == [-0.25, 0.25]  # tile-relative
    x3 = pixel_centres(0, 6, 2, 6)
    assert x3.dtype == torch.float64
    assert x3.tolist() == [(x + 0.5) * (2 / 6) - 0.5 for x in range(6)]
    assert x3[1] == 0.0  # the middle output pixel of three sits on the LR centre


def test_edge_and_centre_coords_and_their_inverse():
    index = torch.arange(0, 7, dtype=torch.float64)
    assert torch.equal(edge_coords(index, 3, 7) - 0.5, centre_coords(index, 3, 7))
    assert centre_coords(torch.arange(4), 2, 4).dtype == torch.float32  # integer indices
    for in_len, out_len in [(3, 7), (10, 37), (5, 20), (7, 5)]:
        edges = edge_coords(torch.arange(out_len, dtype=torch.float64), in_len, out_len)
        for lr_edge in range(in_len + 1):
            first = first_output_at(lr_edge, in_len, out_len)
            assert all(edges[first:] >= lr_edge - 1e-12) and all(edges[:first] < lr_edge)


def test_cells_scales_offsets_and_phases():
    assert scale_of((4, 5), (8, 20)) == (2.0, 4.0)
    assert cell_of((4, 5), (8, 20)) == (0.5, 0.25)
    assert cell_size(8, 20, 4, 5).tolist() == [[0.5, 0.25]]
    coords = torch.tensor([0.0, 0.25, -0.25, 1.4, 2.6, 0.49])
    torch.testing.assert_close(offset_from_centre(coords),
                               torch.tensor([0.0, 0.25, -0.25, 0.4, -0.4, 0.49]))
    torch.testing.assert_close(phase_in_pixel(coords),
                               torch.tensor([0.5, 0.75, 0.25, 0.9, 0.1, 0.99]))


def test_to_grid_maps_outer_edges_to_plus_minus_one():
    coords = torch.tensor([[[-0.5, -0.5], [3.5, 1.5], [1.5, 0.5]]])  # (x, y), image 2 x 4
    grid = to_grid(coords, 2, 4)
    assert grid.shape == (1, 1, 3, 2)
    assert grid[0, 0].tolist() == [[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]


def test_tiler_axes_are_the_model_grid_bit_for_bit():
    from sirenup.inference.tiler import blend_weights, output_axis, output_range, split_axis

    out_h, out_w, in_h, in_w = 37, 26, 10, 7
    grid = output_coords(out_h, out_w, in_h, in_w, y0=3, y1=30, x0=2, x1=20,
                         origin=(1.0, 2.0)).view(27, 18, 2)
    assert torch.equal(output_axis(out_w, in_w, 2, 20, 1), grid[0, :, 0])
    assert torch.equal(output_axis(out_h, in_h, 3, 30, 2), grid[:, 0, 1])
    # a tile's output range is the output pixels whose centres lie inside its LR edges
    for span in split_axis(in_h, 4, 1, 0):
        lo, hi = output_range(span.ext0, span.ext1, in_h, out_h)
        centres = edge_coords(torch.arange(out_h, dtype=torch.float64), in_h, out_h)
        inside = ((centres >= span.ext0) & (centres < span.ext1)).nonzero().flatten()
        assert (lo, hi) == (int(inside[0]), int(inside[-1]) + 1)
        assert blend_weights(span, in_h, 0, in_h, out_h, lo, hi).shape == (hi - lo,)


def test_model_offset_encoding_is_the_offset_from_centre():
    from sirenup.models.patch_siren import offset_encoding, offset_encoding_1d

    coords = output_coords(9, 7, 4, 3)  # (1, N, 2)
    phase = 2 * math.pi * offset_from_centre(coords)
    assert torch.equal(offset_encoding(coords),
                       torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1))
    xs = coords[0, :7, 0]
    assert torch.equal(offset_encoding_1d(xs), offset_encoding(coords[:, :7])[0, :, 0::2].T)


def test_gan_phase_bins_use_the_phase_in_pixel():
    from sirenup.training.gan import grid_phase_bins

    coords = output_coords(8, 8, 2, 2)  # x4: four phases per LR pixel along each axis
    bins = grid_phase_bins(coords, 4).view(8, 8)
    expected = (phase_in_pixel(coords) * 4).long().clamp(0, 3).view(8, 8, 2)
    assert torch.equal(bins, expected[..., 0] * 4 + expected[..., 1])
    assert bins[0].tolist() == [0, 4, 8, 12] * 2  # x phase across a row, y phase 0


@pytest.mark.parametrize("window", [0, 6])
def test_training_queries_follow_the_rule(window):
    from sirenup.training.data import CropSampler

    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    sampler = CropSampler([image], patch=8, batch=2, queries=20, scale_min=2.5, scale_max=2.5,
                          window=window)
    batch = sampler.sample(torch.Generator().manual_seed(0))
    hr_size = round(8 * 2.5)
    assert torch.equal(batch.cell, cell_size(hr_size, hr_size, 8, 8).expand(2, 2))
    # every query is the centre of an HR pixel of the crop, as inference places it
    index = torch.round(edge_coords(batch.coords.double(), hr_size, 8) - 0.5).long()
    assert torch.equal(batch.coords, centre_coords(index, 8, hr_size))
    full = output_coords(hr_size, hr_size, 8, 8).view(hr_size, hr_size, 2)
    torch.testing.assert_close(batch.coords, full[index[..., 1], index[..., 0]],
                               rtol=0, atol=1e-6)  # training rounds in float32, inference in 64
