"""TPSMM inpainting network G: the source's encoder features, warped by the flow and masked by the occlusion
mask of their size, are decoded into the driving frame (paper Sec. 3.4).

An encoder (``first``, then ``down_blocks``) encodes the source; the deepest map is warped and masked, passes two
ResBlocks and an UpBlock per level, and at every finer level the warped, masked encoder map of that size is
concatenated as a skip. The output is finally blended with the warped source image through the last (full-size)
mask: visible pixels come from the source. The warped encoder maps of the detached source features are returned
too, for the warp loss (:mod:`reenact.families.tpsmm.losses`), whose gradient thus reaches only the flow.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.families.tpsmm.blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d, width
from reenact.layers.geometry import warp


class InpaintingNetwork(nn.Module):
    """source (B, C, H, W), flow (B, h, w, 2), occlusion masks [num_down_blocks + 1 of (B, 1, ...)], coarsest
    first, the last at H x W -> {"prediction" (B, C, H, W), "deformed" (B, C, H, W), "warped_encoder_maps"}."""

    def __init__(
        self, num_channels: int = 3, block_expansion: int = 64, max_features: int = 512, num_down_blocks: int = 3
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.num_down_blocks = num_down_blocks
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        down, up, res = [], [], []
        for i in range(num_down_blocks):
            c_in, c_out = width(block_expansion, max_features, i), width(block_expansion, max_features, i + 1)
            down.append(DownBlock2d(c_in, c_out))
            decoder_in = c_out if i == num_down_blocks - 1 else 2 * c_out  # the deepest level has no skip
            up.append(UpBlock2d(decoder_in, c_in))
            res += [ResBlock2d(decoder_in), ResBlock2d(decoder_in)]
        self.down_blocks = nn.ModuleList(down)
        self.up_blocks = nn.ModuleList(up[::-1])  # deepest level first
        self.resblock = nn.ModuleList(res[::-1])
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encoder maps, finest first: (B, be, H, W), (B, 2be, H/2, W/2), ..."""
        out = self.first(image)
        maps = [out]
        for block in self.down_blocks:
            out = block(out)
            maps.append(out)
        return maps

    @torch.no_grad()
    def encode_occluded(self, image: torch.Tensor, occlusion_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """The warp loss's targets: the encoder maps of ``image`` times the occlusion mask of their size, finest
        first, without gradients (neither into the encoder nor into the masks)."""
        maps = self.encode(image)
        return [feature * mask for feature, mask in zip(maps, occlusion_maps[::-1], strict=True)]

    def forward(
        self, source_image: torch.Tensor, deformation: torch.Tensor, occlusion_maps: list[torch.Tensor]
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        return self.decode(source_image, self.encode(source_image), deformation, occlusion_maps)

    def decode(
        self, source_image: torch.Tensor, encoder_maps: list[torch.Tensor], deformation: torch.Tensor,
        occlusion_maps: list[torch.Tensor],
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """The decoder for :meth:`encode`'s maps of ``source_image``."""
        if len(occlusion_maps) != self.num_down_blocks + 1:
            raise ValueError(f"InpaintingNetwork with {self.num_down_blocks} down blocks needs "
                             f"{self.num_down_blocks + 1} occlusion masks, got {len(occlusion_maps)}")
        masks = [m.to(encoder_maps[0].dtype) for m in occlusion_maps]  # coarsest first
        # warp loss branch: detached source features, so only the flow gets its gradient
        warped_detached = [warp(encoder_maps[-1].detach(), deformation) * masks[0].detach()]
        out = warp(encoder_maps[-1], deformation) * masks[0]  # (B, C_n, H/2**n, W/2**n)
        skip = out
        for i in range(self.num_down_blocks):
            out = self.resblock[2 * i + 1](self.resblock[2 * i](out))
            out = self.up_blocks[i](out)
            encoder_map = encoder_maps[-(i + 2)]
            warped_detached.append(warp(encoder_map.detach(), deformation) * masks[i + 1].detach())
            skip = warp(encoder_map, deformation) * masks[i + 1]
            if i < self.num_down_blocks - 1:
                out = torch.cat([out, skip], dim=1)
        deformed = warp(source_image, deformation)  # (B, C, H, W)
        last = masks[-1]  # (B, 1, H, W)
        out = out * (1 - last) + skip
        out = torch.sigmoid(self.final(out))
        prediction = out * (1 - last) + deformed * last
        return {"prediction": prediction, "deformed": deformed, "warped_encoder_maps": warped_detached}
