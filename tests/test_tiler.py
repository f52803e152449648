"""Tiled inference: identical to untiled, no lost or doubled pixels, OOM retries."""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise

import pytest
import torch

from sirenup.inference import tiler
from sirenup.inference.tiler import (
    MIN_TILE,
    blend_weights,
    output_range,
    split_axis,
    upscale_tensor,
)
from sirenup.models.patch_siren import LiifSiren, LiifSirenConfig

LR_H, LR_W = 50, 70
TOLERANCE = 1 / 255


def make_model(*, loud: bool) -> LiifSiren:
    torch.manual_seed(0)
    model = LiifSiren(config=LiifSirenConfig()).eval()
    if loud:  # a residual far from zero, so a seam or misplaced tile would show
        with torch.no_grad():
            model.decoder.out.weight.uniform_(-0.3, 0.3)
            model.decoder.out.bias.uniform_(-0.05, 0.05)
    return model


@pytest.fixture(scope="module")
def lr_image() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 10, 14, generator=gen),
                                             size=(LR_H, LR_W), mode="bilinear")
    noise = torch.rand(1, 3, LR_H, LR_W, generator=gen)
    return (0.7 * smooth + 0.3 * noise).clamp(0, 1)  # structure and texture


@pytest.fixture(scope="module", params=[False, True], ids=["fresh", "loud"])
def model(request) -> LiifSiren:
    return make_model(loud=request.param)


def target(scale) -> tuple[int, int]:
    if isinstance(scale, tuple):
        return scale
    return round(LR_H * scale), round(LR_W * scale)


@pytest.mark.parametrize("scale", [2, 3, 2.5, 3.7, (131, 173)],
                         ids=["x2", "x3", "x2.5", "x3.7", "173x131"])
def test_tiled_equals_untiled(model, lr_image, scale):
    out_hw = target(scale)
    whole = upscale_tensor(model, lr_image, out_hw, tile=0)
    assert whole.shape == (1, 3, *out_hw)
    assert whole.min() >= 0 and whole.max() <= 1
    for tile in (32, 40):
        for overlap in (0, 8):
            tiled = upscale_tensor(model, lr_image, out_hw, tile=tile, overlap=overlap)
            assert tiled.shape == (1, 3, *out_hw)
            assert tiled.min() >= 0 and tiled.max() <= 1
            diff = (tiled - whole).abs().max().item()
            assert diff <= TOLERANCE, f"tile={tile} overlap={overlap}: max diff {diff:.4f}"


def test_loud_model_residual_is_not_trivial(lr_image):
    # guard for the test above: the "loud" model really differs from bicubic
    fresh = upscale_tensor(make_model(loud=False), lr_image, target(2), tile=0)
    loud = upscale_tensor(make_model(loud=True), lr_image, target(2), tile=0)
    assert (fresh - loud).abs().mean() > 0.05


def test_missing_context_would_be_caught(lr_image, monkeypatch):
    # guard: without the receptive-field context, tiles show seams the comparison detects
    model = make_model(loud=True)
    whole = upscale_tensor(model, lr_image, target(2), tile=0)
    monkeypatch.setattr(LiifSiren, "receptive_radius", property(lambda self: 0))
    tiled = upscale_tensor(model, lr_image, target(2), tile=32, overlap=0)
    assert (tiled - whole).abs().max() > 10 * TOLERANCE


def test_large_tile_encodes_the_image_once(lr_image, monkeypatch):
    model = make_model(loud=False)
    encode, calls = model.encode, []
    monkeypatch.setattr(model, "encode", lambda lr: calls.append(lr.shape) or encode(lr))
    out = upscale_tensor(model, lr_image, target(2), tile=max(LR_H, LR_W))
    assert out.shape == (1, 3, *target(2))
    assert calls == [lr_image.shape]


def test_identity_scale_reproduces_input(lr_image):
    out = upscale_tensor(make_model(loud=False), lr_image, (LR_H, LR_W), tile=32, overlap=8)
    assert (out - lr_image).abs().max() < 0.02


# -- tile geometry -----------------------------------------------------------------------------

LENGTHS = [1, 5, 31, 32, 33, 50, 64, 70, 101]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("tile", [1, 7, 32, 40])
@pytest.mark.parametrize("overlap", [0, 3, 8])
def test_split_axis_covers_every_pixel(length, tile, overlap):
    context = 13
    spans = split_axis(length, tile, overlap, context)
    assert spans[0].start == 0 and spans[-1].stop == length
    for a, b in pairwise(spans):
        assert a.stop == b.start  # cores are contiguous and disjoint
    for s in spans:
        assert 0 < s.stop - s.start <= tile
        assert s.ext0 == max(s.start - overlap, 0) and s.ext1 == min(s.stop + overlap, length)
        assert s.read0 == max(s.ext0 - context, 0) and s.read1 == min(s.ext1 + context, length)
        assert 0 <= s.read0 <= s.ext0 <= s.start < s.stop <= s.ext1 <= s.read1 <= length


def pixel_centre(x: int, lr_len: int, out_len: int) -> Fraction:
    return Fraction(2 * x + 1, 2) * Fraction(lr_len, out_len)


@pytest.mark.parametrize("lr_len", [1, 7, 10, 50, 70])
@pytest.mark.parametrize("scale", [1, 2, 3, 2.5, 3.7, 7 / 3, 4, 12])
@pytest.mark.parametrize("tile", [1, 3, 32])
def test_output_range_partitions_the_output(lr_len, scale, tile):
    out_len = round(lr_len * scale)
    owner = [0] * out_len
    for s in split_axis(lr_len, tile, 0, 0):
        lo, hi = output_range(s.start, s.stop, lr_len, out_len)
        assert 0 <= lo <= hi <= out_len
        for x in range(lo, hi):
            owner[x] += 1
            centre = pixel_centre(x, lr_len, out_len)
            assert s.start - Fraction(1, 10**9) <= centre <= s.stop + Fraction(1, 10**9)
    assert owner == [1] * out_len  # none lost, none doubled
    assert output_range(0, lr_len, lr_len, out_len) == (0, out_len)


def test_output_range_non_uniform_target():
    for lr_len, out_len in [(70, 173), (50, 131), (13, 100), (100, 101)]:
        edges = list(range(0, lr_len, 9)) + [lr_len]
        ranges = [output_range(a, b, lr_len, out_len) for a, b in pairwise(edges)]
        assert ranges[0][0] == 0 and ranges[-1][1] == out_len
        for (_, hi), (lo, _) in pairwise(ranges):
            assert hi == lo


@pytest.mark.parametrize("length,tile,overlap", [(70, 32, 8), (50, 40, 8), (66, 32, 8),
                                                 (101, 32, 16), (200, 33, 5)])
@pytest.mark.parametrize("out_scale", [1, 2.5, 3.7])
def test_blend_weights_sum_to_one(length, tile, overlap, out_scale):
    out_len = round(length * out_scale)
    total = torch.zeros(out_len, dtype=torch.float64)
    for s in split_axis(length, tile, overlap, 13):
        lo, hi = output_range(s.ext0, s.ext1, length, out_len)
        w = blend_weights(s, length, overlap, length, out_len, lo, hi)
        assert w.shape == (hi - lo,)
        assert (w >= 0).all() and (w <= 1 + 1e-6).all()
        total[lo:hi] += w.double()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)


def test_blend_weights_are_one_in_the_core_and_ramp_in_overlaps():
    length, tile, overlap = 96, 32, 8
    spans = split_axis(length, tile, overlap, 0)
    middle = spans[1]  # core [32, 64), ramps across [24, 40) and [56, 72)
    lo, hi = output_range(middle.ext0, middle.ext1, length, length)
    w = blend_weights(middle, length, overlap, length, length, lo, hi)
    centres = torch.arange(lo, hi) + 0.5
    core = (centres >= 40) & (centres <= 56)
    assert torch.allclose(w[core], torch.ones_like(w[core]))
    assert w[0] < 0.05 and w[-1] < 0.05
    left = w[centres < 40]
    assert (left[1:] >= left[:-1]).all()  # ramps up
    # no overlap: every weight is one
    w0 = blend_weights(middle, length, 0, length, length, lo, hi)
    assert torch.equal(w0, torch.ones_like(w0))


# -- out of memory -----------------------------------------------------------------------------

def oom(kind: str) -> RuntimeError:
    if kind == "torch":
        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize("kind", ["torch", "message"])
def test_oom_retries_with_smaller_tiles(monkeypatch, kind):
    calls = []
    lr = torch.rand(1, 3, 96, 128)

    def fake_stream(model, lr, out_hw, sink, *, tile, overlap, progress=None, levels=255):
        calls.append(tile)
        if tile > 40:
            raise oom(kind)
        sink(0, out_hw[0], 0, out_hw[1], torch.full((*out_hw, 3), 0.5))

    monkeypatch.setattr(tiler, "stream_tiles", fake_stream)
    out = upscale_tensor(None, lr, (200, 300), tile=0)
    assert out.shape == (1, 3, 200, 300) and (out == 0.5).all()
    assert calls == [128, 64, 32]  # the whole image first

    calls.clear()
    out = upscale_tensor(None, lr, (200, 300), tile=100, overlap=8)
    assert out.shape == (1, 3, 200, 300)
    assert calls == [100, 50, 32]


def test_oom_at_the_smallest_tile_is_raised(monkeypatch):
    calls = []

    def fake_stream(model, lr, out_hw, sink, *, tile, overlap, progress=None, levels=255):
        calls.append(tile)
        raise oom("torch")

    monkeypatch.setattr(tiler, "stream_tiles", fake_stream)
    with pytest.raises(torch.OutOfMemoryError):
        upscale_tensor(None, torch.rand(1, 3, 96, 128), (200, 300), tile=64)
    assert calls == [64, MIN_TILE]


def test_non_oom_errors_propagate(monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(tiler, "stream_tiles", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        upscale_tensor(None, torch.rand(1, 3, 96, 128), (200, 300), tile=0)
    assert calls == [1]
    calls.clear()
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        upscale_tensor(None, torch.rand(1, 3, 96, 128), (200, 300), tile=64)
    assert calls == [1]


def test_oom_retry_with_a_real_model_gives_the_untiled_result(lr_image, monkeypatch):
    model = make_model(loud=True)
    out_hw = target(2.5)
    reference = upscale_tensor(model, lr_image, out_hw, tile=0)
    encode = model.encode
    sizes = []

    def limited_encode(lr):  # "memory" for at most 60 LR pixels on a side
        sizes.append(tuple(lr.shape[-2:]))
        if max(lr.shape[-2:]) > 60:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return encode(lr)

    monkeypatch.setattr(model, "encode", limited_encode)
    out = upscale_tensor(model, lr_image, out_hw, tile=0, overlap=8)
    assert out.shape == (1, 3, *out_hw)
    assert sizes[0] == (LR_H, LR_W)  # tried whole first
    assert len(sizes) > 1 and all(max(s) <= 60 for s in sizes[1:])
    assert (out - reference).abs().max() <= TOLERANCE


@pytest.mark.parametrize("name", ["sirenup-base", "sirenup-gan", "sirenup-real"])
def test_bundled_models_tiled_equals_untiled(lr_image, name):
    """Tiled = untiled within one 8-bit level for every bundled model (the sharp GAN model's
    high-frequency output would show a seam first)."""
    from sirenup.hub.registry import resolve_model
    from sirenup.models.weights import load_weights

    model, _ = load_weights(resolve_model(name)[1])
    for scale in (2.5, 4):
        out_hw = target(scale)
        whole = upscale_tensor(model, lr_image, out_hw, tile=0)
        tiled = upscale_tensor(model, lr_image, out_hw, tile=32, overlap=8)
        diff = (tiled - whole).abs().max().item()
        assert diff <= TOLERANCE, f"{name} x{scale}: max diff {diff:.4f}"
