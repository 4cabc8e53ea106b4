"""FOMM keypoint detector: image -> K keypoints and their local 2x2 Jacobians (the paper's T_{X<-R}).

An Hourglass on an anti-aliased downsampled image predicts one heatmap per keypoint; a spatial softmax turns
each into a probability map whose expected coordinate (soft-argmax) is the keypoint. The Jacobian head
predicts four maps per keypoint (or four shared maps) that are averaged under the same probability map.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.layers.blocks import Hourglass
from reenact.layers.geometry import AntiAliasInterpolation2d, heatmap_to_keypoints, spatial_softmax


class KPDetector(nn.Module):
    """Unsupervised keypoint detector; returns {"value", "jacobian", "heatmap"} in normalised coordinates."""

    def __init__(
        self,
        num_kp: int = 10,
        num_channels: int = 3,
        block_expansion: int = 32,
        max_features: int = 1024,
        num_blocks: int = 5,
        temperature: float = 0.1,
        estimate_jacobian: bool = True,
        scale_factor: float = 0.25,
        single_jacobian_map: bool = False,
        pad: int = 0,
    ) -> None:
        super().__init__()
        if num_kp < 1:
            raise ValueError(f"KPDetector num_kp must be >= 1, got {num_kp}")
        if temperature <= 0:
            raise ValueError(f"KPDetector temperature must be > 0, got {temperature}")
        self.num_kp = num_kp
        self.num_channels = num_channels
        self.temperature = temperature
        self.scale_factor = scale_factor
        self.estimate_jacobian = estimate_jacobian

        self.predictor = Hourglass(
            block_expansion, in_features=num_channels, num_blocks=num_blocks, max_features=max_features
        )
        # padding 0 (the reference) shrinks a 64x64 feature map to a 58x58 heatmap
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=7, padding=pad)

        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(
                self.predictor.out_filters, 4 * self.num_jacobian_maps, kernel_size=7, padding=pad
            )
            # start every Jacobian at the identity so early training behaves like zero-order motion
            nn.init.zeros_(self.jacobian.weight)
            with torch.no_grad():
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(self.num_jacobian_maps))
        else:
            self.num_jacobian_maps = 0
            self.jacobian = None

        self.down = AntiAliasInterpolation2d(num_channels, scale_factor) if scale_factor != 1 else None

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != self.num_channels:
            raise ValueError(
                f"KPDetector expects images (B, {self.num_channels}, H, W), got {tuple(image.shape)}"
            )
        x = self.down(image) if self.down is not None else image  # (B, C, h, w)
        features = self.predictor(x)  # (B, out_filters, h, w)
        # softmax and expectations in float32 even under autocast: bf16 keypoints would be off by
        # about half a pixel at 256x256, and the equivariance loss compares them directly
        logits = self.kp(features).float()  # (B, K, h', w'); h' = h - 6 + 2*pad
        heatmap = spatial_softmax(logits, self.temperature)  # sums to 1 over (h', w')
        out = {"value": heatmap_to_keypoints(heatmap), "heatmap": heatmap}  # value (B, K, 2) as (x, y)

        if self.jacobian is not None:
            b, k, h, w = heatmap.shape
            maps = (
                self.jacobian(features).float().view(b, self.num_jacobian_maps, 4, h, w)
            )  # (B, K|1, 4, h', w')
            # heatmap-weighted average of each map; a single shared map broadcasts over the K heatmaps
            jacobian = (maps * heatmap.unsqueeze(2)).flatten(3).sum(-1)  # (B, K, 4)
            out["jacobian"] = jacobian.view(b, k, 2, 2)
        return out
