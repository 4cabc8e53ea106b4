"""M — the motion extractor of a LivePortrait-style model.

One ConvNeXt-V2 backbone with linear heads predicts everything the keypoint transform needs from one image:
canonical implicit keypoints x_c (K x 3), expression deformations delta (K x 3), head pose as three
``num_bins``-way classifications (pitch, yaw, roll; converted to degrees by a softmax expectation),
translation t (3) and scale s (1). At LivePortrait's released sizes (21 keypoints, ConvNeXt-V2-Tiny, 66 bins)
it has 28,118,728 parameters (27,866,496 backbone + 252,232 heads).
Naming: the backbone is ``detector`` and the heads ``fc_kp``, ``fc_exp``, ``fc_pitch``, ``fc_yaw``,
``fc_roll``, ``fc_t``, ``fc_scale``; the released checkpoint stores the heads under ``detector.fc_*``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reenact.families.liveportrait.convnextv2 import ConvNeXtV2
from reenact.families.liveportrait.keypoint_transform import bins_to_degrees


class MotionExtractor(nn.Module):
    """M: image (B, 3, H, W) in [0, 1] -> motion dict.

    Returned keys: ``kp_canonical`` (B, K, 3), ``exp`` (B, K, 3), ``pitch_bins``/``yaw_bins``/``roll_bins``
    (B, num_bins) logits, ``pitch``/``yaw``/``roll`` (B,) degrees, ``t`` (B, 3), ``scale`` (B, 1).
    H and W must be divisible by 4 * 2**(len(depths) - 1) (32 for four stages).
    """

    def __init__(
        self,
        num_kp: int = 21,
        num_bins: int = 66,
        image_channel: int = 3,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.num_bins = num_bins
        self.detector = ConvNeXtV2(
            in_chans=image_channel, depths=depths, dims=dims, drop_path_rate=drop_path_rate
        )
        feat = self.detector.out_dim
        self.fc_kp = nn.Linear(feat, num_kp * 3)
        self.fc_exp = nn.Linear(feat, num_kp * 3)
        self.fc_pitch = nn.Linear(feat, num_bins)
        self.fc_yaw = nn.Linear(feat, num_bins)
        self.fc_roll = nn.Linear(feat, num_bins)
        self.fc_t = nn.Linear(feat, 3)
        self.fc_scale = nn.Linear(feat, 1)
        for head in (
            self.fc_kp,
            self.fc_exp,
            self.fc_pitch,
            self.fc_yaw,
            self.fc_roll,
            self.fc_t,
            self.fc_scale,
        ):
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
        # Scale multiplies every keypoint: starting at 1 instead of 0 keeps the keypoints spread out from the
        # first step, so the dense motion network sees distinct keypoints immediately.
        nn.init.ones_(self.fc_scale.bias)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.detector(image)  # (B, F)
        bs = feat.shape[0]
        pitch_bins, yaw_bins, roll_bins = self.fc_pitch(feat), self.fc_yaw(feat), self.fc_roll(feat)  # (B, n)
        return {
            "kp_canonical": self.fc_kp(feat).view(bs, self.num_kp, 3),
            "exp": self.fc_exp(feat).view(bs, self.num_kp, 3),
            "pitch_bins": pitch_bins,
            "yaw_bins": yaw_bins,
            "roll_bins": roll_bins,
            "pitch": bins_to_degrees(pitch_bins),
            "yaw": bins_to_degrees(yaw_bins),
            "roll": bins_to_degrees(roll_bins),
            "t": self.fc_t(feat),  # (B, 3)
            "scale": self.fc_scale(feat),  # (B, 1)
        }
