"""Iterative correlation warping: module D of Liu et al. ("Learning to Warp for Style Transfer", CVPR 2021) with its
refinement loop.

    w_0            the initial field: the identity, or a family's own flow (FOMM's dense motion)
    w_i − w_{i−1} = f(M(w_{i−1}(F_c), F_g))        i = 1..K
    w              = w_0 + Σ_k f(M(w_k(F_c), F_g))

where w_k(F_c) means: warp the source image with the current field, then extract its features again. Fields are
backward sampling grids (B, h, w, 2) in normalised (x, y) coordinates, the convention of
:func:`reenact.layers.geometry.warp`: the output at z shows the source at w(z). Each increment f(...) is computed
on the feature grid and upsampled bilinearly to the field's resolution (the frame's, unless w_0 has its own).
Gradients flow through every iteration: through the warps, the re-extracted features and the increments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.families.correlation.volume import correlation_volume
from reenact.families.correlation.warp_network import CorrelationWarpNetwork
from reenact.layers.geometry import ALIGN_CORNERS, make_coordinate_grid, warp


class CorrelationRefiner(nn.Module):
    """extractor: frames (B, 3, H, W) -> L2-normalised fields (B, C, g, g); warp_network: f; iterations: K."""

    def __init__(self, extractor: nn.Module, warp_network: CorrelationWarpNetwork, iterations: int = 3) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.extractor = extractor
        self.warp_network = warp_network
        self.iterations = iterations

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """A frame's feature field F (B, C, g, g), each position of unit length."""
        return self.extractor(frames)

    def forward(
        self,
        source: torch.Tensor,
        target_features: torch.Tensor,
        initial: torch.Tensor | None = None,
        source_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """source (B, 3, H, W); target_features F_g (B, C, g, g); initial w_0 (B, h, w, 2) or None (identity,
        then ``source_features``, the source's own field, saves the first extraction).

        Returns ``deformation`` w (B, h, w, 2), ``warped_features`` w(F_c) re-extracted at the final field,
        ``target_features`` F_g and ``correlation`` M(w(F_c), F_g) (B, g, g, g, g) at the final field.
        """
        b = source.shape[0]
        if initial is None:
            field = make_coordinate_grid(tuple(source.shape[-2:]), torch.float32, source.device)
            field = field.expand(b, *field.shape)
            features = source_features if source_features is not None else self.encode(source)
        else:
            field = initial.float()
            features = self.encode(self.warp_source(source, field))
        for _ in range(self.iterations):
            increment = self.warp_network(correlation_volume(features, target_features))  # (B, 2, g, g)
            field = field + self.upsample(increment, tuple(field.shape[1:3]))
            features = self.encode(self.warp_source(source, field))  # re-extract at the new field
        return {
            "deformation": field,
            "warped_features": features,
            "target_features": target_features,
            "correlation": correlation_volume(features, target_features),
        }

    @staticmethod
    def warp_source(source: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        """The source image sampled at the field, mirrored outside the frame: a field that leaves the frame still
        sees texture, so the search-window loss cannot be lowered by warping to featureless (flat) content."""
        return warp(source, field.to(source.dtype), padding_mode="reflection")

    @staticmethod
    def upsample(increment: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, 2, g, g) -> (B, h, w, 2), bilinear with the grids' corner alignment."""
        if tuple(increment.shape[-2:]) != size:
            increment = F.interpolate(increment, size=size, mode="bilinear", align_corners=ALIGN_CORNERS)
        return increment.permute(0, 2, 3, 1)
