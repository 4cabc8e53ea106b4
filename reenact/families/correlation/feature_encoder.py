"""A trainable feature-field encoder for correlation warping (the offline default; VGG19 pool4 in
:mod:`vgg_pool4` needs ImageNet weights to be worth its cost).

Convolutions pad by replicating the border, never with zeros: a zero border tells every position where it is, and
a feature that encodes position rather than content would let the search-window loss be met without any warp. Each
channel is standardised over the field (instance normalisation) before the per-position L2 normalisation: without
it a component common to every position dominates, all positions look alike and M is flat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.families.correlation.volume import l2_normalise


class FeatureEncoder(nn.Module):
    """frames (B, 3, H, W) in [0, 1] -> L2-normalised feature field (B, out_channels, grid_size, grid_size).

    ``num_down_blocks`` stride-2 stages (conv, LeakyReLU, conv, LeakyReLU); the field is resized to ``grid_size``
    (area averaging) when the stages do not land on it exactly, so one network serves every frame size.
    """

    def __init__(
        self,
        num_channels: int = 3,
        block_expansion: int = 32,
        max_features: int = 256,
        num_down_blocks: int = 4,
        out_channels: int = 128,
        grid_size: int = 16,
    ) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.out_channels = out_channels
        layers: list[nn.Module] = []
        in_features = num_channels
        for level in range(num_down_blocks):
            width = min(max_features, block_expansion * 2**level)
            layers += [
                nn.Conv2d(in_features, width, 3, stride=2, padding=1, padding_mode="replicate"),
                nn.LeakyReLU(0.2),
                nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate"),
                nn.LeakyReLU(0.2),
            ]
            in_features = width
        self.body = nn.Sequential(*layers)
        self.project = nn.Conv2d(in_features, out_channels, kernel_size=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        features = self.project(self.body(frames))  # (B, out, H / 2**n, W / 2**n)
        if tuple(features.shape[-2:]) != (self.grid_size, self.grid_size):
            features = F.adaptive_avg_pool2d(features, self.grid_size)
        return l2_normalise(F.instance_norm(features))
