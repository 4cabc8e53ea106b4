"""Value encoder of implicit warping: source image -> V, the source image features the attention moves.

A conv stem at full resolution and DownBlock2d's down to the key/value resolution. Every level is returned: the
last is V (the attention's values, at the spatially reduced key resolution); the finer ones feed the decoder
through attention-guided skips (see reenact.families.implicit_warping.model).
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.layers.blocks import DownBlock2d, SameBlock2d


class ValueEncoder(nn.Module):
    """(B, C, H, W) -> [level 0 (B, w_0, H, W), ..., level n (B, w_n, H/2**n, W/2**n)]; w_l = min(max, be * 2**l)."""

    def __init__(
        self, num_channels: int = 3, block_expansion: int = 64, num_down_blocks: int = 3, max_features: int = 256
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.num_down_blocks = num_down_blocks
        self.widths = [min(max_features, block_expansion * 2**level) for level in range(num_down_blocks + 1)]
        self.first = SameBlock2d(num_channels, self.widths[0], kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(
            [DownBlock2d(self.widths[i], self.widths[i + 1]) for i in range(num_down_blocks)])

    @property
    def out_features(self) -> int:
        return self.widths[-1]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        levels = [self.first(image)]
        for block in self.down_blocks:
            levels.append(block(levels[-1]))
        return levels
