"""Loss terms shared by every model family and the mechanism that weighs them (:mod:`reenact.losses.terms`).

Family-specific terms live in their family's package (``reenact.families.<name>.losses``).
"""

from __future__ import annotations

from reenact.losses.adversarial import (
    GAN_KINDS,
    FeatureMatching,
    GeneratorAdversarial,
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from reenact.losses.equivariance import EquivarianceLoss, KeypointEquivariance, RandomTPSTransform
from reenact.losses.landmarks import LandmarkGuidance, wing_loss
from reenact.losses.perceptual import PerceptualPyramidLoss
from reenact.losses.photometric import PerceptualPyramid, PyramidL1, WarpedSourceL1
from reenact.losses.pyramid import ImagePyramid
from reenact.losses.terms import LossContext, LossTerm, Objective

__all__ = [
    "GAN_KINDS",
    "EquivarianceLoss",
    "FeatureMatching",
    "GeneratorAdversarial",
    "ImagePyramid",
    "KeypointEquivariance",
    "LandmarkGuidance",
    "LossContext",
    "LossTerm",
    "Objective",
    "PerceptualPyramid",
    "PerceptualPyramidLoss",
    "PyramidL1",
    "RandomTPSTransform",
    "WarpedSourceL1",
    "discriminator_adversarial_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "wing_loss",
]
