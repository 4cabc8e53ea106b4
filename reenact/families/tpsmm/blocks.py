"""2D blocks of the TPSMM networks: InstanceNorm conv blocks and an Hourglass that returns every decoder level.

TPSMM normalises with affine InstanceNorm (two state-dict entries per norm, no running statistics), where FOMM's
blocks in :mod:`reenact.layers.blocks` use BatchNorm; the attribute names (``conv``, ``norm``, ``conv1``/``norm1``,
``encoder.down_blocks``, ``decoder.up_blocks``) follow the release's layout so its state dicts load key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.layers.geometry import AntiAliasInterpolation2d


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True)


class SameBlock2d(nn.Module):
    """conv -> InstanceNorm -> ReLU at constant resolution; (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = instance_norm(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """conv -> InstanceNorm -> ReLU -> 2x2 average pool; (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = instance_norm(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class UpBlock2d(nn.Module):
    """nearest x2 upsample -> conv -> InstanceNorm -> ReLU; (B, C_in, H, W) -> (B, C_out, 2H, 2W)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = instance_norm(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.relu(self.norm(self.conv(out)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block (norm-ReLU-conv twice, plus identity); keeps (B, C, H, W)."""

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = instance_norm(in_features)
        self.norm2 = instance_norm(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def width(block_expansion: int, max_features: int, level: int) -> int:
    """Channels after ``level`` down blocks: doubles per level, capped at max_features."""
    return min(max_features, block_expansion * 2**level)


class HourglassEncoder(nn.Module):
    """Contracting path; returns the input and every down block's output (resolutions H, H/2, ..., H/2**n)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(in_features if i == 0 else width(block_expansion, max_features, i),
                        width(block_expansion, max_features, i + 1))
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """Expanding path; after each up block the same-size skip is concatenated. ``out_channels[j]`` is the width of
    the j-th returned map (coarsest first)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        self.out_channels: list[int] = []
        for i in reversed(range(num_blocks)):
            block_in = width(block_expansion, max_features, i + 1) * (1 if i == num_blocks - 1 else 2)
            block_out = width(block_expansion, max_features, i)
            blocks.append(UpBlock2d(block_in, block_out))
            skip = in_features if i == 0 else width(block_expansion, max_features, i)
            self.out_channels.append(block_out + skip)
        self.up_blocks = nn.ModuleList(blocks)

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        out = skips[-1]
        outs = []
        for block, skip in zip(self.up_blocks, reversed(skips[:-1]), strict=True):
            out = torch.cat([block(out), skip], dim=1)
            outs.append(out)  # (B, out_channels[j], H/2**(n-1-j), W/2**(n-1-j))
        return outs


class Hourglass(nn.Module):
    """U-Net returning every decoder level: (B, in_features, H, W) -> [(B, out_channels[j], H / 2**(n-1-j), ...)],
    the last at full resolution with block_expansion + in_features channels."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_channels = self.decoder.out_channels
        self.num_blocks = num_blocks

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        factor = 2**self.num_blocks
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"Hourglass input size {tuple(x.shape[-2:])} is not divisible by 2**num_blocks = {factor}; "
                "change the image size, scale_factor or num_blocks"
            )
        return self.decoder(self.encoder(x))


class SavedAntiAlias(AntiAliasInterpolation2d):
    """The shared anti-aliased downsampling with its Gaussian kernel kept in the state dict (``weight``), as the
    release saves it (``dense_motion_network.down.weight``)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__(channels, scale)
        kernel = self.weight
        del self.weight
        self.register_buffer("weight", kernel, persistent=True)
