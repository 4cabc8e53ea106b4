"""R_eyes — LivePortrait's eye retargeting network.

From the source keypoints x_s (B, K, 3) and the eye condition (source left- and right-eye openness ratios and the
requested ratio, (B, 3)) it predicts a keypoint offset (K x 3) that opens or closes the source's eyes to the
requested ratio. At the released sizes (K = 21, hidden 256, 256, 128, 128, 64) it is 66 -> 63 with 144,703
parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reenact.families.liveportrait.retargeting_mlp import RetargetingMLP

EYE_CONDITION = 3  # c_s,left, c_s,right, c_d


class EyeRetargetingNetwork(RetargetingMLP):
    """R_eyes: x_s (B, K, 3), condition (B, 3) -> offset (B, K, 3), zero at initialisation."""

    def __init__(self, num_kp: int = 21, hidden_sizes: Sequence[int] = (256, 256, 128, 128, 64)) -> None:
        super().__init__(3 * num_kp + EYE_CONDITION, hidden_sizes, 3 * num_kp)
        self.num_kp = num_kp

    def delta(self, kp_source: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        batch = kp_source.shape[0]
        return self(torch.cat([kp_source.reshape(batch, -1), condition], dim=1)).reshape(batch, self.num_kp, 3)
