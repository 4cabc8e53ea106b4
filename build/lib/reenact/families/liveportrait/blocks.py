"""Building blocks of the LivePortrait-style networks F, W (with its 3D dense motion network) and G.

2D conv/BN blocks for the appearance encoder and the warping network's projection, 3D blocks for the
feature volume and the 3D hourglass, and SPADE residual blocks for the decoder. Attribute names
(``conv``, ``norm``, ``norm1``/``conv1``, ``encoder.down_blocks``, ``decoder.up_blocks``, ``mlp_shared``,
``mlp_gamma``, ``mlp_beta``, ``conv_0``/``conv_1``/``conv_s``, ``norm_0``/``norm_1``/``norm_s``) follow the
released LivePortrait modules so that a converter of the official weights only has to rename spectral-norm
keys. Normalisation is plain BatchNorm (Lightning converts it to SyncBatchNorm under DDP).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class ConvNormActivation2d(nn.Module):
    """conv -> BN -> ReLU (or LeakyReLU(0.01)) at constant resolution; (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1, lrelu: bool = False
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.ac: nn.Module = nn.LeakyReLU() if lrelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block on a feature volume; (B, C, D, H, W) -> (B, C, D, H, W)."""

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm3d(in_features, affine=True)
        self.conv1 = nn.Conv3d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm2 = nn.BatchNorm3d(in_features, affine=True)
        self.conv2 = nn.Conv3d(in_features, in_features, kernel_size=kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class DownBlock3d(nn.Module):
    """conv -> BN -> ReLU -> average pool over H and W only (depth is kept);
    (B, C_in, D, H, W) -> (B, C_out, D, H/2, W/2)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """nearest upsample of H and W by 2 -> conv -> BN -> ReLU; (B, C_in, D, H, W) -> (B, C_out, D, 2H, 2W)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(out)))


def _hourglass_width(block_expansion: int, max_features: int, level: int) -> int:
    return min(max_features, block_expansion * (2**level))


class Encoder3d(nn.Module):
    """Hourglass encoder: returns the input and every down block's output (finest first)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = in_features if i == 0 else _hourglass_width(block_expansion, max_features, i)
            blocks.append(DownBlock3d(cin, _hourglass_width(block_expansion, max_features, i + 1)))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder3d(nn.Module):
    """Hourglass decoder: upsample, concatenate the matching encoder output, finish with conv-BN-ReLU at the
    input resolution. Output channels: ``block_expansion + in_features`` (the input is the last skip)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            # the coarsest block sees only the bottleneck; the others also see a skip of equal width
            cin = (1 if i == num_blocks - 1 else 2) * _hourglass_width(block_expansion, max_features, i + 1)
            blocks.append(UpBlock3d(cin, _hourglass_width(block_expansion, max_features, i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass3d(nn.Module):
    """3D U-Net that halves H and W ``num_blocks`` times and keeps depth;
    (B, in_features, D, H, W) -> (B, block_expansion + in_features, D, H, W)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        self.encoder = Encoder3d(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder3d(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2**self.num_blocks
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"Hourglass3d: H, W = {tuple(x.shape[-2:])} must be divisible by 2**num_blocks = {factor}"
            )
        return self.decoder(self.encoder(x))


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: instance-normalise x, then modulate it with a per-pixel scale and
    shift predicted from the conditioning map resized to x; out = norm(x) * (1 + gamma) + beta."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)  # (B, C, H, W)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")  # (B, label_nc, H, W)
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """Residual block of two SPADE -> LeakyReLU(0.2) -> spectral-normalised 3x3 conv units, with a learned
    SPADE + 1x1 shortcut when the width changes; (B, fin, H, W) -> (B, fout, H, W)."""

    def __init__(self, fin: int, fout: int, label_nc: int, spade_hidden: int = 128) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1))
        self.norm_0 = SPADE(fin, label_nc, spade_hidden)
        self.norm_1 = SPADE(fmiddle, label_nc, spade_hidden)
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
            self.norm_s = SPADE(fin, label_nc, spade_hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx
