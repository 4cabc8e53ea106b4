"""The first-order motion model (FOMM): keypoint detector + occlusion-aware generator, as one module.

This is the object the family-agnostic training task drives: ``forward`` reconstructs the driving frame
from the source frame, ``detect``/``generate`` split that for animation with externally normalised
keypoints, and ``optimizer_groups`` names the parameter groups that get their own learning rates.
The discriminator is not part of it; the task builds it separately when the GAN loss is on.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.models.generator import OcclusionAwareGenerator
from reenact.models.keypoint_detector import KPDetector


class FirstOrderMotionModel(nn.Module):
    """source, driving (B, C, H, W) in [0, 1] -> prediction of driving plus keypoints, flow and masks."""

    family = "fomm"

    def __init__(self, kp_detector: KPDetector, generator: OcclusionAwareGenerator) -> None:
        super().__init__()
        if kp_detector.num_kp != generator.num_kp:
            raise ValueError(
                f"kp_detector.num_kp={kp_detector.num_kp} differs from generator.num_kp={generator.num_kp}"
            )
        if kp_detector.num_channels != generator.num_channels:
            raise ValueError(
                f"kp_detector.num_channels={kp_detector.num_channels} differs from "
                f"generator.num_channels={generator.num_channels}"
            )
        self.kp_detector = kp_detector
        self.generator = generator

    def detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Keypoint dict {"value" (B, K, 2), "jacobian" (B, K, 2, 2) if estimated, "heatmap"}."""
        return self.kp_detector(image)

    def generate(self, source: torch.Tensor, kp_source: dict, kp_driving: dict) -> dict[str, torch.Tensor]:
        """Generator only: render the source moved from kp_source to kp_driving."""
        return self.generator(source, kp_driving=kp_driving, kp_source=kp_source)

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> dict:
        if source.shape != driving.shape:
            raise ValueError(f"source {tuple(source.shape)} and driving {tuple(driving.shape)} shapes differ")
        # two separate passes (not one concatenated batch) so BatchNorm statistics match the reference
        kp_source = self.detect(source)
        kp_driving = self.detect(driving)
        generated = self.generate(source, kp_source=kp_source, kp_driving=kp_driving)
        return {
            "prediction": generated["prediction"],  # (B, C, H, W)
            "kp_source": kp_source,
            "kp_driving": kp_driving,
            "deformation": generated.get("deformation"),  # (B, h, w, 2) or None without dense motion
            "occlusion_map": generated.get("occlusion_map"),  # (B, 1, h, w) or None
            "deformed": generated.get("deformed"),  # (B, C, H, W) or None
            "mask": generated.get("mask"),  # (B, K+1, h, w) or None
            "sparse_deformed": generated.get("sparse_deformed"),  # (B, K+1, C, h, w) or None
        }

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per optimiser group; FOMM trains the detector and generator with separate Adams."""
        return {
            "kp_detector": list(self.kp_detector.parameters()),
            "generator": list(self.generator.parameters()),
        }

    @staticmethod
    def keypoints_2d(kp: dict) -> torch.Tensor:
        """(B, K, 2) keypoints in normalised [-1, 1] (x, y) coordinates, for drawing."""
        return kp["value"]
