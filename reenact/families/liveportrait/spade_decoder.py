"""G — the SPADE decoder of a LivePortrait-style model.

Renders the image from the warped 2D feature of W. The warped feature is both the decoder's input and
its SPADE conditioning map ("segmap"), so every residual block is modulated by the warped appearance at its
own resolution. Layout: ``fc`` 3x3 conv doubling the width, ``num_middle_blocks`` SPADE residual blocks at
the feature resolution (``G_middle_i``), then ``num_down_blocks`` rounds of nearest x2 upsampling and a
SPADE residual block (``up_i``) back to the input image resolution, LeakyReLU(0.2), ``conv_img`` (a 3x3
conv, followed by PixelShuffle when ``upscale`` > 1 for super-resolution) and a sigmoid. With
``blend_warped_source`` (not in the release) the visible pixels come straight from the source image warped by the
model's flow (:class:`~reenact.layers.source_blend.WarpedSourceBlend`), so the decoder paints only what the source
cannot show.
At LivePortrait's released sizes (upscale 2, block_expansion 64, max_features 512, 2 down blocks,
64 output channels, 6 middle blocks, SPADE hidden width 128) a (B, 256, 64, 64) feature becomes a
(B, 3, 512, 512) image and the network has 55,365,388 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.families.liveportrait.blocks import SPADEResnetBlock
from reenact.layers.source_blend import WarpedSourceBlend


class SPADEDecoder(nn.Module):
    """G: feature (B, C_in, h, w) -> image (B, 3, h * 2**num_down_blocks * upscale, ...) in [0, 1],
    with C_in = min(max_features, block_expansion * 2**num_down_blocks) (W's output width)."""

    def __init__(
        self,
        upscale: int = 1,
        max_features: int = 256,
        block_expansion: int = 64,
        out_channels: int = 64,
        num_down_blocks: int = 2,
        num_middle_blocks: int = 6,
        spade_hidden: int = 128,
        blend_warped_source: bool = False,
        blend_init_bias: float = 2.0,
    ) -> None:
        super().__init__()
        if isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1:
            raise ValueError(f"SPADEDecoder: upscale must be an integer >= 1, got {upscale!r}")
        if num_down_blocks < 1:
            raise ValueError(f"SPADEDecoder: num_down_blocks must be >= 1, got {num_down_blocks}")
        if blend_warped_source and upscale != 1:
            raise ValueError("SPADEDecoder: blend_warped_source needs upscale == 1 (the blend mask is predicted at "
                             "the last features' resolution, which is the image's only without super-resolution)")
        self.upscale = upscale
        self.num_middle_blocks = num_middle_blocks
        self.num_down_blocks = num_down_blocks
        self.input_channels = min(max_features, block_expansion * (2**num_down_blocks))
        label_nc = self.input_channels  # the warped feature is the conditioning map

        width = 2 * self.input_channels
        self.up_channels: list[int] = []  # output width of up_i, at h * 2**(i+1)
        self.fc = nn.Conv2d(self.input_channels, width, kernel_size=3, padding=1)
        for i in range(num_middle_blocks):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(width, width, label_nc, spade_hidden))
        for i in range(num_down_blocks):
            last = i == num_down_blocks - 1
            fout = out_channels if last else min(max_features, block_expansion * (2 ** (num_down_blocks - i)))
            self.add_module(f"up_{i}", SPADEResnetBlock(width, fout, label_nc, spade_hidden))
            self.up_channels.append(fout)
            width = fout
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.blend = WarpedSourceBlend(out_channels, blend_init_bias) if blend_warped_source else None
        if upscale == 1:
            self.conv_img: nn.Module = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)
        else:
            # predict upscale^2 sub-pixels per output pixel, then rearrange them: a learned super-resolution
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * upscale * upscale, kernel_size=3, padding=1),
                nn.PixelShuffle(upscale_factor=upscale),
            )

    def forward(
        self,
        feature: torch.Tensor,
        skips: list[torch.Tensor | None] | None = None,
        warped_source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``skips[i]`` (B, up_channels[i], h * 2**(i+1), w * 2**(i+1)) or None is added after ``up_i``. With
        ``blend_warped_source``, ``warped_source`` (B, 3, H, W) (the source image warped by the model's flow) gives
        the pixels the blend mask marks visible."""
        if feature.dim() != 4 or feature.shape[1] != self.input_channels:
            raise ValueError(
                f"SPADEDecoder: expected (B, {self.input_channels}, h, w), got {tuple(feature.shape)}"
            )
        if skips is not None and len(skips) != self.num_down_blocks:
            raise ValueError(
                f"SPADEDecoder: expected {self.num_down_blocks} skips (one per up block), got {len(skips)}"
            )
        seg = feature  # (B, C_in, h, w)
        x = self.fc(feature)  # (B, 2*C_in, h, w)
        for i in range(self.num_middle_blocks):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        for i in range(self.num_down_blocks):
            x = getattr(self, f"up_{i}")(self.up(x), seg)  # (B, C_i, h*2^(i+1), w*2^(i+1))
            if skips is not None and skips[i] is not None:
                x = x + skips[i]
        features = F.leaky_relu(x, 0.2)  # (B, out_channels, H, W)
        image = torch.sigmoid(self.conv_img(features))  # (B, 3, H*upscale, W*upscale)
        if self.blend is None:
            return image
        if warped_source is None:
            raise ValueError("SPADEDecoder: blend_warped_source needs the warped source image")
        return self.blend(features, image, warped_source)[0]
