"""F — the appearance feature extractor of a LivePortrait-style model.

Maps the source image to the 3D appearance feature volume f_s that the warping network W deforms:
a 2D encoder (ConvNormActivation2d + ``num_down_blocks`` DownBlock2d + 1x1 projection), a reshape of the channels
into ``reshape_channel`` x ``reshape_depth``, then ``num_resblocks`` 3D residual blocks.
At LivePortrait's released sizes a (B, 3, 256, 256) image gives f_s of shape (B, 32, 16, 64, 64) and the
network has 836,224 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.families.liveportrait.blocks import ConvNormActivation2d, ResBlock3d
from reenact.layers.blocks import DownBlock2d


class AppearanceFeatureExtractor(nn.Module):
    """F: image (B, image_channel, H, W) in [0, 1] -> feature volume
    (B, reshape_channel, reshape_depth, H / 2**num_down_blocks, W / 2**num_down_blocks).

    ``max_features`` caps the width of the 2D down blocks; the 1x1 ``second`` projection always outputs
    ``reshape_channel * reshape_depth`` channels, which is what the reshape needs (512 at released sizes,
    equal to LivePortrait's max_features).
    """

    def __init__(
        self,
        image_channel: int = 3,
        block_expansion: int = 64,
        num_down_blocks: int = 2,
        max_features: int = 512,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
    ) -> None:
        super().__init__()
        self.image_channel = image_channel
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.num_down_blocks = num_down_blocks

        self.first = ConvNormActivation2d(image_channel, block_expansion, kernel_size=3, padding=1)
        down_blocks = []
        out_features = block_expansion
        for i in range(num_down_blocks):
            in_features = min(max_features, block_expansion * (2**i))
            out_features = min(max_features, block_expansion * (2 ** (i + 1)))
            down_blocks.append(DownBlock2d(in_features, out_features, kernel_size=3, padding=1))
        self.down_blocks = nn.ModuleList(down_blocks)
        self.second = nn.Conv2d(out_features, reshape_channel * reshape_depth, kernel_size=1, stride=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel, kernel_size=3, padding=1))

    def level_channels(self) -> list[int]:
        """Widths of the 2D encoder features finer than the volume: level n is (B, C_n, H/2**n, W/2**n)."""
        return [self.first.conv.out_channels] + [b.conv.out_channels for b in self.down_blocks[:-1]]

    def encode(self, source_image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The volume f_s and the 2D encoder features at every level finer than it (level 0 = full size),
        which a model with warped skips moves to the driving pose."""
        if source_image.dim() != 4 or source_image.shape[1] != self.image_channel:
            raise ValueError(
                f"AppearanceFeatureExtractor: expected (B, {self.image_channel}, H, W), got "
                f"{tuple(source_image.shape)}"
            )
        out = self.first(source_image)  # (B, be, H, W)
        levels = []
        for block in self.down_blocks:
            levels.append(out)
            out = block(out)  # (B, C, H/2^i, W/2^i)
        out = self.second(out)  # (B, C*D, h, w)
        bs, _, h, w = out.shape
        volume = out.view(bs, self.reshape_channel, self.reshape_depth, h, w)  # (B, C, D, h, w)
        return self.resblocks_3d(volume), levels

    def forward(self, source_image: torch.Tensor) -> torch.Tensor:
        return self.encode(source_image)[0]
