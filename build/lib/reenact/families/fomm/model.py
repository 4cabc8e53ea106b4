"""The first-order motion model (FOMM): keypoint detector + occlusion-aware generator, as one family network.

Motion is FOMM's keypoints: ``value`` (B, K, 2) in normalised [-1, 1] (x, y) coordinates and, when the detector
estimates them, ``jacobian`` (B, K, 2, 2) local affine transforms. The discriminator is not part of the network;
the task builds it when a loss term needs one.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.families.base import ModelOutput, Motion, ReenactmentFamily, register_family
from reenact.families.fomm.generator import OcclusionAwareGenerator
from reenact.families.fomm.keypoint_detector import KPDetector
from reenact.families.fomm.relative_motion import normalize_kp

# What animation keeps of the detector's output per driving frame (the heatmaps are large and unused).
ANIMATION_KEYS = ("value", "jacobian")


@register_family
class FirstOrderMotionModel(ReenactmentFamily):
    """source, driving (B, C, H, W) in [0, 1] -> prediction of driving plus keypoints, flow and masks."""

    family = "fomm"
    converter = "reenact.families.fomm.convert:convert_fomm"
    converter_preset = "fomm_vox256"

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

    def encode_motion(self, frames: torch.Tensor) -> Motion:
        """Keypoints {"value" (B, K, 2), "jacobian" (B, K, 2, 2) if estimated, "heatmap"}."""
        return self.kp_detector(frames)

    def render(self, source: torch.Tensor, source_motion: Motion, driving_motion: Motion) -> ModelOutput:
        """The generator alone: the source moved from its keypoints to ``driving_motion``'s."""
        generated = self.generator(source, kp_driving=driving_motion, kp_source=source_motion)
        return {
            "prediction": generated["prediction"],  # (B, C, H, W)
            "deformation": generated.get("deformation"),  # (B, h, w, 2) or None without dense motion
            "occlusion_map": generated.get("occlusion_map"),  # (B, 1, h, w) or None
            "deformed": generated.get("deformed"),  # (B, C, H, W) or None
            "mask": generated.get("mask"),  # (B, K+1, h, w) or None
            "sparse_deformed": generated.get("sparse_deformed"),  # (B, K+1, C, h, w) or None
        }

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> ModelOutput:
        if source.shape != driving.shape:
            raise ValueError(f"source {tuple(source.shape)} and driving {tuple(driving.shape)} shapes differ")
        # two separate passes (not one concatenated batch) so BatchNorm statistics match the original code's
        motion_source = self.encode_motion(source)
        motion_driving = self.encode_motion(driving)
        output = self.render(source, motion_source, motion_driving)
        output["motion_source"] = motion_source
        output["motion_driving"] = motion_driving
        return output

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """FOMM trains the detector and the generator with separate optimisers."""
        return {
            "kp_detector": list(self.kp_detector.parameters()),
            "generator": list(self.generator.parameters()),
        }

    def compact_motion(self, motion: Motion) -> Motion:
        return {k: motion[k].detach().float() for k in ANIMATION_KEYS if k in motion}

    def transfer_motion(
        self,
        source_motion: Motion,
        driving_motion: Motion,
        reference_motion: Motion,
        relative: bool = True,
        adapt_movement_scale: bool = False,
    ) -> Motion:
        """relative: FOMM's relative motion (:func:`normalize_kp`): the source keypoints move by the driving
        keypoints' displacement since the reference frame, Jacobians become relative, and with
        ``adapt_movement_scale`` the displacement is scaled by sqrt(hull area(source) / hull area(reference)).
        absolute: the driving keypoints as they are (the driving face's shape comes along)."""
        if not relative:
            return {k: v for k, v in driving_motion.items() if k in ANIMATION_KEYS}
        moved = normalize_kp(  # batch-1 source and reference broadcast against the driving batch
            kp_source=source_motion,
            kp_driving=driving_motion,
            kp_driving_initial=reference_motion,
            adapt_movement_scale=adapt_movement_scale,
            use_relative_movement=True,
            use_relative_jacobian=True,
        )
        return {k: v for k, v in moved.items() if k in ANIMATION_KEYS}

    def parameter_report(self) -> list[tuple[str, nn.Module]]:
        rows = [("kp_detector", self.kp_detector), ("generator", self.generator)]
        if self.generator.dense_motion_network is not None:
            rows.append(("generator.dense_motion_network", self.generator.dense_motion_network))
        return rows

    def keypoints_2d(self, motion: Motion | None) -> torch.Tensor | None:
        return None if motion is None else motion["value"]
