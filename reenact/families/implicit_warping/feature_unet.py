"""The U-Nets that make the attention's queries and keys of implicit warping.

Q = U-Net(R_driving): features of the driving keypoint representation; K = U-Net(concat(R_source, source image)):
features of the source keypoint representation with the source image. Both are an Hourglass (reenact.layers.blocks)
followed by a 1x1 projection to the attention width d. The projection starts at zero, so at initialisation the
attention scores come from the positional encodings alone: every query attends around its own position (an
identity warp), and the keypoint features take over as they train.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.layers.blocks import Hourglass


class FeatureUNet(nn.Module):
    """(B, in_features, h, w) -> (B, out_features, h, w); h and w divisible by 2**num_blocks."""

    def __init__(
        self,
        in_features: int,
        out_features: int = 64,
        block_expansion: int = 64,
        num_blocks: int = 4,
        max_features: int = 512,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.hourglass = Hourglass(block_expansion, in_features, num_blocks, max_features)
        self.projection = nn.Conv2d(self.hourglass.out_filters, out_features, kernel_size=1)
        nn.init.zeros_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_features:
            raise ValueError(f"FeatureUNet expects {self.in_features} channels, got {tuple(x.shape)}")
        return self.projection(self.hourglass(x))  # (B, out_features, h, w)
