"""Reusable, family-agnostic loss terms; each returns an unweighted value (the task config holds weights)."""

from __future__ import annotations

from reenact.losses.adversarial import (
    GAN_KINDS,
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from reenact.losses.equivariance import EquivarianceLoss, RandomTPSTransform
from reenact.losses.perceptual import PerceptualPyramidLoss, VGG19Features, load_vgg19_state_dict
from reenact.losses.priors import deformation_prior_loss, head_pose_loss, keypoint_prior_loss, wing_loss
from reenact.losses.pyramid import ImagePyramid

__all__ = [
    "GAN_KINDS",
    "EquivarianceLoss",
    "ImagePyramid",
    "PerceptualPyramidLoss",
    "RandomTPSTransform",
    "VGG19Features",
    "deformation_prior_loss",
    "discriminator_adversarial_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "head_pose_loss",
    "keypoint_prior_loss",
    "load_vgg19_state_dict",
    "wing_loss",
]
