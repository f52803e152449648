"""The Upscaler: one object per run that holds a loaded model on a device and upscales
RGB arrays with the tiler."""

from __future__ import annotations

import numpy as np
import torch

from sirenup.engine.devices import resolve_device
from sirenup.engine.tiler import upscale_tensor
from sirenup.hub.registry import DEFAULT_MODEL, resolve_model
from sirenup.models.weights import load_weights


class Upscaler:
    """Load ``model`` (registry name or weights path) once; upscale many images."""

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "auto", tile: int = 256,
                 overlap: int = 8):
        self.device = resolve_device(device)
        self.model_name, self.model_path = resolve_model(model)
        self.model, self.metadata = load_weights(self.model_path, device=self.device)
        self.model_name = self.metadata.get("name", self.model_name)
        self.tile, self.overlap = tile, overlap

    @torch.inference_mode()
    def upscale_rgb(self, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(h, w, 3) float32 in [0, 1] -> (H, W, 3) float32 in [0, 1], size = (W, H)."""
        lr = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
        lr = lr.permute(2, 0, 1).unsqueeze(0).to(self.device)  # (1, 3, h, w)
        out = upscale_tensor(self.model, lr, (size[1], size[0]), tile=self.tile,
                             overlap=self.overlap)
        return out[0].permute(1, 2, 0).float().cpu().numpy()  # (H, W, 3)
