"""Visible pixels straight from the warped source: prediction = V * warp(source) + (1 - V) * decoder.

A decoder that redraws every pixel loses detail even where the source shows the driving frame's content: a small
64-px FOMM generator loses 0.03 L1 on an unseen face with nothing moving, more than copying the source costs
(experiments/2026-12-01_schedule_budget.md). The blend mask V in [0, 1] is predicted from the decoder's last features
by one convolution; its bias starts positive, so an untrained model with an identity flow starts near the copy-source
error, and the decoder learns to paint only what the source cannot show (V near 0: occluded or newly revealed).
"""

from __future__ import annotations

import torch
from torch import nn


class WarpedSourceBlend(nn.Module):
    """features (B, C, H, W), decoded (B, 3, H, W), warped_source (B, 3, H, W) -> prediction, mask (B, 1, H, W)."""

    def __init__(self, in_features: int, init_bias: float = 2.0, kernel_size: int = 7) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_features, 1, kernel_size=kernel_size, padding=kernel_size // 2)
        # sigmoid(2) = 0.88: mostly the warped source at the start
        nn.init.constant_(self.head.bias, init_bias)

    def forward(
        self, features: torch.Tensor, decoded: torch.Tensor, warped_source: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.sigmoid(self.head(features))  # (B, 1, H, W): 1 = the pixel is taken from the warped source
        prediction = mask * warped_source.to(decoded.dtype) + (1 - mask) * decoded  # (B, 3, H, W)
        return prediction, mask
