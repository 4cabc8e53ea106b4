"""The correlation family's renderer: the source's encoder features, warped by the correlation field and masked by
the occlusion estimate, decoded into the prediction.

It sees the source image, the warp field and the occlusion map, nothing of the driving frame: the prediction
depends on the driving frame only through the correlation volume M from which the field and the occlusion come,
so self-reenactment training cannot copy the driving frame's appearance. Encoder features at every finer level are
warped too and added to the decoder's output at that level (skip connections that move with the source, as FOMM's
``warped_skips``). ``blend_warped_source=True`` takes visible pixels straight from the warped source image
(:class:`~reenact.layers.source_blend.WarpedSourceBlend`).
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.layers.blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d
from reenact.layers.geometry import warp, warp_and_mask
from reenact.layers.source_blend import WarpedSourceBlend


class WarpingGenerator(nn.Module):
    """source (B, C, H, W), deformation (B, h, w, 2), occlusion (B, 1, h', w') or None -> (B, C, H, W) in [0, 1]."""

    def __init__(
        self,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        num_bottleneck_blocks: int = 6,
        warped_skips: bool = True,
        blend_warped_source: bool = False,
        blend_init_bias: float = 2.0,
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.warped_skips = warped_skips

        def width(level: int) -> int:
            return min(max_features, block_expansion * 2**level)

        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(
            [DownBlock2d(width(i), width(i + 1), kernel_size=3, padding=1) for i in range(num_down_blocks)])
        self.bottleneck = nn.Sequential(
            *[ResBlock2d(width(num_down_blocks), kernel_size=3, padding=1) for _ in range(num_bottleneck_blocks)])
        self.up_blocks = nn.ModuleList(
            [UpBlock2d(width(num_down_blocks - i), width(num_down_blocks - i - 1), kernel_size=3, padding=1)
             for i in range(num_down_blocks)])
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)
        self.blend = WarpedSourceBlend(block_expansion, blend_init_bias) if blend_warped_source else None

    def forward(
        self, source: torch.Tensor, deformation: torch.Tensor, occlusion: torch.Tensor | None,
        warped_source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``warped_source`` (B, C, H, W), the source image already warped by ``deformation``, saves the blend a
        second warp when the caller has it."""
        out = self.first(source)  # (B, be, H, W)
        encoder_features = [out]
        for block in self.down_blocks:
            out = block(out)
            encoder_features.append(out)
        out = self.bottleneck(warp_and_mask(out, deformation, occlusion))
        for level, block in zip(range(len(self.up_blocks) - 1, -1, -1), self.up_blocks, strict=True):
            out = block(out)
            if self.warped_skips:
                out = out + warp_and_mask(encoder_features[level], deformation, occlusion)
        prediction = torch.sigmoid(self.final(out))  # (B, C, H, W)
        if self.blend is not None:
            if warped_source is None:
                warped_source = warp(source, deformation)
            prediction, _ = self.blend(out, prediction, warped_source)
        return prediction
