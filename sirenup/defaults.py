"""Defaults shared by the CLI and the engine. Imports nothing heavy: CLI modules read these at
import time, and ``sirenup --help`` must not import torch."""

# LR pixels per tile side. Each tile re-reads ~13 px of context per side and re-decodes the
# overlap, so bigger tiles waste less work (at 512: ~17% extra encoder work, ~6% extra decode);
# memory stays a few hundred MB, and the tiler halves the tile on out-of-memory anyway.
DEFAULT_TILE = 512
# LR pixels over which neighbouring tiles are cross-faded.
DEFAULT_OVERLAP = 8
