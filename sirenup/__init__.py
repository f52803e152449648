"""sirenup: upscale images to any resolution with a learned continuous model."""

__version__ = "0.1.0"
