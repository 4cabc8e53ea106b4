"""Loss terms of the 3D-keypoint family (face-vid2vid's L_L, L_Δ and L_H, as LivePortrait trains with them), and
those of LivePortrait's second stage (stitching and retargeting: :class:`SecondStageRegion`,
:class:`RetargetingTarget`, :class:`SecondStageOffset`, on the outputs of :mod:`reenact.families.liveportrait.stage2`).

Each reads the family's motion (``value`` (B, K, 3) transformed keypoints, ``exp`` (B, K, 3) expression deltas,
``yaw``/``pitch``/``roll`` (B,) degrees) of the source and the driving frame, and reports one part per side.
"""

from __future__ import annotations

import torch

from reenact.families.liveportrait.keypoint_transform import pose_labels_to_model_angles
from reenact.layers.geometry import resize_to
from reenact.losses.terms import LossContext, LossTerm

SIDES = ("source", "driving")


def _check_keypoints_3d(kp: torch.Tensor, name: str) -> None:
    if kp.dim() != 3 or kp.shape[-1] != 3:
        raise ValueError(f"{name} must be (B, K, 3), got shape {tuple(kp.shape)}")


def keypoint_prior_loss(kp: torch.Tensor, margin: float = 0.1, target_depth: float = 0.33) -> torch.Tensor:
    """L_L on keypoints (B, K, 3) in normalised coords -> scalar; ``margin`` is D_t, ``target_depth`` z_t."""
    _check_keypoints_3d(kp, "kp")
    num_kp = kp.shape[1]
    # squared distances directly (no sqrt): finite gradient even for coincident keypoints
    squared = (kp.unsqueeze(2) - kp.unsqueeze(1)).pow(2).sum(-1)  # (B, K, K)
    hinge = torch.relu(margin - squared)
    off_diagonal = ~torch.eye(num_kp, dtype=torch.bool, device=kp.device)
    spread = (hinge * off_diagonal).sum((1, 2)).mean()
    depth = (kp[..., 2].mean(1) - target_depth).abs().mean()
    return spread + depth


def deformation_prior_loss(exp: torch.Tensor) -> torch.Tensor:
    """L_Δ on expression deltas (B, K, 3) -> scalar mean L1 norm per keypoint."""
    _check_keypoints_3d(exp, "exp")
    return exp.abs().sum(-1).mean()


def head_pose_loss(pred_degrees: torch.Tensor, target_degrees: torch.Tensor) -> torch.Tensor:
    """L_H on (B, 3) yaw, pitch, roll in degrees -> scalar; the target gets no gradient."""
    if pred_degrees.dim() != 2 or pred_degrees.shape[-1] != 3 or pred_degrees.shape != target_degrees.shape:
        raise ValueError(
            f"head_pose_loss expects two (B, 3) tensors, got {tuple(pred_degrees.shape)} and "
            f"{tuple(target_degrees.shape)}"
        )
    return (pred_degrees - target_degrees.detach()).abs().sum(-1).mean()


class KeypointPrior(LossTerm):
    """L_L: keypoints at least sqrt(``margin``) apart and their mean depth at ``target_depth``."""

    reads = ("motion_source", "motion_driving")

    def __init__(self, weight: float = 10.0, margin: float = 0.1, target_depth: float = 0.33) -> None:
        super().__init__(weight)
        self.margin = margin
        self.target_depth = target_depth

    def compute(self, context: LossContext) -> dict[str, torch.Tensor]:
        return {
            side: keypoint_prior_loss(context.output[f"motion_{side}"]["value"], self.margin, self.target_depth)
            for side in SIDES
        }


class DeformationPrior(LossTerm):
    """L_Δ: small expression deltas, so that identity stays in the canonical keypoints."""

    reads = ("motion_source", "motion_driving")

    def compute(self, context: LossContext) -> dict[str, torch.Tensor]:
        return {side: deformation_prior_loss(context.output[f"motion_{side}"]["exp"]) for side in SIDES}


class HeadPose(LossTerm):
    """L_H: the predicted yaw, pitch and roll follow the batch's head-pose labels (``<side>_pose`` (B, 3) in the
    dataset's convention, converted to the model's angles). A batch without labels adds nothing."""

    reads = ("motion_source", "motion_driving")

    def compute(self, context: LossContext) -> dict[str, torch.Tensor]:
        parts = {}
        for side in SIDES:
            label = context.batch.get(f"{side}_pose")
            if label is None:
                continue
            motion = context.output[f"motion_{side}"]
            predicted = torch.stack([motion["yaw"], motion["pitch"], motion["roll"]], dim=-1).reshape(label.shape)
            target = pose_labels_to_model_angles(label.to(predicted).reshape(-1, 3)).reshape(label.shape)
            parts[side] = head_pose_loss(predicted, target)
        return parts


# ---------------------------------------------------------------------------------------------- second stage
SECOND_STAGE_PARTS = ("stitching", "eye", "lip")


def _check_part(part: str) -> str:
    if part not in SECOND_STAGE_PARTS:
        raise ValueError(f"part must be one of {', '.join(SECOND_STAGE_PARTS)}, got {part!r}")
    return part


def region_l1(render: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean |render - target| over the pixels of ``region`` (B, 1, H, W) in [0, 1]; render, target (B, 3, H, W)."""
    return ((render - target).abs() * region).sum() / (region.sum() * render.shape[1]).clamp_min(1.0)


class SecondStageRegion(LossTerm):
    """The second stage's render keeps the source image where it must not change: for ``part="stitching"`` the band
    along the crop border away from the face (the render driven by another identity, stitched); for ``"eye"`` /
    ``"lip"`` everything but the eyes / the mouth (the source re-rendered with the retargeting offset). L1 over the
    region (:mod:`reenact.families.liveportrait.stage2`)."""

    def __init__(self, weight: float = 1.0, part: str = "stitching") -> None:
        super().__init__(weight)
        self.part = _check_part(part)
        self.reads = (f"{part}_render", f"{part}_region")

    def compute(self, context: LossContext) -> torch.Tensor:
        render = context.output[f"{self.part}_render"]
        source = context.shared("source_at_prediction_size",
                                lambda: resize_to(context.batch["source"], tuple(render.shape[-2:])))
        return region_l1(render, source, context.output[f"{self.part}_region"])


class RetargetingTarget(LossTerm):
    """The eye (``part="eye"``) or lip retargeting offset reaches the requested ratio, measured by the keypoints:
    L1 between the offset (B, K, 3) and the driving frame's expression change near the region (``<part>_target``,
    zero on keypoints away from it, so those stay where they are)."""

    def __init__(self, weight: float = 1.0, part: str = "eye") -> None:
        super().__init__(weight)
        self.part = _check_part(part)
        if part == "stitching":
            raise ValueError("RetargetingTarget: part must be 'eye' or 'lip' (stitching has no keypoint target)")
        self.reads = (f"{part}_offset", f"{part}_target")

    def compute(self, context: LossContext) -> torch.Tensor:
        return (context.output[f"{self.part}_offset"] - context.output[f"{self.part}_target"]).abs().mean()


class SecondStageOffset(LossTerm):
    """The regulariser of a second-stage network: the mean |offset| it adds to the keypoints (for stitching, the
    offset and the (x, y) shift together), so that it changes no more than its other terms ask for."""

    def __init__(self, weight: float = 1.0, part: str = "stitching") -> None:
        super().__init__(weight)
        self.part = _check_part(part)
        self.reads = (f"{part}_offset",)

    def compute(self, context: LossContext) -> torch.Tensor:
        return context.output[f"{self.part}_offset"].abs().mean()
