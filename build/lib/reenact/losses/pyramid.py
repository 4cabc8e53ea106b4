"""Image pyramid for the multi-scale perceptual loss (FOMM's ``ImagePyramide``).

Each level is the input blurred and subsampled by :class:`~reenact.layers.geometry.AntiAliasInterpolation2d`,
the same anti-aliased downsampler the keypoint detector uses, so high frequencies do not alias into the
coarse levels. The module has no parameters and no persistent buffers: it never appears in checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reenact.layers.geometry import AntiAliasInterpolation2d


class ImagePyramid(nn.Module):
    """Downsample an image to every scale in ``scales``.

    forward: (B, C, H, W) -> {float(scale): (B, C, H*scale, W*scale)}, in the order of ``scales``.
    Scale 1 returns the input itself.
    """

    def __init__(self, scales: Sequence[float], num_channels: int = 3) -> None:
        super().__init__()
        if len(scales) == 0:
            raise ValueError("ImagePyramid needs at least one scale, got an empty list")
        as_floats = [float(scale) for scale in scales]
        if len(set(as_floats)) != len(as_floats):
            raise ValueError(f"ImagePyramid scales must be distinct, got {list(scales)}")
        self.scales = as_floats
        self.num_channels = num_channels
        # a list, not a ModuleDict: ModuleDict keys cannot contain the '.' of a float scale
        self.downsamplers = nn.ModuleList(
            AntiAliasInterpolation2d(num_channels, scale) for scale in as_floats
        )

    def forward(self, x: torch.Tensor) -> dict[float, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"ImagePyramid expects (B, {self.num_channels}, H, W) images, got shape {tuple(x.shape)}"
            )
        return {scale: down(x) for scale, down in zip(self.scales, self.downsamplers, strict=True)}
