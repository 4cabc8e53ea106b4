"""The generator-side training objective shared by every model family.

The model preset decides which terms are on: FOMM uses the perceptual pyramid and keypoint/Jacobian
equivariance, with an optional pixel L1 term; the LivePortrait family adds the keypoint prior, the expression
(deformation) prior, the head-pose loss and optional landmark guidance (face-vid2vid / LivePortrait recipes,
../shared/reference/liveportrait.md §2).
Terms whose weight is 0 are neither computed nor logged. Adversarial terms need the discriminator and live in
the training task.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from reenact.losses.equivariance import EquivarianceLoss
from reenact.losses.perceptual import PerceptualPyramidLoss
from reenact.losses.priors import deformation_prior_loss, head_pose_loss, keypoint_prior_loss, wing_loss
from reenact.losses.pyramid import ImagePyramid
from reenact.models.geometry import resize_to


class ReenactmentObjective(nn.Module):
    """Weighted generator losses for one (source, driving) batch; returns ``{name: weighted loss}``."""

    def __init__(
        self,
        perceptual_scales: list[float] = (1.0, 0.5, 0.25, 0.125),
        perceptual_weights: list[float] = (10.0, 10.0, 10.0, 10.0, 10.0),
        vgg_pretrained: bool = True,
        vgg_weights_path: str | None = None,
        reconstruction_l1: float = 0.0,
        reconstruction_scales: list[float] = (1.0,),
        warped_source_l1: float = 0.0,
        equivariance_value: float = 10.0,
        equivariance_jacobian: float = 10.0,
        sigma_affine: float = 0.05,
        sigma_tps: float = 0.005,
        points_tps: int = 5,
        keypoint_prior: float = 0.0,
        keypoint_prior_margin: float = 0.1,
        keypoint_prior_depth: float = 0.33,
        deformation_prior: float = 0.0,
        head_pose: float = 0.0,
        landmark_guidance: float = 0.0,
        landmark_keypoints: list[int] = (),
        landmark_indices: list[int] = (),
        wing_w: float = 0.2,
        wing_epsilon: float = 0.02,
    ) -> None:
        super().__init__()
        if len(landmark_keypoints) != len(landmark_indices):
            raise ValueError(
                f"landmark_keypoints ({len(landmark_keypoints)}) and landmark_indices ({len(landmark_indices)}) "
                "must have the same length"
            )
        self.perceptual = (
            PerceptualPyramidLoss(
                scales=list(perceptual_scales), layer_weights=list(perceptual_weights),
                pretrained=vgg_pretrained, weights_path=vgg_weights_path,
            )
            if any(w != 0 for w in perceptual_weights)
            else None
        )
        self.reconstruction_l1 = reconstruction_l1
        # Coarse levels give the flow a gradient for displacements larger than the image's detail, as the
        # perceptual pyramid does; the L1 is summed over the levels like the perceptual terms.
        self.warped_source_l1 = warped_source_l1
        self.reconstruction_pyramid = (
            ImagePyramid(list(reconstruction_scales)) if (reconstruction_l1 or warped_source_l1) else None
        )
        self.equivariance_value = equivariance_value
        self.equivariance_jacobian = equivariance_jacobian
        self.equivariance = (
            EquivarianceLoss(sigma_affine=sigma_affine, sigma_tps=sigma_tps, points_tps=points_tps)
            if equivariance_value or equivariance_jacobian
            else None
        )
        self.keypoint_prior = keypoint_prior
        self.keypoint_prior_margin = keypoint_prior_margin
        self.keypoint_prior_depth = keypoint_prior_depth
        self.deformation_prior = deformation_prior
        self.head_pose = head_pose
        self.landmark_guidance = landmark_guidance
        self.landmark_keypoints = list(landmark_keypoints)
        self.landmark_indices = list(landmark_indices)
        # LivePortrait-Train uses w=0.1, eps=0.01 on [0,1] coordinates; ours span [-1,1], hence twice that.
        self.wing_w = wing_w
        self.wing_epsilon = wing_epsilon

    def forward(
        self, network: nn.Module, batch: dict[str, Any], output: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Return (weighted losses, visuals). ``output`` is ``network(batch["source"], batch["driving"])``."""
        losses: dict[str, torch.Tensor] = {}
        visuals: dict[str, torch.Tensor] = {}
        prediction = output["prediction"]  # (B, 3, H', W'), H' = H or a multiple of it
        driving = resize_to(batch["driving"], tuple(prediction.shape[-2:]))
        if self.perceptual is not None:
            losses["perceptual"] = self.perceptual(prediction, driving)
        if self.reconstruction_l1:
            # A pixel term helps most where the perceptual features are weak (small frames, random VGG).
            predicted, target = self.reconstruction_pyramid(prediction), self.reconstruction_pyramid(driving)
            l1 = sum((predicted[scale] - target[scale]).abs().mean() for scale in predicted)
            losses["reconstruction_l1"] = self.reconstruction_l1 * l1
        if self.warped_source_l1:
            # The source warped by the model's own (2D) flow against the driving frame: a photometric signal that
            # trains the flow directly, not only through what the generator makes of the warped features.
            deformed = output.get("deformed")
            if deformed is None:
                raise ValueError("objective.warped_source_l1 needs a model that outputs 'deformed' (the warped source)")
            warped, target = self.reconstruction_pyramid(deformed), self.reconstruction_pyramid(batch["driving"])
            l1 = sum((warped[scale] - target[scale]).abs().mean() for scale in warped)
            losses["warped_source_l1"] = self.warped_source_l1 * l1
        if self.equivariance is not None:
            terms = self.equivariance(network.detect, batch["driving"], output["kp_driving"])
            if self.equivariance_value:
                losses["equivariance_value"] = self.equivariance_value * terms["equivariance_value"]
            if self.equivariance_jacobian and "equivariance_jacobian" in terms:
                losses["equivariance_jacobian"] = self.equivariance_jacobian * terms["equivariance_jacobian"]
            if "transformed_frame" in terms:
                visuals["transformed"] = terms["transformed_frame"].detach()
        for side in ("source", "driving"):
            kp = output[f"kp_{side}"]
            if self.keypoint_prior:
                prior = keypoint_prior_loss(kp["value"], self.keypoint_prior_margin, self.keypoint_prior_depth)
                losses[f"keypoint_prior_{side}"] = self.keypoint_prior * prior
            if self.deformation_prior and "exp" in kp:
                losses[f"deformation_prior_{side}"] = self.deformation_prior * deformation_prior_loss(kp["exp"])
            label = batch.get(f"{side}_pose")
            if self.head_pose and label is not None and "yaw" in kp:
                predicted = torch.stack([kp["yaw"], kp["pitch"], kp["roll"]], dim=-1).reshape(label.shape)
                # the labels follow the dataset's pose convention; the network says what they are in its own angles
                target = network.head_pose_targets(label.to(predicted).reshape(-1, 3)).reshape(label.shape)
                losses[f"head_pose_{side}"] = self.head_pose * head_pose_loss(predicted, target)
            landmarks = batch.get(f"{side}_landmarks")
            if self.landmark_guidance and self.landmark_keypoints and landmarks is not None:
                guided = kp["value"][:, self.landmark_keypoints, :2]  # (B, n, 2)
                target = landmarks[:, self.landmark_indices].to(guided)  # (B, n, 2)
                # Preprocessing writes NaN landmarks for frames where no face was found: those samples don't count.
                found = torch.isfinite(target).all(dim=-1).all(dim=-1)  # (B,)
                if found.any():
                    wing = wing_loss(guided[found], target[found], self.wing_w, self.wing_epsilon)
                    losses[f"landmark_{side}"] = self.landmark_guidance * wing
        return losses, visuals
