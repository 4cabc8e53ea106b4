"""Landmark guidance (LivePortrait's L_guide): chosen keypoints follow detected facial landmarks, under a wing loss."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from reenact.losses.terms import LossContext, LossTerm

log = logging.getLogger(__name__)


def wing_loss(
    pred: torch.Tensor, target: torch.Tensor, w: float = 10.0, epsilon: float = 2.0
) -> torch.Tensor:
    """Wing loss averaged over all elements: w·ln(1 + |x|/ε) for |x| < w, else |x| − C with
    C = w − w·ln(1 + w/ε) so the two pieces meet at |x| = w. The target gets no gradient."""
    if pred.shape != target.shape:
        raise ValueError(f"wing_loss: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if w <= 0 or epsilon <= 0:
        raise ValueError(f"wing_loss needs w > 0 and epsilon > 0, got w={w}, epsilon={epsilon}")
    error = (pred - target.detach()).abs()
    offset = w - w * math.log1p(w / epsilon)
    return torch.where(error < w, w * torch.log1p(error / epsilon), error - offset).mean()


class LandmarkGuidance(LossTerm):
    """Wing loss between the 2D keypoints ``keypoints`` and the batch's 68-point landmarks ``landmark_indices``
    (``<side>_landmarks``, normalised [-1, 1]), for the source and the driving frame. Frames without a detected
    face (NaN landmarks) do not count; a batch without landmarks adds nothing, and the first such batch says so in one
    warning line (the data was prepared without ``--landmarks``).

    LivePortrait-Train uses w=0.1, ε=0.01 on [0, 1] coordinates; ours span [-1, 1], hence the defaults of twice that.
    """

    reads = ("motion_source", "motion_driving")

    def __init__(
        self,
        weight: float = 1.0,
        keypoints: Sequence[int] = (),
        landmark_indices: Sequence[int] = (),
        wing_w: float = 0.2,
        wing_epsilon: float = 0.02,
    ) -> None:
        super().__init__(weight)
        if len(keypoints) != len(landmark_indices) or not keypoints:
            raise ValueError(
                f"landmark guidance needs as many keypoints ({len(keypoints)}) as landmark_indices "
                f"({len(landmark_indices)}), at least one"
            )
        self.keypoints = list(keypoints)
        self.landmark_indices = list(landmark_indices)
        self.wing_w = wing_w
        self.wing_epsilon = wing_epsilon
        self.warned_no_landmarks = False

    def compute(self, context: LossContext) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        for side in ("source", "driving"):
            landmarks = context.batch.get(f"{side}_landmarks")
            points = context.network.keypoints_2d(context.output[f"motion_{side}"])
            if landmarks is None or points is None:
                continue
            guided = points[:, self.keypoints]  # (B, n, 2)
            target = landmarks[:, self.landmark_indices].to(guided)  # (B, n, 2)
            # Preprocessing writes NaN landmarks for frames where no face was found: those samples don't count.
            found = torch.isfinite(target).all(dim=-1).all(dim=-1)  # (B,)
            if found.any():
                parts[side] = wing_loss(guided[found], target[found], self.wing_w, self.wing_epsilon)
        has_landmarks = any(f"{side}_landmarks" in context.batch for side in ("source", "driving"))
        if not has_landmarks and not self.warned_no_landmarks:
            self.warned_no_landmarks = True
            log.warning("landmark guidance is on but the batches carry no landmarks, so it adds nothing: prepare the "
                        "clips with `python -m reenact.prepare folder ... --landmarks`")
        return parts
