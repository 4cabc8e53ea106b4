"""Positional encoding PE added to the queries and keys of implicit warping's cross-modal attention.

PE(x, y) = W f(x, y), with f the Fourier features [sin(w_i x), cos(w_i x), sin(w_i y), cos(w_i y)], w_i = 2^i pi / 2
for i < num_frequencies (normalised [-1, 1] coordinates, so the encoding does not depend on the resolution; the
longest period, 4, keeps opposite borders apart) and W a
learned (d, 4 num_frequencies) map. W starts with orthogonal columns scaled so that PE(p)·PE(p')/sqrt(d) =
sharpness * sum_i [cos(w_i (x - x')) + cos(w_i (y - y'))]: attention on PE alone peaks at p' = p (an identity
warp), which is where an untrained model starts.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """(..., 2) normalised (x, y) -> (..., dim)."""

    def __init__(self, dim: int = 64, num_frequencies: int = 5, sharpness: float = 1.0) -> None:
        super().__init__()
        if num_frequencies < 1 or sharpness <= 0:
            raise ValueError(f"PositionalEncoding needs num_frequencies >= 1 and sharpness > 0, got "
                             f"{num_frequencies}, {sharpness}")
        self.dim = dim
        self.register_buffer("frequencies", 0.5 * math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32),
                             persistent=False)
        self.projection = nn.Linear(4 * num_frequencies, dim, bias=False)
        nn.init.orthogonal_(self.projection.weight)
        with torch.no_grad():
            self.projection.weight.mul_(math.sqrt(sharpness * math.sqrt(dim)))

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        angles = coordinates.float()[..., None] * self.frequencies  # (..., 2, F)
        features = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (..., 4F)
        return self.projection(features)  # (..., dim)
