"""The PatchGAN discriminator scores patches of an image."""

import torch

from sirenup.models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig


def test_discriminator_scores_patches():
    logits = PatchDiscriminator()(torch.rand(2, 3, 64, 64))
    assert logits.shape[:2] == (2, 1)
    assert logits.shape[-1] > 1 and logits.shape[-2] > 1  # a map of patch verdicts


def test_discriminator_config_round_trip():
    config = PatchDiscriminatorConfig(channels=16, n_layers=2, spectral_norm=False)
    model = PatchDiscriminator(config=config)
    assert model.config.to_dict() == {"channels": 16, "n_layers": 2, "spectral_norm": False}
    assert model(torch.rand(1, 3, 32, 32)).shape[:2] == (1, 1)
