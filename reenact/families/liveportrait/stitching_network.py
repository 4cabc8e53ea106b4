"""S — LivePortrait's stitching network.

From the source keypoints x_s and the driving keypoints x_d (B, K, 3) it predicts a correction of x_d: a per-keypoint
offset (K x 3) and a shift of every keypoint's (x, y) (2), so that the animated crop, pasted back into the full
source image, lines up with it at the shoulders and the crop border. At the released sizes (K = 21, hidden
128, 128, 64) it is 126 -> 65 with 45,249 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reenact.families.liveportrait.retargeting_mlp import RetargetingMLP


class StitchingNetwork(RetargetingMLP):
    """S: (x_s, x_d) each (B, K, 3) -> offset (B, K, 3) and (x, y) shift (B, 2), zero at initialisation."""

    def __init__(self, num_kp: int = 21, hidden_sizes: Sequence[int] = (128, 128, 64)) -> None:
        super().__init__(2 * 3 * num_kp, hidden_sizes, 3 * num_kp + 2)
        self.num_kp = num_kp

    def delta(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = kp_driving.shape[0]
        features = torch.cat([kp_source.reshape(batch, -1), kp_driving.reshape(batch, -1)], dim=1)  # (B, 6K)
        out = self(features)  # (B, 3K + 2)
        return out[:, : 3 * self.num_kp].reshape(batch, self.num_kp, 3), out[:, 3 * self.num_kp :]

    def stitch(self, kp_source: torch.Tensor, kp_driving: torch.Tensor, weight: torch.Tensor | float = 1.0
               ) -> torch.Tensor:
        """x_d + w * (offset + (shift_x, shift_y, 0)); w (B, 1) or a number, 0 leaves x_d as it is."""
        offset, shift = self.delta(kp_source, kp_driving)
        shift_3d = torch.cat([shift, torch.zeros_like(shift[:, :1])], dim=1)[:, None]  # (B, 1, 3)
        weight = torch.as_tensor(weight, dtype=kp_driving.dtype, device=kp_driving.device).reshape(-1, 1, 1)
        return kp_driving + weight * (offset + shift_3d)
