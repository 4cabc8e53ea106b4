"""FOMM dense motion network: keypoints -> dense backward flow T_{S<-D} and occlusion map O.

For each keypoint k the first-order (Taylor) approximation around it maps a driving-frame coordinate z to
    T_k(z) = kp_s + J_s J_d^{-1} (z - kp_d),
and a (K+1)-th part, the identity, models the static background. An Hourglass looks at the Gaussian heatmap
differences and the source warped by every part, and predicts soft masks that blend the K+1 sparse motions
into one dense flow, plus a sigmoid occlusion map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.layers.blocks import Hourglass
from reenact.layers.geometry import AntiAliasInterpolation2d, kp2gaussian, make_coordinate_grid, warp


def inverse_2x2(matrices: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of (..., 2, 2) matrices, computed in float32 even under autocast.

    torch.inverse is a numerical hotspot in FOMM: half precision loses the determinant, and the batched
    LAPACK/cuBLAS call is slower than four multiplications. Singular inputs give inf/nan rather than raise.
    """
    device_type = matrices.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        m = matrices.float()
        a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
        det = a * d - b * c  # (...)
        inv = torch.stack([torch.stack([d, -b], dim=-1), torch.stack([-c, a], dim=-1)], dim=-2)
        return inv / det[..., None, None]


class DenseMotionNetwork(nn.Module):
    """Predicts the dense deformation (B, h, w, 2) and occlusion (B, 1, h, w) at scale_factor x input size."""

    def __init__(
        self,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        num_channels: int = 3,
        estimate_occlusion_map: bool = True,
        scale_factor: float = 0.25,
        kp_variance: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.num_channels = num_channels
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.estimate_occlusion_map = estimate_occlusion_map

        # per part: 1 heatmap-difference channel + the source warped by that part
        self.hourglass = Hourglass(
            block_expansion,
            in_features=(num_kp + 1) * (num_channels + 1),
            num_blocks=num_blocks,
            max_features=max_features,
        )
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )
        self.down = AntiAliasInterpolation2d(num_channels, scale_factor) if scale_factor != 1 else None

    def create_heatmap_representations(
        self, spatial_size: tuple[int, int], kp_driving: dict, kp_source: dict
    ) -> torch.Tensor:
        """Gaussian(driving) - Gaussian(source) per keypoint, plus a zero background; (B, K+1, 1, h, w)."""
        heatmap = kp2gaussian(kp_driving["value"], spatial_size, self.kp_variance) - kp2gaussian(
            kp_source["value"], spatial_size, self.kp_variance
        )  # (B, K, h, w)
        background = torch.zeros_like(heatmap[:, :1])  # (B, 1, h, w)
        return torch.cat([background, heatmap], dim=1).unsqueeze(2)

    def create_sparse_motions(
        self, spatial_size: tuple[int, int], kp_driving: dict, kp_source: dict
    ) -> torch.Tensor:
        """Backward grids of the K+1 parts, in float32; (B, K+1, h, w, 2) with (x, y) last."""
        with torch.autocast(device_type=kp_driving["value"].device.type, enabled=False):
            kp_d = kp_driving["value"].float()  # (B, K, 2)
            kp_s = kp_source["value"].float()
            b, k, _ = kp_d.shape
            identity = make_coordinate_grid(spatial_size, torch.float32, kp_d.device)  # (h, w, 2)
            offset = identity.view(1, 1, *spatial_size, 2) - kp_d.view(b, k, 1, 1, 2)  # (B, K, h, w, 2)
            if "jacobian" in kp_driving and "jacobian" in kp_source:
                # J_s J_d^{-1} (z - kp_d): first-order motion around each keypoint
                jacobian = kp_source["jacobian"].float() @ inverse_2x2(kp_driving["jacobian"])  # (B, K, 2, 2)
                offset = (offset.view(b, k, -1, 2) @ jacobian.transpose(-1, -2)).view(b, k, *spatial_size, 2)
            driving_to_source = offset + kp_s.view(b, k, 1, 1, 2)  # (B, K, h, w, 2)
            background = identity.expand(b, 1, *spatial_size, 2)
            return torch.cat([background, driving_to_source], dim=1)

    def create_deformed_source_image(
        self, source_image: torch.Tensor, sparse_motions: torch.Tensor
    ) -> torch.Tensor:
        """Source warped by every part; (B, C, h, w) x (B, K+1, h, w, 2) -> (B, K+1, C, h, w)."""
        b, parts, h, w, _ = sparse_motions.shape
        repeated = source_image.unsqueeze(1).expand(b, parts, *source_image.shape[1:])
        repeated = repeated.reshape(b * parts, *source_image.shape[1:])  # (B*(K+1), C, h, w)
        deformed = warp(repeated, sparse_motions.reshape(b * parts, h, w, 2))
        return deformed.view(b, parts, -1, h, w)

    def forward(
        self, source_image: torch.Tensor, kp_driving: dict, kp_source: dict
    ) -> dict[str, torch.Tensor]:
        for name, kp in (("kp_driving", kp_driving), ("kp_source", kp_source)):
            if kp["value"].shape[1] != self.num_kp:
                raise ValueError(
                    f"DenseMotionNetwork built for num_kp={self.num_kp}, "
                    f"{name}['value'] has shape {tuple(kp['value'].shape)}"
                )
        if self.down is not None:
            source_image = self.down(source_image)
        b, _, h, w = source_image.shape

        heatmaps = self.create_heatmap_representations((h, w), kp_driving, kp_source)  # (B, K+1, 1, h, w)
        sparse_motion = self.create_sparse_motions((h, w), kp_driving, kp_source)  # (B, K+1, h, w, 2)
        sparse_deformed = self.create_deformed_source_image(source_image, sparse_motion)  # (B, K+1, C, h, w)
        hourglass_in = torch.cat([heatmaps.to(sparse_deformed.dtype), sparse_deformed], dim=2).view(
            b, -1, h, w
        )

        features = self.hourglass(hourglass_in)  # (B, out_filters, h, w)
        # blend in float32: the flow must stay sub-pixel accurate under bf16/fp16 autocast
        mask = F.softmax(self.mask(features).float(), dim=1)  # (B, K+1, h, w)
        deformation = (sparse_motion * mask.unsqueeze(-1)).sum(dim=1)  # (B, h, w, 2)

        out = {"sparse_deformed": sparse_deformed, "mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(features))  # (B, 1, h, w)
        return out
