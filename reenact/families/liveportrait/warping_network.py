"""W — the warping network of a LivePortrait-style model (LivePortrait's WarpingNetwork, module W).

Deforms the source appearance volume f_s (B, C, D, H, W) from F into the driving pose given 3D keypoints
of source and driving: a 3D dense motion network predicts a backward deformation (B, D, H, W, 3) and an
optional occlusion map (B, 1, H, W); the volume is resampled, depth is folded into channels
(B, C*D, H, W), and ``third`` (ConvNormActivation2d with LeakyReLU) and ``fourth`` (1x1 conv) project it to the 2D
feature the decoder G renders; the occlusion map multiplies the result.

At LivePortrait's released sizes (21 kp, block_expansion 64, max_features 512, 2 down blocks,
reshape_channel 32, occlusion on, dense motion (32, 5 blocks, 1024, compress 4, depth 16)) this network has
45,529,829 parameters, 44,283,621 of them in the dense motion network.

Sampling convention: ``dense_motion_params.align_corners`` (default True, the project's convention, see
:mod:`reenact.layers.geometry`) makes the identity grid sample the volume exactly, in the dense motion network
and in ``deform_input`` alike. False reproduces the released LivePortrait code, whose weights were trained
with ``grid_sample(align_corners=False)`` on the same corner-aligned grid; converted official checkpoints
(``python -m reenact.convert liveportrait``) set it, because with True those weights would see a shift of up
to half a voxel (largest along the 16-voxel depth axis).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reenact.families.liveportrait.blocks import ConvNormActivation2d
from reenact.families.liveportrait.dense_motion_3d import DenseMotionNetwork3d, DenseMotionParams, sample_volume


class WarpingNetwork(nn.Module):
    """W: (feature_3d (B, C, D, H, W), kp_driving (B, K, 3), kp_source (B, K, 3)) ->
    {"out": (B, C_out, H*upscale, W*upscale), "occlusion_map": (B, 1, H*upscale, W*upscale) or None,
    "deformation": (B, D, H, W, 3)}, with C = reshape_channel, D = dense_motion_params.reshape_depth and
    C_out = min(max_features, block_expansion * 2**num_down_blocks) (256 at the defaults).

    Resolving a channel mismatch of the specified defaults: ``max_features=256`` as a default yet feeding the
    collapsed volume, C * D = 32 * 16 = 512 channels, into a ``third`` block whose input width is
    ``max_features`` (LivePortrait sets 512 there). Here ``third`` takes its input width from the volume
    itself (``reshape_channel * reshape_depth``) and ``max_features`` caps the 2D feature width, as
    "maximum feature channels" does in the other networks. The specified defaults therefore build a network
    that runs, and LivePortrait's max_features=512 builds the same network with the same parameter count.

    ``dense_motion_params`` is a :class:`DenseMotionParams` or a mapping (Hydra passes a DictConfig) with
    keys block_expansion, num_blocks, max_features, compress, reshape_depth, kp_variance, mask_kernel_size,
    align_corners (the grid_sample convention of both warps; it lives here, not in W's signature, which
    mirrors the specification's);
    unknown keys raise, missing keys take the specified defaults. ``estimate_occlusion_map=False`` gives
    ``occlusion_map=None`` and no masking; ``flag_use_occlusion_map=False`` keeps the map in the output but
    does not multiply ``out`` by it. ``upscale`` > 1 bilinearly enlarges ``out`` and the occlusion map by
    that integer factor (1, LivePortrait's setting, leaves them at the volume resolution).
    """

    def __init__(
        self,
        num_kp: int = 15,
        block_expansion: int = 64,
        max_features: int = 256,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        estimate_occlusion_map: bool = False,
        dense_motion_params: DenseMotionParams | Mapping[str, Any] | None = None,
        upscale: int = 1,
        flag_use_occlusion_map: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1:
            raise ValueError(f"WarpingNetwork: upscale must be an integer >= 1, got {upscale!r}")
        params = DenseMotionParams.from_any(dense_motion_params)
        self.dense_motion_params = params
        self.num_kp = num_kp
        self.reshape_channel = reshape_channel
        self.reshape_depth = params.reshape_depth
        self.upscale = upscale
        self.flag_use_occlusion_map = flag_use_occlusion_map
        self.align_corners = params.align_corners
        self.out_channels = min(max_features, block_expansion * (2**num_down_blocks))

        self.dense_motion_network = DenseMotionNetwork3d(
            block_expansion=params.block_expansion,
            num_blocks=params.num_blocks,
            max_features=params.max_features,
            num_kp=num_kp,
            feature_channel=reshape_channel,
            reshape_depth=params.reshape_depth,
            compress=params.compress,
            estimate_occlusion_map=estimate_occlusion_map,
            kp_variance=params.kp_variance,
            mask_kernel_size=params.mask_kernel_size,
            align_corners=params.align_corners,
        )
        self.third = ConvNormActivation2d(
            reshape_channel * params.reshape_depth, self.out_channels, kernel_size=3, padding=1, lrelu=True
        )
        self.fourth = nn.Conv2d(self.out_channels, self.out_channels, kernel_size=1, stride=1)

    @staticmethod
    def deform_input(inp: torch.Tensor, deformation: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
        """Trilinearly sample ``inp`` (B, C, D, H, W) at ``deformation`` (B, D, H, W, 3), normalised (x, y, z)
        coordinates in [-1, 1] (zero padding outside; ``align_corners`` as in ``dense_motion_params``).
        Returns (B, C, D, H, W)."""
        return sample_volume(inp, deformation, align_corners)

    def forward(
        self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        if feature_3d.dim() != 5 or feature_3d.shape[1:3] != (self.reshape_channel, self.reshape_depth):
            raise ValueError(
                f"WarpingNetwork: feature_3d must be (B, {self.reshape_channel}, {self.reshape_depth}, "
                f"H, W), got {tuple(feature_3d.shape)}"
            )
        dense_motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        deformation = dense_motion["deformation"]  # (B, D, H, W, 3)
        occlusion_map = dense_motion["occlusion_map"]  # (B, 1, H, W) or None

        out = self.deform_input(feature_3d, deformation, self.align_corners)  # (B, C, D, H, W)
        bs, c, d, h, w = out.shape
        out = out.reshape(bs, c * d, h, w)  # depth folded into channels: (B, C*D, H, W)
        out = self.fourth(self.third(out))  # (B, C_out, H, W)
        if self.flag_use_occlusion_map and occlusion_map is not None:
            out = out * occlusion_map

        if self.upscale > 1:
            out = F.interpolate(out, scale_factor=self.upscale, mode="bilinear", align_corners=True)
            if occlusion_map is not None:
                occlusion_map = F.interpolate(
                    occlusion_map, scale_factor=self.upscale, mode="bilinear", align_corners=True
                )
        return {"out": out, "occlusion_map": occlusion_map, "deformation": deformation}
