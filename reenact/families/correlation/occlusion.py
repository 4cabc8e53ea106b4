"""The correlation family's occlusion estimate, read from the correlation volume after the final warp: where no
source position matches a driving position well, the decoder must fill in rather than copy."""

from __future__ import annotations

import torch
from torch import nn

from reenact.families.correlation.warp_network import standardise_columns


class OcclusionHead(nn.Module):
    """M (B, g, g, g, g) -> occlusion map (B, 1, g, g) in [0, 1] (1: visible in the source)."""

    def __init__(self, grid_size: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(grid_size * grid_size, hidden, 3, padding=1, padding_mode="replicate"),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, 1, 3, padding=1, padding_mode="replicate"),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.constant_(self.net[-1].bias, 2.0)  # start mostly visible (sigmoid(2) = 0.88)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        columns = standardise_columns(volume.float()).to(self.net[0].weight.dtype)  # (B, g², g, g)
        return torch.sigmoid(self.net(columns))
