"""Output sizes from --scale/--width/--height."""

from __future__ import annotations

import pytest

from sirenup.errors import UsageError
from sirenup.inference.sizing import DEFAULT_SCALE, scale_label, target_size

W, H = 100, 60


@pytest.mark.parametrize("scale,expected", [
    (1.0, (100, 60)),
    (1.5, (150, 90)),
    (2.0, (200, 120)),
    (3.7, (370, 222)),
    (12.0, (1200, 720)),
])
def test_target_size_from_scale(scale, expected):
    assert target_size(W, H, scale=scale) == expected


def test_target_size_rounds_odd_sizes():
    assert target_size(33, 17, scale=2.5) == (round(82.5), round(42.5))
    assert target_size(333, 77, scale=3.7) == (1232, 285)


def test_target_size_from_width_or_height():
    assert target_size(W, H, out_width=250) == (250, 150)  # keeps the aspect ratio
    assert target_size(W, H, out_height=150) == (250, 150)
    assert target_size(W, H, out_width=333) == (333, 200)
    assert target_size(70, 50, out_width=173) == (173, round(50 * 173 / 70))


def test_target_size_both_sides_exact():
    assert target_size(70, 50, out_width=173, out_height=131) == (173, 131)
    assert target_size(W, H, out_width=100, out_height=600) == (100, 600)


def test_target_size_default_scale():
    assert DEFAULT_SCALE == 4.0
    assert target_size(W, H) == (400, 240)


@pytest.mark.parametrize("kwargs", [
    dict(out_width=50),
    dict(out_height=59),
    dict(out_width=99, out_height=600),
    dict(out_width=400, out_height=59),
])
def test_smaller_than_input_is_an_error(kwargs):
    with pytest.raises(UsageError, match="smaller"):
        target_size(W, H, **kwargs)


@pytest.mark.parametrize("scale", [0.5, 0.999, 0.0, -2.0, float("nan")])
def test_scale_below_one_is_an_error(scale):
    with pytest.raises(UsageError):
        target_size(W, H, scale=scale)


@pytest.mark.parametrize("kwargs", [dict(out_width=300), dict(out_height=300),
                                    dict(out_width=300, out_height=300)])
def test_scale_with_width_or_height_is_an_error(kwargs):
    with pytest.raises(UsageError):
        target_size(W, H, scale=2.0, **kwargs)


def test_scale_label():
    assert scale_label(W, H, (400, 240)) == "4"
    assert scale_label(W, H, (370, 222)) == "3.7"
    assert scale_label(W, H, (150, 90)) == "1.5"
    assert scale_label(W, H, (100, 60)) == "1"
    assert scale_label(333, 77, target_size(333, 77, scale=3.7)) == "3.7"
    assert scale_label(W, H, (250, 100)) == "250x100"
    assert scale_label(70, 50, (173, 131)) == "173x131"
