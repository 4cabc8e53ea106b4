"""FOMM discriminator D: a Pix2Pix-style patch discriminator, optionally multi-scale.

Each scale returns its per-block feature maps (for the feature-matching loss) and a patch prediction map
(for the LSGAN loss). With ``use_kp`` the Gaussian heatmaps of the (detached) driving keypoints are
concatenated to the image, so D judges the image together with the pose it should show.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from reenact.layers.geometry import AntiAliasInterpolation2d, kp2gaussian


class DiscriminatorDownBlock2d(nn.Module):
    """4x4 conv (no padding) -> InstanceNorm (optional) -> LeakyReLU 0.2 -> 2x2 average pool (optional)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        norm: bool = False,
        kernel_size: int = 4,
        pool: bool = False,
        sn: bool = False,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size)
        self.conv = spectral_norm(conv) if sn else conv
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        return F.avg_pool2d(out, kernel_size=2) if self.pool else out


class Discriminator(nn.Module):
    """(B, C, H, W) [+ keypoints] -> (feature maps of every block, prediction map (B, 1, h, w))."""

    def __init__(
        self,
        num_channels: int = 3,
        block_expansion: int = 32,
        num_blocks: int = 4,
        max_features: int = 512,
        sn: bool = False,
        use_kp: bool = False,
        num_kp: int = 10,
        kp_variance: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.use_kp = use_kp
        self.num_kp = num_kp
        self.kp_variance = kp_variance
        blocks = []
        for i in range(num_blocks):
            block_in = num_channels + num_kp * use_kp if i == 0 else min(max_features, block_expansion * 2**i)
            block_out = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(
                DiscriminatorDownBlock2d(
                    block_in, block_out, norm=i != 0, kernel_size=4, pool=i != num_blocks - 1, sn=sn
                )
            )
        self.down_blocks = nn.ModuleList(blocks)
        conv = nn.Conv2d(block_out, 1, kernel_size=1)
        self.conv = spectral_norm(conv) if sn else conv

    def forward(
        self, image: torch.Tensor, kp_value: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != self.num_channels:
            raise ValueError(
                f"Discriminator expects images (B, {self.num_channels}, H, W), got {tuple(image.shape)}"
            )
        out = image
        if self.use_kp:
            if kp_value is None or kp_value.shape[1] != self.num_kp:
                shape = None if kp_value is None else tuple(kp_value.shape)
                raise ValueError(
                    f"Discriminator(use_kp=True) needs kp_value (B, {self.num_kp}, 2), got {shape}"
                )
            # the keypoints are a condition, not something D may push the detector to change
            heatmap = kp2gaussian(kp_value.detach(), tuple(image.shape[2:]), self.kp_variance)  # (B, K, H, W)
            out = torch.cat([out, heatmap.to(out.dtype)], dim=1)
        feature_maps = []
        for block in self.down_blocks:
            out = block(out)
            feature_maps.append(out)
        return feature_maps, self.conv(out)


def _scale_key(scale: float) -> str:
    """ModuleDict key of a scale: 1.0 -> "1", 0.5 -> "0-5" (dots are not allowed in module names)."""
    return f"{scale:g}".replace(".", "-")


class MultiScaleDiscriminator(nn.Module):
    """One Discriminator per scale; images for scales < 1 are anti-alias downsampled first."""

    def __init__(
        self,
        scales: list[float] | None = None,
        num_channels: int = 3,
        block_expansion: int = 32,
        num_blocks: int = 4,
        max_features: int = 512,
        sn: bool = False,
        use_kp: bool = False,
        num_kp: int = 10,
        kp_variance: float = 0.01,
    ) -> None:
        super().__init__()
        self.scales = [float(s) for s in (scales if scales is not None else [1.0])]
        keys = [_scale_key(s) for s in self.scales]
        if not keys or len(set(keys)) != len(keys) or any(not 0 < s <= 1 for s in self.scales):
            raise ValueError(
                f"MultiScaleDiscriminator scales must be distinct, non-empty and in (0, 1], got {scales}"
            )
        self.discs = nn.ModuleDict(
            {
                _scale_key(s): Discriminator(
                    num_channels=num_channels,
                    block_expansion=block_expansion,
                    num_blocks=num_blocks,
                    max_features=max_features,
                    sn=sn,
                    use_kp=use_kp,
                    num_kp=num_kp,
                    kp_variance=kp_variance,
                )
                for s in self.scales
            }
        )
        # parameter-free blur + subsample per reduced scale
        self.downsamplers = nn.ModuleDict(
            {_scale_key(s): AntiAliasInterpolation2d(num_channels, s) for s in self.scales if s != 1}
        )

    def forward(
        self, image: torch.Tensor, kp_value: torch.Tensor | None = None
    ) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        results = []
        for scale in self.scales:
            key = _scale_key(scale)
            scaled = self.downsamplers[key](image) if key in self.downsamplers else image
            results.append(self.discs[key](scaled, kp_value))
        return results
