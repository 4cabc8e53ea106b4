"""TPSMM dense motion network: K thin-plate-spline transforms + a background affine -> optical flow T_{S<-D} and
multi-resolution occlusion masks (paper Sec. 3.2-3.3).

At ``scale_factor`` of the input (after an anti-aliasing blur) the network warps the source by each of the K + 1
transforms (transform 0: the background affine, or the identity without one), stacks those warps with the
driving-minus-source keypoint Gaussians (plus one zero channel for the background), and an Hourglass predicts
K + 1 contribution maps M_k (softmax over k) that blend the transforms into one flow. Occlusion masks come from
the Hourglass's last decoder levels and from ``log2(1/scale_factor)`` extra up blocks, coarsest first: for 256^2
input at scale 0.25, 4 masks at 32, 64, 128 and 256 pixels.

TPS dropout (training, paper Eq. 7-8): each of the K spline contributions is dropped per sample with probability
p before the normalisation (the background never). The release rescales the kept logits by 1/(1-p) after the
exponentials were taken, so the rescale has no effect; ``dropout_rescale=False`` reproduces that (needed to match
the released weights' training), ``True`` divides the kept exponentials by (1 - p) as the paper writes it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reenact.families.tpsmm.blocks import Hourglass, SavedAntiAlias, UpBlock2d
from reenact.families.tpsmm.tps import tps_grids
from reenact.layers.geometry import kp2gaussian, make_coordinate_grid, warp

PARTITION_EPS = 1e-6


class TPSDenseMotionNetwork(nn.Module):
    """source (B, C, H, W), driving and source keypoints (B, K*N, 2), optional background affine (B, 3, 3) ->
    {"deformation" (B, h, w, 2), "contribution_maps" (B, K+1, h, w), "deformed_source" (B, K+1, C, h, w),
    "occlusion_maps" [(B, 1, ...)] coarsest first}; h = H * scale_factor."""

    def __init__(
        self,
        block_expansion: int = 64,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_tps: int = 10,
        points_per_tps: int = 5,
        num_channels: int = 3,
        scale_factor: float = 0.25,
        kp_variance: float = 0.01,
        num_occlusion_masks: int = 4,
        tps_regularisation: float = 0.01,
        tps_regulariser: str = "system",
        dropout_rescale: bool = False,
    ) -> None:
        super().__init__()
        self.num_tps = num_tps
        self.points_per_tps = points_per_tps
        self.num_channels = num_channels
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.tps_regularisation = tps_regularisation
        self.tps_regulariser = tps_regulariser
        self.dropout_rescale = dropout_rescale
        num_kp = num_tps * points_per_tps
        if scale_factor != 1:
            self.down = SavedAntiAlias(num_channels, scale_factor)
        else:
            self.down = None
        # 1 zero channel + K*N heatmap differences + the source warped by each of the K+1 transforms
        self.hourglass = Hourglass(block_expansion, in_features=1 + num_kp + num_channels * (num_tps + 1),
                                   num_blocks=num_blocks, max_features=max_features)
        channels = self.hourglass.out_channels
        self.maps = nn.Conv2d(channels[-1], num_tps + 1, kernel_size=7, padding=3)

        self.num_up = round(math.log2(1 / scale_factor))
        if 2**self.num_up * scale_factor != 1:
            raise ValueError(f"scale_factor must be 1 / 2**n, got {scale_factor}")
        from_hourglass = num_occlusion_masks - self.num_up
        if not 1 <= from_hourglass <= len(channels):
            raise ValueError(f"num_occlusion_masks={num_occlusion_masks} does not fit scale_factor={scale_factor} "
                             f"and num_blocks={num_blocks}")
        self.num_occlusion_masks = num_occlusion_masks
        self.up = nn.ModuleList(UpBlock2d(channels[-1] // 2**i, channels[-1] // 2 ** (i + 1))
                                for i in range(self.num_up))
        mask_channels = channels[len(channels) - from_hourglass:] + [channels[-1] // 2 ** (i + 1)
                                                                     for i in range(self.num_up)]
        self.occlusion = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=7, padding=3) for c in mask_channels)

    def transformations(
        self, spatial_size: tuple[int, int], kp_driving: torch.Tensor, kp_source: torch.Tensor,
        bg_param: torch.Tensor | None,
    ) -> torch.Tensor:
        """The K+1 backward grids (B, K+1, h, w, 2), float32: the background affine (or identity) first."""
        b = kp_driving.shape[0]
        h, w = spatial_size
        splines = tps_grids(kp_driving, kp_source, (h, w), self.points_per_tps, self.tps_regularisation,
                            self.tps_regulariser)  # (B, K, h, w, 2)
        identity = make_coordinate_grid((h, w), torch.float32, kp_driving.device)  # (h, w, 2)
        if bg_param is None:
            background = identity.expand(b, 1, h, w, 2)
        else:
            with torch.autocast(device_type=kp_driving.device.type, enabled=False):
                affine = bg_param.float()  # (B, 3, 3)
                background = (identity.view(1, h * w, 2) @ affine[:, :2, :2].transpose(1, 2)
                              + affine[:, :2, 2].unsqueeze(1))  # (B, h*w, 2)
                # the release divides by the homogeneous coordinate, which is 1 for an affine
                background = background.view(b, 1, h, w, 2)
        return torch.cat([background, splines], dim=1)

    def contribution_maps(self, logits: torch.Tensor, dropout_p: float | None) -> torch.Tensor:
        """(B, K+1, h, w) logits -> weights summing to 1 over the K+1 transforms (softmax, or TPS dropout)."""
        logits = logits.float()
        if dropout_p is None:
            return F.softmax(logits, dim=1)
        keep = (torch.rand(logits.shape[0], logits.shape[1], device=logits.device) < 1 - dropout_p).float()
        keep[:, 0] = 1  # the background transform is never dropped
        exponentials = (logits - logits.amax(dim=1, keepdim=True)).exp()
        if self.dropout_rescale:
            scale = torch.ones(logits.shape[1], device=logits.device)
            scale[1:] = 1 / (1 - dropout_p)
            exponentials = exponentials * scale.view(1, -1, 1, 1)
        exponentials = exponentials * keep[:, :, None, None]
        return exponentials / (exponentials.sum(dim=1, keepdim=True) + PARTITION_EPS)

    def forward(
        self,
        source_image: torch.Tensor,
        kp_driving: torch.Tensor,
        kp_source: torch.Tensor,
        bg_param: torch.Tensor | None = None,
        dropout_p: float | None = None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        if self.down is not None:
            source_image = self.down(source_image)  # (B, C, h, w)
        b, c, h, w = source_image.shape

        gaussians = (kp2gaussian(kp_driving.float(), (h, w), self.kp_variance)
                     - kp2gaussian(kp_source.float(), (h, w), self.kp_variance))  # (B, K*N, h, w)
        heatmaps = torch.cat([gaussians.new_zeros(b, 1, h, w), gaussians], dim=1)  # (B, 1+K*N, h, w)
        grids = self.transformations((h, w), kp_driving, kp_source, bg_param)  # (B, K+1, h, w, 2)
        parts = grids.shape[1]
        repeated = source_image.unsqueeze(1).expand(b, parts, c, h, w).reshape(b * parts, c, h, w)
        deformed = warp(repeated, grids.reshape(b * parts, h, w, 2)).view(b, parts, c, h, w)
        hourglass_in = torch.cat([heatmaps.to(deformed.dtype), deformed.view(b, -1, h, w)], dim=1)

        levels = self.hourglass(hourglass_in)  # coarsest first; the last (B, out, h, w)
        maps = self.contribution_maps(self.maps(levels[-1]), dropout_p)  # (B, K+1, h, w), float32
        deformation = (grids * maps.unsqueeze(-1)).sum(dim=1)  # (B, h, w, 2)

        from_hourglass = self.num_occlusion_masks - self.num_up
        masks = [torch.sigmoid(head(level)) for head, level in
                 zip(self.occlusion[:from_hourglass], levels[len(levels) - from_hourglass:], strict=True)]
        features = levels[-1]
        for up, head in zip(self.up, self.occlusion[from_hourglass:], strict=True):
            features = up(features)
            masks.append(torch.sigmoid(head(features)))  # (B, 1, 2h, 2w), ...
        return {"deformation": deformation, "contribution_maps": maps, "deformed_source": deformed,
                "occlusion_maps": masks}
