"""Defaults shared by the CLI and the engine. Imports nothing heavy: CLI modules read these at
import time, and ``sirenup --help`` must not import torch."""

# LR pixels per tile side. Each tile re-reads ~13 px of context per side and re-decodes the
# overlap, so bigger tiles waste less work (at 512: ~17% extra encoder work, ~6% extra decode);
# memory stays a few hundred MB, and the tiler halves the tile on out-of-memory anyway.
DEFAULT_TILE = 512
# LR pixels up to which the CPU decodes an image as one tile instead (768 x 768): no edge where
# two tiles would each re-read context, decode the overlap and their output stages' halo (x4 with
# the notch: a 768 x 768 image in 512 tiles decodes 9 % more output pixels, encodes 4 % more).
# Its decoder input map is 151 MB instead of 67 MB; larger images keep DEFAULT_TILE.
CPU_ONE_TILE_PIXELS = 768 * 768
# LR pixels over which neighbouring tiles are cross-faded.
DEFAULT_OVERLAP = 8
# zlib level of PNG outputs. Pillow's default, 6, takes 2.7x the time of 4 on upscaled photos
# (4-9 MP; 3.62 s vs 1.30 s at 9.4 MP) for files only 2.5-6% smaller; 1 is faster still but
# its files are ~18% bigger.
DEFAULT_PNG_COMPRESSION = 4
# --quality of JPEG and WebP outputs when not given.
DEFAULT_QUALITY = 95
# Peak Adam learning rate of `sirenup train`, and of adversarial fine-tuning (--gan).
DEFAULT_LR = 5e-4
DEFAULT_GAN_LR = 1e-4
# Scale factor when neither --scale nor --width/--height is given.
DEFAULT_SCALE = 4.0
# The model --model defaults to (a registry name).
DEFAULT_MODEL = "sirenup-base"
# --max-input-pixels: Pillow's own decompression-bomb limit (1024*1024*1024 // 4 // 3).
DEFAULT_MAX_INPUT_PIXELS = 89_478_485
# --max-output-pixels: 400 MP is ~4.8 GB of float RGB canvas.
DEFAULT_MAX_OUTPUT_PIXELS = 400_000_000
# Smallest --tile (LR pixels) other than 0: the tiler halves a tile on out-of-memory down to it.
MIN_TILE = 32
