"""Coordinate grids, keypoint heatmaps and anti-aliased resizing shared by every model family.

Convention (used everywhere in reenact): normalised coordinates span [-1, 1] with -1 and 1 at the
*centres* of the first and last pixel, i.e. the ``align_corners=True`` convention of
``torch.nn.functional.grid_sample``. Every ``grid_sample`` in the package passes ``align_corners=True``
explicitly so that a grid from :func:`make_coordinate_grid` samples the input exactly (identity warp).
The last axis of a grid is ordered (x, y) in 2D and (x, y, z) in 3D, as ``grid_sample`` expects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ALIGN_CORNERS = True


def make_coordinate_grid(
    spatial_size: tuple[int, ...], dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """Normalised pixel-centre coordinates.

    (H, W) -> tensor (H, W, 2) holding (x, y); (D, H, W) -> tensor (D, H, W, 3) holding (x, y, z).
    """
    axes = [torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device) if n > 1 else
            torch.zeros(1, dtype=dtype, device=device) for n in spatial_size]
    mesh = torch.meshgrid(*axes, indexing="ij")  # each (…spatial…), ordered (z,) y, x
    return torch.stack(mesh[::-1], dim=-1)


def kp2gaussian(keypoints: torch.Tensor, spatial_size: tuple[int, ...], kp_variance: float) -> torch.Tensor:
    """Unnormalised Gaussian heatmaps centred on keypoints.

    keypoints: (B, K, 2) for 2D or (B, K, 3) for 3D, in normalised coordinates.
    returns: (B, K, H, W) or (B, K, D, H, W), peak value 1 at the keypoint.
    """
    dims = keypoints.shape[-1]
    if dims != len(spatial_size):
        raise ValueError(f"keypoints have {dims} coordinates but spatial_size is {spatial_size}")
    grid = make_coordinate_grid(spatial_size, keypoints.dtype, keypoints.device)  # (*S, dims)
    view = keypoints.shape[:2] + (1,) * len(spatial_size) + (dims,)
    delta = grid.unsqueeze(0).unsqueeze(0) - keypoints.view(view)  # (B, K, *S, dims)
    return torch.exp(-0.5 * (delta**2).sum(-1) / kp_variance)


def heatmap_to_keypoints(heatmap: torch.Tensor) -> torch.Tensor:
    """Soft-argmax: expected normalised coordinate under a probability map.

    heatmap: (B, K, H, W) or (B, K, D, H, W), non-negative and summing to 1 over space.
    returns: (B, K, 2) or (B, K, 3).
    """
    spatial = tuple(heatmap.shape[2:])
    grid = make_coordinate_grid(spatial, heatmap.dtype, heatmap.device)  # (*S, dims)
    weighted = heatmap.unsqueeze(-1) * grid  # (B, K, *S, dims)
    return weighted.flatten(2, -2).sum(2)


def spatial_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax over all spatial positions of each channel; (B, K, *S) -> (B, K, *S)."""
    flat = logits.flatten(2) / temperature
    return F.softmax(flat, dim=2).view_as(logits)


def warp(inp: torch.Tensor, grid: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Sample ``inp`` (B, C, H, W) or (B, C, D, H, W) at ``grid`` (B, h, w, 2) or (B, d, h, w, 3).

    The grid is resized to the input's spatial size first when they differ, as FOMM and LivePortrait do.
    """
    spatial_in = tuple(inp.shape[2:])
    spatial_grid = tuple(grid.shape[1:-1])
    if spatial_in != spatial_grid:
        # channels-first for interpolation, then back to channels-last
        perm = (0, grid.dim() - 1) + tuple(range(1, grid.dim() - 1))
        moved = grid.permute(*perm)
        mode = "bilinear" if len(spatial_in) == 2 else "trilinear"
        moved = F.interpolate(moved, size=spatial_in, mode=mode, align_corners=ALIGN_CORNERS)
        inv = (0,) + tuple(range(2, grid.dim())) + (1,)
        grid = moved.permute(*inv)
    return F.grid_sample(inp, grid.to(inp.dtype), mode="bilinear", padding_mode=padding_mode,
                         align_corners=ALIGN_CORNERS)


def warp_and_mask(
    feature: torch.Tensor, flow: torch.Tensor | None, occlusion: torch.Tensor | None
) -> torch.Tensor:
    """Warp a (B, C, h, w) source feature by a (B, h', w', 2) flow and multiply it by a (B, 1, h'', w'')
    occlusion map, both resized to the feature; either may be None (no warp, no mask)."""
    if flow is not None:
        feature = warp(feature, flow)
    if occlusion is not None:
        if occlusion.shape[2:] != feature.shape[2:]:
            # same corner alignment as the flow resize in warp, so both describe the same pixels
            occlusion = F.interpolate(occlusion, size=feature.shape[2:], mode="bilinear", align_corners=ALIGN_CORNERS)
        feature = feature * occlusion.to(feature.dtype)
    return feature


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then strided subsampling, as FOMM downsamples before keypoint detection.

    sigma = (1/scale - 1)/2, kernel = 2*round(4*sigma)+1 (13 taps for scale 0.25). A fixed buffer, no
    parameters, so it does not change parameter counts.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.scale = scale
        self.channels = channels
        if scale == 1:
            self.register_buffer("weight", torch.ones(channels, 1, 1, 1), persistent=False)
            self.ka = self.kb = 0
            self.stride = 1
            return
        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1
        self.ka = kernel_size // 2
        self.kb = self.ka - 1 if kernel_size % 2 == 0 else self.ka
        coords = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
        g1 = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = torch.outer(g1, g1)
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, kernel_size, kernel_size).clone(),
                             persistent=False)
        self.stride = int(round(1 / scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H*scale, W*scale)
        if self.scale == 1:
            return x
        x = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        x = F.conv2d(x, self.weight.to(x.dtype), groups=self.channels)
        if 1 / self.scale == self.stride:
            return x[:, :, :: self.stride, :: self.stride]  # (B, C, H*scale, W*scale)
        size = (int(x.shape[2] * self.scale), int(x.shape[3] * self.scale))
        return F.interpolate(x, size=size, mode="nearest")


def resize_to(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (B, C, H, W) images to ``size`` (anti-aliased when shrinking); a no-op at the same size.

    Used where a decoder's output resolution differs from its input's (LivePortrait renders 512 from 256), so
    targets are compared at the prediction's resolution.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
