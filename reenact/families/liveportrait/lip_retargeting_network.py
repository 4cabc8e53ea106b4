"""R_lip — LivePortrait's lip retargeting network.

From the source keypoints x_s (B, K, 3) and the lip condition (the source's mouth-openness ratio and the requested
one, (B, 2)) it predicts a keypoint offset (K x 3) that sets the mouth's openness: a requested ratio of 0 closes the
lips (``lip_normalize``). At the released sizes (K = 21, hidden 128, 128, 64) it is 65 -> 63 with 37,311 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reenact.families.liveportrait.retargeting_mlp import RetargetingMLP

LIP_CONDITION = 2  # c_s,lip, c_d,lip


class LipRetargetingNetwork(RetargetingMLP):
    """R_lip: x_s (B, K, 3), condition (B, 2) -> offset (B, K, 3), zero at initialisation."""

    def __init__(self, num_kp: int = 21, hidden_sizes: Sequence[int] = (128, 128, 64)) -> None:
        super().__init__(3 * num_kp + LIP_CONDITION, hidden_sizes, 3 * num_kp)
        self.num_kp = num_kp

    def delta(self, kp_source: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        batch = kp_source.shape[0]
        return self(torch.cat([kp_source.reshape(batch, -1), condition], dim=1)).reshape(batch, self.num_kp, 3)
