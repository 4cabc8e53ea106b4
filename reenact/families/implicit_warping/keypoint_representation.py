"""Spatial keypoint representation of implicit warping: keypoints -> one feature map whose width does not depend on K.

Each keypoint p_k is drawn as a 2D Gaussian G_k(x) = exp(-|x - p_k|^2 / (2 sigma^2)), scaled by its strength s_k and
coloured by a learned per-keypoint embedding e_k (C channels); the K maps are summed:

    R(x) = sum_k s_k G_k(x) e_k           (B, C, h, w)

so the U-Nets after it (Q and K of the cross-modal attention) see C channels whatever the number of keypoints.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.layers.geometry import kp2gaussian


class SpatialKeypointRepresentation(nn.Module):
    """({"value" (B, K, 2), "strength" (B, K)}, (h, w)) -> R (B, embedding_dim, h, w)."""

    def __init__(self, num_kp: int = 20, embedding_dim: int = 32, kp_variance: float = 0.01) -> None:
        super().__init__()
        if kp_variance <= 0:
            raise ValueError(f"SpatialKeypointRepresentation kp_variance must be > 0, got {kp_variance}")
        self.num_kp = num_kp
        self.embedding_dim = embedding_dim
        self.kp_variance = kp_variance
        self.embedding = nn.Parameter(torch.randn(num_kp, embedding_dim))  # e_k, (K, C)

    def forward(self, motion: dict[str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        points, strength = motion["value"], motion["strength"]  # (B, K, 2), (B, K)
        if points.shape[1] != self.num_kp:
            raise ValueError(f"SpatialKeypointRepresentation built for {self.num_kp} keypoints, got "
                             f"{tuple(points.shape)}")
        gaussians = kp2gaussian(points.float(), size, self.kp_variance)  # (B, K, h, w)
        weighted = gaussians * strength.float()[..., None, None]  # s_k G_k
        return torch.einsum("bkhw,kc->bchw", weighted, self.embedding.float())  # (B, C, h, w)
