"""2D building blocks of the FOMM networks: conv/BN/ReLU blocks and the Hourglass U-Net.

The keypoint detector and the dense motion network are both an Hourglass followed by small heads; the
occlusion-aware generator is built from Same/Down/Res/Up blocks. Normalisation is plain ``nn.BatchNorm2d``
(FOMM used synchronised BN under DataParallel; under DDP Lightning converts these to SyncBatchNorm).
Attribute names (``conv``, ``norm``, ``norm1``/``conv1``, ``encoder.down_blocks``, ``decoder.up_blocks``)
follow the reference layout so official state dicts map onto these modules key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DownBlock2d(nn.Module):
    """conv -> BN -> ReLU -> 2x2 average pool; (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups
        )
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(x)))
        return F.avg_pool2d(out, kernel_size=2)


class UpBlock2d(nn.Module):
    """nearest x2 upsample -> conv -> BN -> ReLU; (B, C_in, H, W) -> (B, C_out, 2H, 2W)."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups
        )
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.relu(self.norm(self.conv(out)))


class SameBlock2d(nn.Module):
    """conv -> BN -> ReLU at constant resolution; (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups
        )
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv twice, plus identity); keeps (B, C, H, W)."""

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(in_features, affine=True)
        self.norm2 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def _hourglass_width(block_expansion: int, max_features: int, level: int) -> int:
    """Channels after ``level`` down blocks: doubles per level, capped at max_features."""
    return min(max_features, block_expansion * 2**level)


class Encoder(nn.Module):
    """Hourglass contracting path; returns the input and every down block's output, for the skips."""

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256
    ) -> None:
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            block_in = in_features if i == 0 else _hourglass_width(block_expansion, max_features, i)
            block_out = _hourglass_width(block_expansion, max_features, i + 1)
            blocks.append(DownBlock2d(block_in, block_out, kernel_size=3, padding=1))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]  # resolutions H, H/2, ..., H/2**num_blocks
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass expanding path; each up block's output is concatenated with the same-size skip."""

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256
    ) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            # the deepest block sees only the bottleneck; the others also see the concatenated skip
            width = _hourglass_width(block_expansion, max_features, i + 1)
            block_in = width if i == num_blocks - 1 else 2 * width
            block_out = _hourglass_width(block_expansion, max_features, i)
            blocks.append(UpBlock2d(block_in, block_out, kernel_size=3, padding=1))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1]), strict=True):
            out = torch.cat([block(out), skip], dim=1)
        return out  # (B, out_filters, H, W)


class Hourglass(nn.Module):
    """U-Net: (B, in_features, H, W) -> (B, block_expansion + in_features, H, W).

    H and W must be divisible by 2**num_blocks so that every skip matches its up-sampled partner.
    """

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256
    ) -> None:
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters
        self.num_blocks = num_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2**self.num_blocks
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"Hourglass input size {tuple(x.shape[-2:])} is not divisible by 2**num_blocks"
                f" = {factor}; change the image size, scale_factor or num_blocks"
            )
        return self.decoder(self.encoder(x))
