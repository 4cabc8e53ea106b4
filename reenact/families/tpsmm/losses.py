"""Loss terms of the TPSMM family: the warp loss, the background loss and the AVD stage's keypoint loss.

The perceptual pyramid and the keypoint equivariance (values only) are the shared terms
(:mod:`reenact.losses.photometric`, :mod:`reenact.losses.equivariance`).
"""

from __future__ import annotations

import torch

from reenact.losses.terms import LossContext, LossTerm


class WarpLoss(LossTerm):
    """sum over the inpainting network's levels of mean |E_l(D) * M_l - warp(E_l(S), T) * M_l|.

    E_l(D): the inpainting encoder's level-l features of the driving frame, without gradients; E_l(S): the source's,
    detached; M_l: the occlusion mask of that size, detached. Only the flow T gets a gradient, so this trains the
    motion path (keypoint detector, dense motion, background) toward features that line up.
    """

    reads = ("warped_encoder_maps", "occlusion_maps")

    def compute(self, context: LossContext) -> torch.Tensor:
        warped = context.output["warped_encoder_maps"]  # coarsest first
        targets = context.network.inpainting_network.encode_occluded(
            context.batch["driving"], context.output["occlusion_maps"])  # finest first, no gradient
        return sum((target - moved).abs().mean() for target, moved in zip(targets, warped[::-1], strict=True))


class BackgroundLoss(LossTerm):
    """mean |I - A(s, d) A(d, s)|: the background affine from source to driving and the one the predictor gives
    with the inputs swapped must be inverses. Zero (no term) while the model renders without the background
    transform (before bg_start, or a model without background predictor)."""

    reads = ("prediction",)

    def compute(self, context: LossContext) -> torch.Tensor:
        forward = context.output.get("bg_param")  # (B, 3, 3) or None
        if forward is None:
            return context.prediction.new_zeros(())
        backward = context.network.bg_predictor(context.batch["driving"], context.batch["source"])
        product = forward @ backward  # (B, 3, 3)
        return (torch.eye(3, device=product.device, dtype=product.dtype) - product).abs().mean()


class AVDKeypointLoss(LossTerm):
    """mean |AVD(kp_s, scale * kp_d) - kp_d|: the AVD network gives back the driving keypoints from the source's and
    the rescaled driving ones (stage 2, ``model.network.train_avd=true``)."""

    reads = ("avd_keypoints", "avd_target")

    def compute(self, context: LossContext) -> torch.Tensor:
        return (context.output["avd_keypoints"] - context.output["avd_target"]).abs().mean()
