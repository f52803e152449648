"""Typed errors (``sirenup.errors``): the library names options, the CLI spells them as flags
in one place (``cli.console.error_text``)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sirenup.cli.app import app
from sirenup.cli.console import error_text, flag
from sirenup.errors import SirenupError, UsageError, describe, mention, typed_line
from sirenup.inference.planning import check_tiling


def test_the_library_names_the_option_and_the_cli_its_flag():
    with pytest.raises(UsageError) as caught:
        check_tiling(8, 0)
    error = caught.value
    assert error.option == "tile" and "--" not in str(error)
    assert str(error) == "tile 8: must be 0 (whole image) or at least 32"
    assert error_text(error) == "--tile 8: must be 0 (whole image) or at least 32"


def test_mentions_details_and_renaming():
    inner = UsageError("x: unknown model", option="model")
    error = UsageError(f": use {mention('max_output_pixels')}", option="shard_count",
                       detail=inner)
    assert describe(error, flag) == \
        "--shard-count: use --max-output-pixels (--model x: unknown model)"
    assert str(error) == "shard_count: use max_output_pixels (model x: unknown model)"
    init = UsageError(f"x: no such file, see {mention('model')}", option="model") \
        .renamed("model", "init")
    assert error_text(init) == "--init x: no such file, see --init"
    assert isinstance(init, UsageError) and init.exit_code == 2


def test_text_from_elsewhere_cannot_spell_more_than_a_name():
    error = SirenupError("a\0--evil \x1b[31m\0 b")  # not a plain name: left as it is
    assert error_text(error) == "a\0--evil \x1b[31m\0 b"


def test_typed_line():
    assert typed_line(ValueError("first\nsecond")) == "ValueError: first"
    assert typed_line(KeyError()) == "KeyError"
    assert error_text(ValueError("boom")) == "ValueError: boom (rerun with --debug for details)"


def test_cli_output_is_unchanged():
    result = CliRunner().invoke(app, ["upscale", "x.png", "--tile", "8"])
    assert result.exit_code == 2
    assert "--tile 8: must be 0 (whole image) or at least 32" in result.output
    result = CliRunner().invoke(app, ["batch", "in", "out", "--shard", "5/2"])
    assert result.exit_code == 2
    assert "--shard 5/2: K must be between 1 and N (N >= 1)" in result.output
