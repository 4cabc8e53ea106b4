"""Decoder of implicit warping: attended features -> the rendered frame.

Residual blocks at the query resolution, then UpBlock2d's to the frame size. After each up block the
attention-guided skip of that resolution is added (the value encoder's source features, moved by the attention's
expected coordinates and weighted by its mass on each source; built in model.py), so detail finer than the
attention's resolution reaches the output. The last conv predicts a correction in logit space to the attention-warped
source image D (also full resolution):

    prediction = sigmoid(logit(D) + correction)

The correction starts at zero, so an untrained model shows the warped source and training refines it (inpainting
what no source shows, colour, skew).

With ``blend_warped_source=True`` the last conv paints the frame on its own instead, and a
:class:`~reenact.layers.source_blend.WarpedSourceBlend` mask V chooses per pixel between it and D:

    prediction = V * D + (1 - V) * sigmoid(final(features))

A logit-space correction learns slowly where D is near 0 or 1 (its gradient is scaled by sigmoid'), and it must
cancel D wherever no source shows the driving frame's content; the painted branch has neither limit.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.layers.blocks import ResBlock2d, UpBlock2d
from reenact.layers.source_blend import WarpedSourceBlend

LOGIT_EPS = 1e-3


class ImageDecoder(nn.Module):
    """features (B, in_features, h, w), skips [level num_up_blocks - 1, ..., level 0] (B, w_l, h 2**(n-l), ...),
    warped (B, 3, H, W) -> prediction (B, 3, H, W) in [0, 1]; H = h * 2**num_up_blocks, w_l = min(max, be * 2**l)."""

    def __init__(
        self,
        in_features: int = 256,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 256,
        num_up_blocks: int = 2,
        num_bottleneck_blocks: int = 4,
        blend_warped_source: bool = False,
        blend_init_bias: float = 2.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_up_blocks = num_up_blocks
        self.widths = [min(max_features, block_expansion * 2**level) for level in range(num_up_blocks + 1)]
        self.bottleneck = nn.Sequential(*[ResBlock2d(in_features) for _ in range(num_bottleneck_blocks)])
        ins = [in_features] + [self.widths[level] for level in range(num_up_blocks - 1, 0, -1)]
        outs = [self.widths[level] for level in range(num_up_blocks - 1, -1, -1)]
        self.up_blocks = nn.ModuleList([UpBlock2d(i, o) for i, o in zip(ins, outs, strict=True)])
        self.final = nn.Conv2d(self.widths[0], num_channels, kernel_size=7, padding=3)
        self.blend = WarpedSourceBlend(self.widths[0], blend_init_bias) if blend_warped_source else None
        if self.blend is None:  # a zero correction: the untrained decoder returns D
            nn.init.zeros_(self.final.weight)
            nn.init.zeros_(self.final.bias)

    def forward(self, features: torch.Tensor, skips: list[torch.Tensor], warped: torch.Tensor) -> torch.Tensor:
        if len(skips) != self.num_up_blocks:
            raise ValueError(f"ImageDecoder takes {self.num_up_blocks} skips, got {len(skips)}")
        out = self.bottleneck(features)  # (B, in_features, h, w)
        for block, skip in zip(self.up_blocks, skips, strict=True):
            out = block(out) + skip.to(out.dtype)  # (B, w_l, 2h, 2w) ...
        if self.blend is not None:
            painted = torch.sigmoid(self.final(out))  # (B, 3, H, W)
            prediction, _ = self.blend(out, painted, warped)
            return prediction.float()
        correction = self.final(out).float()  # (B, 3, H, W)
        base = torch.logit(warped.float().clamp(LOGIT_EPS, 1 - LOGIT_EPS))
        return torch.sigmoid(base + correction)
