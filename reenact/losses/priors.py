"""Keypoint regularisers of the 3D-keypoint family (face-vid2vid L_L, L_Δ, L_H; LivePortrait L_guide).

All functions return unweighted scalars; face-vid2vid's weights are L_L 10, L_H 20, L_Δ 5.

* :func:`keypoint_prior_loss` (L_L): Σ_{i≠j} max(0, D_t − ‖x_i − x_j‖²) + |mean_k z_k − z_t|, averaged over
  the batch. It spreads the keypoints apart (no two closer than √D_t) and fixes their mean depth. The double
  sum runs over ordered pairs (each pair counts twice, as in the paper's Σ_i Σ_j). Public re-implementations
  that also sum the i = j terms differ by the constant K·D_t, which carries no gradient.
* :func:`deformation_prior_loss` (L_Δ): mean over batch and keypoints of ‖δ_k‖₁, the expression deltas.
* :func:`head_pose_loss` (L_H): Σ over (yaw, pitch, roll) of the batch-mean |error| in degrees against a
  pose estimator's (e.g. HopeNet's) or precomputed angles, which are treated as constants.
* :func:`wing_loss` (L_guide, Feng et al. 2018): log-shaped near zero, linear far away. The defaults
  (w = 10, ε = 2) suit pixel-scale errors; for [-1, 1] or [0, 1] coordinates use much smaller values
  (a LivePortrait re-implementation uses w = 0.1, ε = 0.01 on [0, 1]).
"""

from __future__ import annotations

import math

import torch


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
