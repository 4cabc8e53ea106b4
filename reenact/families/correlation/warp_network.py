"""The warp network f of learned correlation warping: correlation volume M -> a non-parametric 2D warp increment.

M (B, hc, wc, hg, wg) is read as an image over the target (driving) positions whose channels are the hc*wc source
positions. Each target position's column of M is standardised (zero mean, unit variance over the source positions)
so the network sees which source positions stand out, not the overall level of correlation. Two paths read it:

- a matching path: the expected source position under softmax(β · standardised M) over the source positions
  within a ``match_window`` x ``match_window`` window around the target position (the whole field when None),
  minus the target position (a displacement, (B, 2, hg, wg)), with a learned sharpness β, then optionally smoothed
  by a fixed Gaussian of ``smoothing`` cells;
- a convolutional trunk over the standardised M and the matching displacement.

The window matters: on real faces a large part of every frame is flat (background, skin), whose columns of M are
nearly uniform, and a soft-argmax over the whole field then returns the field's centre; on held-out affine + TPS
warps of face frames a global soft-argmax is *twice* as far from the truth as the identity, a 5x5 window with a
Gaussian of 3 cells and K = 3 less than half as far (``experiments/2026-12-01_correlation_warping.md``).

The increment is a 1x1 mix of the matching displacement plus a 3x3 head on the trunk. Both start at zero, so an
untrained f gives the identity warp and the first steps learn how far to trust each path; with ``match_init`` the
mix starts at the identity instead (an untrained f is the windowed soft-argmax, training refines it). The head
predicts in units of one feature cell (2 / (g − 1) in normalised coordinates) and the mix's weights count
``mix_gain`` times: Adam moves every weight by about its learning rate at first, so a wide head in normalised units
would jump the field by whole frames in one step, and a mix in plain units would need thousands of steps to pass the
match through.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reenact.layers.geometry import make_coordinate_grid


def standardise_columns(volume: torch.Tensor) -> torch.Tensor:
    """(B, hc, wc, hg, wg) -> (B, hc*wc, hg, wg), each target position's hc*wc values at zero mean, unit std."""
    b, hc, wc, hg, wg = volume.shape
    channels = volume.reshape(b, hc * wc, hg, wg)
    mean = channels.mean(dim=1, keepdim=True)
    std = channels.std(dim=1, keepdim=True, unbiased=False).clamp_min(1e-6)
    return (channels - mean) / std


class CorrelationWarpNetwork(nn.Module):
    """f: M (B, g, g, g, g) -> displacement increment (B, 2, g, g) in normalised [-1, 1] units, (x, y) order."""

    def __init__(
        self,
        grid_size: int = 16,
        hidden: int = 128,
        num_layers: int = 3,
        sharpness: float = 3.0,
        mix_gain: float = 10.0,
        match_window: int | None = 5,
        smoothing: float = 0.0,
        match_init: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.grid_size = grid_size
        self.cell = 2.0 / max(grid_size - 1, 1)
        self.mix_gain = mix_gain
        if match_window is not None and (match_window < 1 or match_window % 2 == 0):
            raise ValueError(f"match_window must be a positive odd size or None, got {match_window}")
        if smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {smoothing}")
        self.match_window = match_window
        self.smoothing = smoothing
        cells = grid_size * grid_size
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(sharpness)))
        layers: list[nn.Module] = []
        in_features = cells + 2
        for _ in range(num_layers):
            layers += [nn.Conv2d(in_features, hidden, 3, padding=1, padding_mode="replicate"), nn.LeakyReLU(0.2)]
            in_features = hidden
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Conv2d(hidden, 2, 3, padding=1, padding_mode="replicate")
        self.mix = nn.Conv2d(2, 2, kernel_size=1)
        for layer in (self.head, self.mix):  # an untrained f is the identity warp
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if match_init:  # the mix passes the match through: f starts as the windowed soft-argmax
            with torch.no_grad():
                self.mix.weight.copy_(torch.eye(2).view(2, 2, 1, 1) / mix_gain)
        grid = make_coordinate_grid((grid_size, grid_size))  # (g, g, 2) as (x, y)
        self.register_buffer("grid", grid.reshape(cells, 2), persistent=False)
        rows = torch.arange(grid_size)
        index_y, index_x = torch.meshgrid(rows, rows, indexing="ij")
        index_y, index_x = index_y.reshape(cells, 1, 1), index_x.reshape(cells, 1, 1)  # source positions
        radius = grid_size if match_window is None else match_window // 2
        inside = ((index_y - rows.view(1, -1, 1)).abs() <= radius) & ((index_x - rows.view(1, 1, -1)).abs() <= radius)
        self.register_buffer("window_mask", inside, persistent=False)  # (g², g, g): source within target's window
        if smoothing > 0:
            taps = torch.arange(-math.ceil(3 * smoothing), math.ceil(3 * smoothing) + 1, dtype=torch.float32)
            kernel = torch.exp(-0.5 * (taps / smoothing) ** 2)
            self.register_buffer("smoothing_kernel", kernel / kernel.sum(), persistent=False)
        else:
            self.smoothing_kernel = None

    def matching_displacement(self, columns: torch.Tensor) -> torch.Tensor:
        """(B, g², g, g) standardised M -> expected source position minus target position, (B, 2, g, g)."""
        logits = (columns * self.log_sharpness.exp()).masked_fill(~self.window_mask, float("-inf"))
        weights = F.softmax(logits, dim=1)  # (B, g², g, g) over the source positions in the window
        expected = torch.einsum("bnhw,nc->bchw", weights, self.grid.to(weights.dtype))  # (B, 2, g, g)
        target = self.grid.to(weights.dtype).t().reshape(1, 2, self.grid_size, self.grid_size)
        return self.smooth(expected - target)

    def smooth(self, displacement: torch.Tensor) -> torch.Tensor:
        """A separable Gaussian of ``smoothing`` cells over (B, 2, g, g), replicating the border (identity at 0)."""
        if self.smoothing_kernel is None:
            return displacement
        kernel = self.smoothing_kernel.to(displacement.dtype)
        pad = kernel.numel() // 2
        b, c, h, w = displacement.shape
        flat = displacement.reshape(b * c, 1, h, w)
        flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
        flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="replicate"), kernel.view(1, 1, -1, 1))
        return flat.reshape(b, c, h, w)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        expected = (self.grid_size,) * 4
        if tuple(volume.shape[1:]) != expected:
            raise ValueError(f"the warp network was built for {self.grid_size}x{self.grid_size} feature fields, "
                             f"got a correlation volume of shape {tuple(volume.shape)}")
        with torch.autocast(device_type=volume.device.type, enabled=False):
            columns = standardise_columns(volume.float())  # (B, g², g, g)
            matched = self.matching_displacement(columns)  # (B, 2, g, g)
        hidden = self.trunk(torch.cat([columns, matched], dim=1).to(self.head.weight.dtype))
        weight, bias = self.mix.weight * self.mix_gain, self.mix.bias * self.mix_gain
        mixed = F.conv2d(matched.to(weight.dtype), weight, bias)
        return (self.cell * self.head(hidden) + mixed).float()
