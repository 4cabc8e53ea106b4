"""Implicit-keypoint transform of a LivePortrait-style model (the paper's Eqn. 2).

    x = s * (x_c @ R + delta) + t,   t_z = 0

x_c: canonical keypoints (B, K, 3) from M; R: the *transposed* rotation matrix (B, 3, 3) so that keypoints
are row vectors multiplied on the right; delta: expression deformation (B, K, 3); s: scale (B, 1);
t: translation (B, 3) of which only (t_x, t_y) is added. Head-pose angles come from 66-bin classifiers:
degrees = 3 * E_softmax[bin index] - 97.5 (i.e. bins of 3 degrees centred on 0, range about +-97.5).
The rotation is Rz(roll) @ Ry(yaw) @ Rx(pitch), returned transposed, as the released weights expect.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BIN_WIDTH_DEGREES = 3.0


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Softmax expectation over angle bins; (B, num_bins) logits -> (B,) degrees.

    The offset centres the bins on 0: (num_bins - 1) / 2 * 3, which is 97.5 for 66 bins.
    """
    if logits.dim() != 2:
        raise ValueError(f"bins_to_degrees: expected (B, num_bins) logits, got {tuple(logits.shape)}")
    num_bins = logits.shape[1]
    idx = torch.arange(num_bins, dtype=logits.dtype, device=logits.device)
    expected_bin = (F.softmax(logits, dim=1) * idx).sum(dim=1)  # (B,)
    return (expected_bin - (num_bins - 1) / 2) * BIN_WIDTH_DEGREES


def _stack_3x3(rows: list[list[torch.Tensor]]) -> torch.Tensor:
    """Three rows of three (B,) tensors -> (B, 3, 3)."""
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Transposed head rotation from angles in degrees; each (B,) -> (B, 3, 3) equal to (Rz Ry Rx)^T.

    pitch turns about x, yaw about y, roll about z. Multiplying row-vector keypoints on the right by the
    returned matrix applies Rz Ry Rx to them as column vectors.
    """
    x, y, z = (a.reshape(-1) * (math.pi / 180.0) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    cx, sx, cy, sy, cz, sz = x.cos(), x.sin(), y.cos(), y.sin(), z.cos(), z.sin()
    rot_x = _stack_3x3([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
    rot_y = _stack_3x3([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rot_z = _stack_3x3([[cz, -sz, zero], [sz, cz, zero], [zero, zero, one]])
    return (rot_z @ rot_y @ rot_x).transpose(1, 2)


def pose_labels_to_model_angles(labels: torch.Tensor) -> torch.Tensor:
    """Head-pose labels in reenact's file convention -> the same rotation as this model's angles; (B, 3) -> (B, 3).

    Both are (yaw, pitch, roll) in degrees. The ``{stem}.pose.npy`` convention (``reenact.data.synthetic_scene``,
    ``reenact.face.pose``) has +yaw turning the nose to the image right, +pitch tilting the face down and +roll
    turning it counter-clockwise on screen, composed as Rz(roll) Rx(pitch) Ry(yaw) in a y-up, z-towards-camera
    frame. The model's keypoints live in a y-down, z-into-the-screen frame and compose Rz(roll) Ry(yaw) Rx(pitch),
    so the same head turn has the opposite yaw and roll and a different Euler order: this rebuilds the label's
    rotation in the model's frame, Rz(-roll) Rx(pitch) Ry(-yaw), and decomposes it as Rz Ry Rx (exact, not only
    the signs). Supervising the model's angles with the raw labels would teach it to turn the keypoints the wrong
    way: over the synthetic pose distribution their rotation matrices then differ by 0.42 per entry on average.
    """
    if labels.dim() != 2 or labels.shape[-1] != 3:
        raise ValueError(f"pose_labels_to_model_angles: expected (B, 3) yaw, pitch, roll, got {tuple(labels.shape)}")
    yaw, pitch, roll = labels.unbind(-1)
    zero = torch.zeros_like(yaw)
    # column-vector matrices of the label's rotation in the model's frame, via rotation_matrix's transposes
    rot_z = rotation_matrix(zero, zero, -roll).transpose(1, 2)
    rot_x = rotation_matrix(pitch, zero, zero).transpose(1, 2)
    rot_y = rotation_matrix(zero, -yaw, zero).transpose(1, 2)
    m = rot_z @ rot_x @ rot_y  # (B, 3, 3) = Rz(a) Ry(b) Rx(c) for the model's roll a, yaw b, pitch c
    model_yaw = torch.asin((-m[:, 2, 0]).clamp(-1.0, 1.0))
    model_pitch = torch.atan2(m[:, 2, 1], m[:, 2, 2])
    model_roll = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    return torch.stack([model_yaw, model_pitch, model_roll], dim=-1) * (180.0 / math.pi)


def transform_keypoints(
    kp_canonical: torch.Tensor,
    rotation: torch.Tensor,
    exp: torch.Tensor,
    scale: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """x = s * (x_c @ R + delta) + (t_x, t_y, 0).

    kp_canonical, exp: (B, K, 3); rotation: (B, 3, 3) from :func:`rotation_matrix`; scale: (B, 1);
    t: (B, 3). Returns (B, K, 3). t_z is ignored because depth translation is not observable in one image.
    """
    if kp_canonical.shape != exp.shape or kp_canonical.dim() != 3 or kp_canonical.shape[-1] != 3:
        raise ValueError(
            f"transform_keypoints: kp_canonical {tuple(kp_canonical.shape)} and exp "
            f"{tuple(exp.shape)} must both be (B, K, 3)"
        )
    out = (kp_canonical @ rotation + exp) * scale.view(-1, 1, 1)  # (B, K, 3)
    shift = torch.cat([t[:, :2], torch.zeros_like(t[:, 2:3])], dim=1)  # (B, 3) with t_z = 0
    return out + shift.unsqueeze(1)


def motion_to_keypoints(
    motion: dict[str, torch.Tensor], kp_canonical: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Add ``rotation`` (B, 3, 3) and ``value`` (B, K, 3) transformed keypoints to a motion dict from M.

    ``kp_canonical`` replaces the dict's own canonical keypoints when given (face-vid2vid's training
    convention: the driving pose and expression applied to the *source's* canonical keypoints).
    """
    canonical = motion["kp_canonical"] if kp_canonical is None else kp_canonical
    rotation = rotation_matrix(motion["pitch"], motion["yaw"], motion["roll"])
    value = transform_keypoints(canonical, rotation, motion["exp"], motion["scale"], motion["t"])
    return {**motion, "rotation": rotation, "value": value}
