"""Keypoint detector of implicit warping: image -> K 2D keypoints p_k and a strength s_k in [0, 1] per keypoint.

An Hourglass on an anti-aliased downsampled image predicts one heatmap per keypoint; a spatial softmax and its
expected coordinate give p_k (as in FOMM). A second head predicts one map per keypoint whose heatmap-weighted
average, through a sigmoid, is s_k: how visible / how present the keypoint is (the paper's keypoint strength, which
scales its Gaussian in the spatial keypoint representation). Trained with the rest of the model; the equivariance
term (reenact.losses.equivariance.KeypointEquivariance) keeps the points consistent under warps.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.layers.blocks import Hourglass
from reenact.layers.geometry import AntiAliasInterpolation2d, heatmap_to_keypoints, spatial_softmax


class KeypointDetector(nn.Module):
    """(B, C, H, W) in [0, 1] -> {"value" (B, K, 2) normalised (x, y), "strength" (B, K), "heatmap" (B, K, h, w)}."""

    def __init__(
        self,
        num_kp: int = 20,
        num_channels: int = 3,
        block_expansion: int = 32,
        max_features: int = 1024,
        num_blocks: int = 5,
        temperature: float = 0.1,
        scale_factor: float = 0.25,
    ) -> None:
        super().__init__()
        if num_kp < 1:
            raise ValueError(f"KeypointDetector num_kp must be >= 1, got {num_kp}")
        if temperature <= 0:
            raise ValueError(f"KeypointDetector temperature must be > 0, got {temperature}")
        self.num_kp = num_kp
        self.num_channels = num_channels
        self.temperature = temperature
        self.predictor = Hourglass(block_expansion, num_channels, num_blocks, max_features)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=7, padding=3)
        self.strength = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=7, padding=3)
        # every keypoint starts fully visible (sigmoid(4) ~ 0.98), so early training sees all of them
        nn.init.zeros_(self.strength.weight)
        nn.init.constant_(self.strength.bias, 4.0)
        self.down = AntiAliasInterpolation2d(num_channels, scale_factor) if scale_factor != 1 else None

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != self.num_channels:
            raise ValueError(f"KeypointDetector expects (B, {self.num_channels}, H, W), got {tuple(image.shape)}")
        x = self.down(image) if self.down is not None else image  # (B, C, h, w)
        features = self.predictor(x)  # (B, out_filters, h, w)
        # softmax and expectations in float32 under autocast, as FOMM's detector
        heatmap = spatial_softmax(self.kp(features).float(), self.temperature)  # (B, K, h, w), sums to 1
        strength_logits = (self.strength(features).float() * heatmap).flatten(2).sum(-1)  # (B, K)
        return {"value": heatmap_to_keypoints(heatmap), "strength": torch.sigmoid(strength_logits),
                "heatmap": heatmap}
