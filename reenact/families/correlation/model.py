"""The correlation family: keypoint-free reenactment by learned correlation warping (Liu et al., "Learning to
Warp for Style Transfer", CVPR 2021, module D).

Motion is a frame's feature field: ``features`` (B, C, g, g), each position L2-normalised. Rendering compares the
source's field with the driving frame's (the correlation volume M), lets the warp network turn M into a warp field,
refines it K times (warp the source, re-extract its features, recompute M, add the increment), estimates occlusion
from the final M and decodes the source's warped encoder features. The driving frame reaches the prediction only
through M. There are no keypoints (``keypoints_2d`` is None: nothing draws or conditions on points) and no relative
motion: animation drives with the driving frames' own fields (``transfer=absolute``, its only mode).
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.families.base import ModelOutput, Motion, ReenactmentFamily, register_family
from reenact.families.correlation.generator import WarpingGenerator
from reenact.families.correlation.occlusion import OcclusionHead
from reenact.families.correlation.refiner import CorrelationRefiner
from reenact.layers.geometry import warp

FEATURES = "features"  # the motion entry: a frame's L2-normalised feature field (B, C, g, g)


@register_family
class CorrelationWarpModel(ReenactmentFamily):
    """source, driving (B, 3, H, W) in [0, 1] -> prediction of driving, the warp field, occlusion and the fields."""

    family = "correlation"
    transfer_modes = ("absolute",)  # a frame's field carries its geometry: there is no relative form
    renders_2d_flow = True

    def __init__(self, refiner: CorrelationRefiner, generator: WarpingGenerator, occlusion: OcclusionHead) -> None:
        super().__init__()
        self.refiner = refiner
        self.occlusion = occlusion
        self.generator = generator

    def encode_motion(self, frames: torch.Tensor) -> Motion:
        return {FEATURES: self.refiner.encode(frames)}

    def render(self, source: torch.Tensor, source_motion: Motion, driving_motion: Motion) -> ModelOutput:
        """The source warped toward the geometry of the frame whose field is ``driving_motion``."""
        field = self.refiner(source, driving_motion[FEATURES], source_features=source_motion[FEATURES])
        deformation = field["deformation"]  # (B, H, W, 2)
        occlusion = self.occlusion(field["correlation"])  # (B, 1, g, g)
        deformed = warp(source, deformation)  # (B, 3, H, W): the source image warped by the field
        return {
            "prediction": self.generator(source, deformation, occlusion, deformed),
            "deformation": deformation,
            "occlusion_map": occlusion,
            "deformed": deformed,
            "warped_features": field["warped_features"],
            "target_features": field["target_features"],
        }

    def parameter_report(self) -> list[tuple[str, nn.Module]]:
        return [
            ("refiner.extractor", self.refiner.extractor),
            ("refiner.warp_network", self.refiner.warp_network),
            ("occlusion", self.occlusion),
            ("generator", self.generator),
        ]
