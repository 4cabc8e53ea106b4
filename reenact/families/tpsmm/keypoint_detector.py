"""TPSMM keypoint detector E_kp: a ResNet18 regresses K x N = 50 keypoints (10 TPS groups of 5) directly.

No heatmaps and no Jacobians: the ResNet's fc layer outputs 2*K*N numbers, squashed by a sigmoid into [-1, 1].
Consecutive runs of ``points_per_tps`` points form one spline's control set. The defaults are the release's
(torchvision's ``resnet18(weights=None)`` on the full image); CPU presets may shrink the input first
(``scale_factor``, anti-aliased) and use fewer residual blocks per stage (``blocks_per_stage``).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock, ResNet

from reenact.layers.geometry import AntiAliasInterpolation2d

RESNET18_BLOCKS = (2, 2, 2, 2)


def resnet(blocks_per_stage: tuple[int, ...] | list[int]) -> ResNet:
    """torchvision's ResNet18 (untrained) for (2, 2, 2, 2), else the same stages with other block counts."""
    blocks = [int(b) for b in blocks_per_stage]
    if len(blocks) != 4 or min(blocks) < 1:
        raise ValueError(f"blocks_per_stage must be 4 positive counts, got {list(blocks_per_stage)}")
    return resnet18(weights=None) if tuple(blocks) == RESNET18_BLOCKS else ResNet(BasicBlock, blocks)


class TPSKeypointDetector(nn.Module):
    """image (B, 3, H, W) in [0, 1] -> {"value": (B, num_tps * points_per_tps, 2)} in normalised (x, y)."""

    def __init__(
        self, num_tps: int = 10, points_per_tps: int = 5, scale_factor: float = 1.0,
        blocks_per_stage: tuple[int, ...] | list[int] = RESNET18_BLOCKS,
    ) -> None:
        super().__init__()
        if num_tps < 1 or points_per_tps < 3:
            raise ValueError(f"need num_tps >= 1 and points_per_tps >= 3, got {num_tps}, {points_per_tps}")
        self.num_tps = num_tps
        self.points_per_tps = points_per_tps
        self.num_kp = num_tps * points_per_tps
        self.down = AntiAliasInterpolation2d(3, scale_factor) if scale_factor != 1 else None
        self.fg_encoder = resnet(blocks_per_stage)
        self.fg_encoder.fc = nn.Linear(self.fg_encoder.fc.in_features, 2 * self.num_kp)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"TPSKeypointDetector expects images (B, 3, H, W), got {tuple(image.shape)}")
        x = self.down(image) if self.down is not None else image
        logits = self.fg_encoder(x).float()  # (B, 2*K*N); float32 under autocast
        points = torch.sigmoid(logits) * 2 - 1
        return {"value": points.view(image.shape[0], self.num_kp, 2)}  # (B, K*N, 2)
