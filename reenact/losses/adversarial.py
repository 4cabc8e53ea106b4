"""Adversarial terms and discriminator feature matching (FOMM §3 / pix2pixHD; face-vid2vid's L_G).

Every function takes one entry per discriminator scale and sums the per-scale means (unweighted; the
task multiplies by its configured weight).

  kind="lsgan": G: mean (1 − D(ŷ))²;  D: mean (1 − D(y))² + mean D(ŷ)²            (FOMM)
  kind="hinge": G: −mean D(ŷ);        D: mean relu(1 − D(y)) + mean relu(1 + D(ŷ))  (face-vid2vid)

The discriminator loss expects maps computed from a *detached* prediction; detaching is the caller's job
because the maps themselves must keep their gradient into D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from reenact.losses.terms import LossContext, LossTerm

GAN_KINDS = ("lsgan", "hinge")


def _check_kind(kind: str) -> None:
    if kind not in GAN_KINDS:
        raise ValueError(f"unknown GAN loss kind '{kind}', expected one of {GAN_KINDS}")


def _check_scales(maps: Sequence[torch.Tensor], name: str) -> None:
    if len(maps) == 0:
        raise ValueError(f"{name} is empty: need one prediction map per discriminator scale")


def generator_adversarial_loss(prediction_maps: Sequence[torch.Tensor], kind: str) -> torch.Tensor:
    """Generator term from D's maps of the prediction, one (B, 1, h, w) map per scale -> scalar."""
    _check_kind(kind)
    _check_scales(prediction_maps, "prediction_maps")
    total = prediction_maps[0].new_zeros(())
    for fake in prediction_maps:
        total = total + (((1 - fake) ** 2).mean() if kind == "lsgan" else -fake.mean())
    return total


def discriminator_adversarial_loss(
    real_maps: Sequence[torch.Tensor], fake_maps: Sequence[torch.Tensor], kind: str
) -> torch.Tensor:
    """Discriminator term from its maps of real frames and of detached predictions -> scalar."""
    _check_kind(kind)
    _check_scales(real_maps, "real_maps")
    if len(real_maps) != len(fake_maps):
        raise ValueError(f"real_maps has {len(real_maps)} scales but fake_maps has {len(fake_maps)}")
    total = real_maps[0].new_zeros(())
    for real, fake in zip(real_maps, fake_maps, strict=True):
        if kind == "lsgan":
            total = total + ((1 - real) ** 2).mean() + (fake**2).mean()
        else:
            total = total + F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return total


def discriminator_step_loss(context: LossContext) -> torch.Tensor:
    """The discriminator's loss of one training step: its maps of the real frames against those of the detached
    predictions, conditioned as in the generator pass -> scalar (unweighted)."""
    if context.discriminator is None:
        raise RuntimeError("the discriminator step needs the task's discriminator")
    condition = context.discriminator_condition()
    real = context.discriminator(context.target, condition)
    fake = context.discriminator(context.prediction.detach(), condition)
    return discriminator_adversarial_loss([pred for _, pred in real], [pred for _, pred in fake], context.gan_kind)


def feature_matching_loss(
    real_features: Sequence[Sequence[torch.Tensor]],
    fake_features: Sequence[Sequence[torch.Tensor]],
    weights: Sequence[float],
) -> torch.Tensor:
    """Σ_scales Σ_blocks w_i · mean |f_i(y) − f_i(ŷ)| with real features detached -> scalar.

    real_features[s][i] is block i's feature map of discriminator scale s; ``weights`` has one entry per
    block. Blocks with weight 0 are skipped.
    """
    _check_scales(real_features, "real_features")
    if len(real_features) != len(fake_features):
        raise ValueError(
            f"real_features has {len(real_features)} scales but fake_features has {len(fake_features)}"
        )
    total = real_features[0][0].new_zeros(())
    for scale_index, (real_blocks, fake_blocks) in enumerate(zip(real_features, fake_features, strict=True)):
        if not len(real_blocks) == len(fake_blocks) == len(weights):
            raise ValueError(
                f"scale {scale_index}: {len(real_blocks)} real and {len(fake_blocks)} fake feature maps "
                f"for {len(weights)} weights"
            )
        for weight, real, fake in zip(weights, real_blocks, fake_blocks, strict=True):
            if weight != 0:
                total = total + float(weight) * (real.detach() - fake).abs().mean()
    return total


class GeneratorAdversarial(LossTerm):
    """The generator's GAN loss against the task's discriminator (LSGAN or hinge: the task's ``gan_kind``)."""

    uses_discriminator = True

    def compute(self, context: LossContext) -> torch.Tensor:
        return generator_adversarial_loss([pred for _, pred in context.discriminator_on_prediction()],
                                          context.gan_kind)


class FeatureMatching(LossTerm):
    """Σ_scales Σ_blocks w_i · mean |D_i(y) − D_i(ŷ)|: the discriminator's features of the prediction must match
    those of the real frame. The per-block weights carry the scale (10 each in FOMM), so ``weight`` is normally 1."""

    uses_discriminator = True

    def __init__(self, weight: float = 1.0, layer_weights: Sequence[float] = (10.0, 10.0, 10.0, 10.0)) -> None:
        super().__init__(weight)
        self.layer_weights = [float(w) for w in layer_weights]

    def compute(self, context: LossContext) -> torch.Tensor:
        fake = context.discriminator_on_prediction()
        real = context.discriminator_on_target()
        return feature_matching_loss([f for f, _ in real], [f for f, _ in fake], self.layer_weights)
