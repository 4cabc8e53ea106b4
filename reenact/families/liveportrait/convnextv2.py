"""ConvNeXt-V2-style backbone (with Global Response Normalisation) used by the motion extractor M.

Our own implementation of the architecture of Woo et al. 2023 (fully convolutional ConvNeXt blocks with
GRN in the inverted bottleneck). It returns the globally pooled, layer-normalised feature (B, dims[-1]);
the heads live in :mod:`reenact.families.liveportrait.motion_extractor`. Module names (``downsample_layers``,
``stages``, ``dwconv``, ``norm``, ``pwconv1``, ``grn``, ``pwconv2``, final ``norm``) follow the public
ConvNeXt-V2 checkpoints, so ImageNet backbone weights load after dropping their classification ``head``.
ConvNeXt-V2-Tiny: depths (3, 3, 9, 3), dims (96, 192, 384, 768), 27,866,496 parameters here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LayerNormChannelsFirst(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.num_channels = num_channels
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # permuting to channels-last lets the fused layer_norm kernel do the work; the normalised shape is the
        # constructor's int (not x.shape[1]), which ONNX export needs as a constant
        out = F.layer_norm(x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps)
        return out.permute(0, 3, 1, 2)


class GRN(nn.Module):
    """Global Response Normalisation on channels-last input (B, H, W, C): each channel's spatial L2 norm,
    divided by the mean norm over channels, rescales the features; gamma = beta = 0 makes it the identity."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """depthwise 7x7 -> LayerNorm -> Linear(4x) -> GELU -> GRN -> Linear -> stochastic depth, residual;
    (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C): Linear layers act on the last axis
        out = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(out)))))
        out = out.permute(0, 3, 1, 2)  # (B, C, H, W)
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep) / keep  # drop whole residual branches
            out = out * mask
        return x + out


class ConvNeXtV2(nn.Module):
    """Backbone: 4x4 stride-4 stem, then per stage (a 2x2 stride-2 downsample except for the first) a stack
    of ConvNeXtV2Block; global average pool and LayerNorm. (B, in_chans, H, W) -> (B, dims[-1])."""

    def __init__(
        self,
        in_chans: int = 3,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        depths, dims = [int(d) for d in depths], [int(d) for d in dims]
        if len(depths) != len(dims) or not depths:
            raise ValueError(
                f"ConvNeXtV2: depths {depths} and dims {dims} must be non-empty and of equal length"
            )
        self.out_dim = dims[-1]
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNormChannelsFirst(dims[0])
            )
        )
        for i in range(1, len(dims)):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNormChannelsFirst(dims[i - 1]),
                    nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2),
                )
            )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()  # deeper blocks drop more often
        self.stages = nn.ModuleList()
        offset = 0
        for depth, dim in zip(depths, dims, strict=True):
            self.stages.append(
                nn.Sequential(*[ConvNeXtV2Block(dim, rates[offset + j]) for j in range(depth)])
            )
            offset += depth
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(downsample(x))  # (B, dims[i], H / 2^(i+2), W / 2^(i+2))
        return self.norm(x.mean(dim=(-2, -1)))  # (B, dims[-1])
