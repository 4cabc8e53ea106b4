"""VGG19 up to pool4, L2-normalised: the feature field of Liu et al.'s correlation warping (16x16 at
256x256).

ImageNet weights come from a local file (``weights_path``: a full torchvision vgg19 state dict or a features-only
one); without one the network keeps torchvision's random initialisation, which is only good for tests. With weights
the network is frozen by default, as in the paper. The weights are part of the state dict (a checkpoint then holds
what it was trained with).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.families.correlation.volume import l2_normalise
from reenact.layers.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_vgg19_layers,
    load_vgg19_state_dict,
    vgg19_features_subset,
)

POOL4_END = 28  # torchvision vgg19().features[:28] ends with pool4 (512 channels, stride 16)


class VGGPool4Features(nn.Module):
    """frames (B, 3, H, W) in [0, 1] -> L2-normalised pool4 field (B, 512, grid_size, grid_size)."""

    def __init__(self, weights_path: str | None = None, trainable: bool | None = None, grid_size: int = 16) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.out_channels = 512
        self.features = build_vgg19_layers()[:POOL4_END]
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
            if isinstance(layer, nn.ReLU):
                layer.inplace = False  # the features are re-extracted and differentiated several times
        if weights_path is not None:
            subset = {k: v for k, v in vgg19_features_subset(load_vgg19_state_dict(weights_path)).items()
                      if int(k.split(".")[0]) < POOL4_END}
            self.features.load_state_dict(subset, strict=True)
        self.trainable = weights_path is None if trainable is None else trainable
        self.features.requires_grad_(self.trainable)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        h = (frames - self.mean.to(frames.dtype)) / self.std.to(frames.dtype)
        features = self.features(h)  # (B, 512, H/16, W/16)
        if tuple(features.shape[-2:]) != (self.grid_size, self.grid_size):
            features = F.adaptive_avg_pool2d(features, self.grid_size)
        return l2_normalise(features)
