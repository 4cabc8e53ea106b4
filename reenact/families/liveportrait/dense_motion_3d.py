"""The 3D dense motion network inside W (the warping network) of a LivePortrait-style model.

From the source feature volume and the 3D keypoints of source and driving it predicts a dense backward
deformation (for every voxel of the driving volume, where to sample the source volume) and an optional
occlusion map:

1. compress the feature volume to a few channels (1x1x1 conv, BN, ReLU);
2. build K + 1 sparse motions: for keypoint k, the coordinate grid shifted by x_s,k - x_d,k (zero-order
   motion, no Jacobians), plus the identity grid as a background motion;
3. warp the compressed volume by each sparse motion;
4. Gaussian heatmap differences G(x_d) - G(x_s) per keypoint, a zero map for the background;
5. a 3D hourglass over their concatenation, a 7x7x7 conv (``mask_kernel_size``) and a softmax over the
   K + 1 motions give masks; the deformation is the mask-weighted sum of the sparse motions;
6. optionally, the hourglass output with depth folded into channels gives a sigmoid occlusion map.

Because the masks sum to one, equal source and driving keypoints give exactly the identity grid.

Sampling convention (``align_corners``): the coordinate grid always puts -1 and 1 at the centres of the first
and last voxel. ``align_corners=True`` (reenact's convention) samples it with the same convention, so the
identity grid reproduces the volume exactly. ``align_corners=False`` reproduces the released LivePortrait
code, which samples this corner-aligned grid with ``grid_sample(align_corners=False)``: voxel i of an
n-voxel axis is read at i * n / (n - 1) - 0.5, blending edge voxels with the zero padding. The released
weights were trained that way, so converted official checkpoints set it to False
(``python -m reenact.convert liveportrait``).
At LivePortrait's released sizes (21 kp, 32 feature channels, depth 16, block_expansion 32,
max_features 1024, 5 blocks, compress 4) this network has 44,283,621 parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reenact.families.liveportrait.blocks import Hourglass3d
from reenact.layers.geometry import kp2gaussian, make_coordinate_grid, warp


@dataclass(frozen=True)
class DenseMotionParams:
    """Hyperparameters of :class:`DenseMotionNetwork3d` that the warping network passes through.

    Defaults are the WarpingNetwork specification's; LivePortrait's released W uses block_expansion=32, num_blocks=5,
    max_features=1024, compress=4, reshape_depth=16. ``kp_variance`` is the Gaussian heatmap variance in
    normalised coordinates (0.01 in LivePortrait); ``mask_kernel_size`` is the (odd) cube size of the mask
    conv (7 in LivePortrait, where it is a quarter of W's compute; 3 suits shallow volumes).
    ``align_corners`` is the grid_sample convention of the sparse warps here and of W's final warp (see the
    module docstring): True is reenact's convention, False reproduces the released LivePortrait code.
    """

    block_expansion: int = 64
    num_blocks: int = 4
    max_features: int = 256
    compress: int = 4
    reshape_depth: int = 16
    kp_variance: float = 0.01
    mask_kernel_size: int = 7
    align_corners: bool = True

    @classmethod
    def from_any(cls, params: DenseMotionParams | Mapping[str, Any] | None) -> DenseMotionParams:
        """Accept the dataclass, a plain dict or a Hydra DictConfig; missing keys take the defaults."""
        if params is None:
            return cls()
        if isinstance(params, cls):
            return params
        if not isinstance(params, Mapping):
            raise TypeError(f"dense_motion_params: expected a mapping, got {type(params).__name__}")
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in params.items():
            if key not in known:
                raise ValueError(f"dense_motion_params: unknown key {key!r} (allowed: {', '.join(known)})")
            if key == "align_corners":
                if not isinstance(value, bool):
                    raise TypeError(f"dense_motion_params: align_corners={value!r} must be bool")
                values[key] = value
                continue
            allowed = (int, float) if key == "kp_variance" else (int,)  # an int variance is a valid float
            if isinstance(value, bool) or not isinstance(value, allowed):
                raise TypeError(f"dense_motion_params: {key}={value!r} must be {allowed[-1].__name__}")
            values[key] = allowed[-1](value)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_volume(volume: torch.Tensor, grid: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """Trilinearly sample ``volume`` (B, C, D, H, W) at ``grid`` (B, D, H, W, 3) of normalised (x, y, z)
    coordinates, zero outside; (B, C, D, H, W). ``align_corners=False`` is the released LivePortrait sampling."""
    if align_corners:
        return warp(volume, grid)
    if volume.shape[2:] != grid.shape[1:4]:
        raise ValueError(
            f"sample_volume: align_corners=False needs the grid {tuple(grid.shape[1:4])} at the volume's size "
            f"{tuple(volume.shape[2:])}"
        )
    return F.grid_sample(volume, grid.to(volume.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


class DenseMotionNetwork3d(nn.Module):
    """(feature (B, C, D, H, W), kp_driving (B, K, 3), kp_source (B, K, 3)) ->
    {"mask": (B, K+1, D, H, W), "deformation": (B, D, H, W, 3), "occlusion_map": (B, 1, H, W) or None}."""

    def __init__(
        self,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        feature_channel: int,
        reshape_depth: int,
        compress: int,
        estimate_occlusion_map: bool = False,
        kp_variance: float = 0.01,
        mask_kernel_size: int = 7,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        if mask_kernel_size < 1 or mask_kernel_size % 2 == 0:
            raise ValueError(
                f"DenseMotionNetwork3d: mask_kernel_size must be odd and positive, got {mask_kernel_size}"
            )
        self.num_kp = num_kp
        self.kp_variance = kp_variance
        self.reshape_depth = reshape_depth
        self.align_corners = align_corners
        # per motion: the warped compressed feature plus one heatmap-difference channel
        self.hourglass = Hourglass3d(
            block_expansion=block_expansion,
            in_features=(num_kp + 1) * (compress + 1),
            num_blocks=num_blocks,
            max_features=max_features,
        )
        out_filters = self.hourglass.out_filters
        self.mask = nn.Conv3d(
            out_filters, num_kp + 1, kernel_size=mask_kernel_size, padding=mask_kernel_size // 2
        )
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion: nn.Conv2d | None = None
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(out_filters * reshape_depth, 1, kernel_size=7, padding=3)

    def create_sparse_motions(
        self, spatial: tuple[int, int, int], kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> torch.Tensor:
        """(B, K+1, D, H, W, 3): where each driving voxel samples the source under each keypoint's motion;
        index 0 is the identity (background) motion."""
        bs, num_kp, _ = kp_driving.shape
        grid = make_coordinate_grid(spatial, kp_driving.dtype, kp_driving.device)  # (D, H, W, 3)
        shift = (kp_source - kp_driving).view(bs, num_kp, 1, 1, 1, 3)
        kp_motions = grid.view(1, 1, *spatial, 3) + shift  # (B, K, D, H, W, 3)
        identity = grid.view(1, 1, *spatial, 3).expand(bs, 1, *spatial, 3)
        return torch.cat([identity, kp_motions], dim=1)

    @staticmethod
    def create_deformed_feature(
        feature: torch.Tensor, sparse_motions: torch.Tensor, align_corners: bool = True
    ) -> torch.Tensor:
        """Warp (B, c, D, H, W) by every sparse motion -> (B, K+1, c, D, H, W)."""
        bs, c, d, h, w = feature.shape
        n = sparse_motions.shape[1]
        repeated = feature.unsqueeze(1).expand(bs, n, c, d, h, w).reshape(bs * n, c, d, h, w)
        deformed = sample_volume(repeated, sparse_motions.reshape(bs * n, d, h, w, 3), align_corners)
        return deformed.view(bs, n, c, d, h, w)

    def create_heatmap_representations(
        self, spatial: tuple[int, int, int], kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> torch.Tensor:
        """(B, K+1, 1, D, H, W): G(x_d) - G(x_s), with a zero map for the background motion."""
        heatmap = kp2gaussian(kp_driving, spatial, self.kp_variance) - kp2gaussian(
            kp_source, spatial, self.kp_variance
        )  # (B, K, D, H, W)
        background = torch.zeros_like(heatmap[:, :1])
        return torch.cat([background, heatmap], dim=1).unsqueeze(2)

    def forward(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        if kp_driving.shape != kp_source.shape or kp_driving.shape[1:] != (self.num_kp, 3):
            raise ValueError(
                f"DenseMotionNetwork3d: kp_driving {tuple(kp_driving.shape)} and kp_source "
                f"{tuple(kp_source.shape)} must both be (B, {self.num_kp}, 3)"
            )
        bs, _, d, h, w = feature.shape
        if d != self.reshape_depth:
            raise ValueError(
                f"DenseMotionNetwork3d: feature depth {d} differs from reshape_depth {self.reshape_depth}"
            )
        spatial = (d, h, w)
        feature = F.relu(self.norm(self.compress(feature)))  # (B, c, D, H, W)
        sparse_motions = self.create_sparse_motions(spatial, kp_driving, kp_source)  # (B, K+1, D, H, W, 3)
        deformed = self.create_deformed_feature(feature, sparse_motions, self.align_corners)  # (B, K+1, c, D, H, W)
        heatmap = self.create_heatmap_representations(spatial, kp_driving, kp_source)  # (B, K+1, 1, D, H, W)
        hourglass_in = torch.cat([heatmap, deformed], dim=2).view(bs, -1, d, h, w)  # (B, (K+1)(c+1), D, H, W)
        prediction = self.hourglass(hourglass_in)  # (B, out_filters, D, H, W)

        mask = F.softmax(self.mask(prediction), dim=1)  # (B, K+1, D, H, W)
        deformation = (sparse_motions * mask.unsqueeze(-1)).sum(dim=1)  # (B, D, H, W, 3)

        occlusion_map = None
        if self.occlusion is not None:
            folded = prediction.reshape(bs, -1, h, w)  # depth folded into channels: (B, out_filters*D, H, W)
            occlusion_map = torch.sigmoid(self.occlusion(folded))  # (B, 1, H, W)
        return {"mask": mask, "deformation": deformation, "occlusion_map": occlusion_map}
