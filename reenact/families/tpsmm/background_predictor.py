"""TPSMM background motion predictor E_bg: a ResNet18 on (source || driving) regresses the affine A_bg(s, d).

Its fc starts at zero weight and the identity bias, so the background transform starts as the identity. The
defaults are the release's; CPU presets may shrink the input (``scale_factor``) and the depth (``blocks_per_stage``).
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.families.tpsmm.keypoint_detector import RESNET18_BLOCKS, resnet
from reenact.layers.geometry import AntiAliasInterpolation2d

IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class BackgroundPredictor(nn.Module):
    """source, driving (B, 3, H, W) -> (B, 3, 3) affine of driving->source coordinates, last row [0, 0, 1]."""

    def __init__(
        self, num_channels: int = 3, scale_factor: float = 1.0,
        blocks_per_stage: tuple[int, ...] | list[int] = RESNET18_BLOCKS,
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.down = AntiAliasInterpolation2d(2 * num_channels, scale_factor) if scale_factor != 1 else None
        self.bg_encoder = resnet(blocks_per_stage)
        self.bg_encoder.conv1 = nn.Conv2d(2 * num_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bg_encoder.fc = nn.Linear(self.bg_encoder.fc.in_features, 6)
        with torch.no_grad():
            self.bg_encoder.fc.weight.zero_()
            self.bg_encoder.fc.bias.copy_(torch.tensor(IDENTITY_AFFINE))

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        b = source.shape[0]
        pair = torch.cat([source, driving], dim=1)  # (B, 2C, H, W)
        pair = self.down(pair) if self.down is not None else pair
        rows = self.bg_encoder(pair).float().view(b, 2, 3)  # (B, 2, 3)
        last = torch.tensor([0.0, 0.0, 1.0], device=rows.device).expand(b, 1, 3)
        return torch.cat([rows, last], dim=1)  # (B, 3, 3)
