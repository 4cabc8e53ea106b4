"""The first-order motion model (FOMM): keypoint detector + occlusion-aware generator, as one family network.

Motion is FOMM's keypoints: ``value`` (B, K, 2) in normalised [-1, 1] (x, y) coordinates and, when the detector
estimates them, ``jacobian`` (B, K, 2, 2) local affine transforms. The discriminator is not part of the network;
the task builds it when a loss term needs one.

With ``refinement`` (a :class:`reenact.families.correlation.refiner.CorrelationRefiner`; off in every preset unless
``model/refinement=correlation`` is chosen) a frame's motion also holds its feature field ``features`` (B, C, g, g),
and the dense motion's flow is only the start w_0 of K correlation refinement steps toward the driving frame's
field. Relative motion has no feature field of its own (the driving face's geometry is what relative motion
leaves out), so relative animation renders with the keypoint flow alone.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.families.base import ModelOutput, Motion, ReenactmentFamily, register_family
from reenact.families.correlation.refiner import CorrelationRefiner
from reenact.families.fomm.generator import OcclusionAwareGenerator, Refine
from reenact.families.fomm.keypoint_detector import KPDetector
from reenact.families.fomm.relative_motion import normalize_kp

# What animation keeps of the detector's output per driving frame (the heatmaps are large and unused).
ANIMATION_KEYS = ("value", "jacobian")
FEATURES = "features"  # with refinement: the frame's feature field (B, C, g, g)


@register_family
class FirstOrderMotionModel(ReenactmentFamily):
    """source, driving (B, C, H, W) in [0, 1] -> prediction of driving plus keypoints, flow and masks."""

    family = "fomm"
    transfer_modes = ("relative", "absolute")
    transfer_options = {"adapt_movement_scale": False}
    renders_2d_flow = True
    converter = "reenact.families.fomm.convert:convert_fomm"
    converter_preset = "fomm_vox256"

    def __init__(
        self, kp_detector: KPDetector, generator: OcclusionAwareGenerator, refinement: CorrelationRefiner | None = None
    ) -> None:
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
        self.refinement = refinement
        self.animation_keys = ANIMATION_KEYS + ((FEATURES,) if refinement is not None else ())
        # without a dense motion network the generator decodes unwarped features: no flow to draw
        self.renders_2d_flow = generator.dense_motion_network is not None

    def encode_motion(self, frames: torch.Tensor) -> Motion:
        """Keypoints {"value" (B, K, 2), "jacobian" (B, K, 2, 2) if estimated, "heatmap"}, and with refinement
        the frame's feature field "features"."""
        motion = self.kp_detector(frames)
        if self.refinement is not None:
            motion = {**motion, FEATURES: self.refinement.encode(frames)}
        return motion

    def refine_toward(self, driving_motion: Motion) -> Refine | None:
        """The generator's refinement step toward the driving frame's field; None without refinement or field."""
        if self.refinement is None or FEATURES not in driving_motion:
            return None
        refinement, target = self.refinement, driving_motion[FEATURES]
        return lambda source, flow: refinement(source, target, initial=flow)

    def render(self, source: torch.Tensor, source_motion: Motion, driving_motion: Motion) -> ModelOutput:
        """The generator alone: the source moved from its keypoints to ``driving_motion``'s (with refinement, the
        flow then refined toward the driving frame's feature field)."""
        generated = self.generator(source, kp_driving=driving_motion, kp_source=source_motion,
                                   refine=self.refine_toward(driving_motion))
        return {
            "warped_features": generated.get("warped_features"),  # (B, C, g, g) with refinement, else None
            "target_features": generated.get("target_features"),
            "prediction": generated["prediction"],  # (B, C, H, W)
            "deformation": generated.get("deformation"),  # (B, h, w, 2) or None without dense motion
            "occlusion_map": generated.get("occlusion_map"),  # (B, 1, h, w) or None
            "deformed": generated.get("deformed"),  # (B, C, H, W) or None
            "mask": generated.get("mask"),  # (B, K+1, h, w) or None
            "sparse_deformed": generated.get("sparse_deformed"),  # (B, K+1, C, h, w) or None
        }

    def encode_source(self, source: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator's encoder features at every level ("level0" (B, be, H, W), ...) and the image, which the
        dense motion network warps."""
        features = self.generator.encode(source)
        return {"image": source, **{f"level{n}": feature for n, feature in enumerate(features)}}

    def render_encoded(
        self, encoding: dict[str, torch.Tensor], source_motion: Motion, driving_motion: Motion
    ) -> torch.Tensor:
        features = [encoding[f"level{n}"] for n in range(len(self.generator.down_blocks) + 1)]
        generated = self.generator.decode(encoding["image"], features, driving_motion, source_motion,
                                          self.refine_toward(driving_motion))
        return generated["prediction"]  # (B, C, H, W)

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """FOMM trains the detector and the generator with separate optimisers."""
        refinement = list(self.refinement.parameters()) if self.refinement is not None else []
        return {
            "kp_detector": list(self.kp_detector.parameters()),
            "generator": list(self.generator.parameters()) + refinement,
        }

    def compact_motion(self, motion: Motion) -> Motion:
        return {k: motion[k].detach().float() for k in self.animation_keys if k in motion}

    def transfer_motion(
        self,
        source_motion: Motion,
        driving_motion: Motion,
        reference_motion: Motion,
        mode: str = "relative",
        adapt_movement_scale: bool = False,
    ) -> Motion:
        """relative: FOMM's relative motion (:func:`normalize_kp`): the source keypoints move by the driving
        keypoints' displacement since the reference frame, Jacobians become relative, and with
        ``adapt_movement_scale`` the displacement is scaled by sqrt(hull area(source) / hull area(reference)).
        absolute: the driving keypoints as they are (the driving face's shape comes along), with refinement also
        the driving frames' feature fields; relative motion has none (the keypoint flow is rendered unrefined)."""
        if mode == "absolute":
            return {k: v for k, v in driving_motion.items() if k in self.animation_keys}
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
        if self.refinement is not None:
            rows.append(("refinement", self.refinement))
        return rows

    def keypoints_2d(self, motion: Motion | None) -> torch.Tensor | None:
        return None if motion is None else motion["value"]

    def equivariance_keypoints(self, motion: Motion) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The keypoints and, when the detector estimates them, their Jacobians."""
        return motion["value"], motion.get("jacobian")
