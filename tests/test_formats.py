"""The output-format table (``sirenup.imaging.formats``): what reads it agrees with it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sirenup.cli.app import app
from sirenup.imaging import formats
from sirenup.imaging.imageio import output_format


@pytest.mark.parametrize("fmt", formats.TABLE, ids=lambda f: f.name)
def test_every_extension_names_its_format(fmt):
    for ext in fmt.extensions:
        assert output_format(f"out.{ext}") == fmt.name
        assert output_format(None, ext) == fmt.name
    assert formats.EXTENSIONS[fmt.name] == fmt.extension


def test_help_and_errors_read_the_table():
    help_text = CliRunner().invoke(app, ["upscale", "--help"], terminal_width=200).output
    assert formats.listed(formats.NAMES) in help_text
    assert f"{formats.lossy_labels()} quality" in help_text
    with pytest.raises(Exception, match=formats.listed(formats.NAMES, last=None)):
        output_format(None, "xyz")
    assert formats.alpha_extensions() == [".png", ".webp", ".tif"]
    assert formats.larger_extensions("WEBP") == [".png", ".tif"]


def test_encoder_options():
    assert formats.encoder_options("JPEG", None, 4) == {"quality": 95, "subsampling": 0}
    assert formats.encoder_options("JPEG", 80, 4) == {"quality": 80}
    assert formats.encoder_options("PNG", 50, 9) == {"compress_level": 9}
    assert formats.encoder_options("BMP", None, 4) == {}
