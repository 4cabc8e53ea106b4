"""Motion transfer at animation time: which keypoints drive the generator, for both model families.

FOMM family (2D keypoints ``value`` (B, K, 2) with Jacobians (B, K, 2, 2)):
    relative: FOMM's ``normalize_kp`` (:mod:`reenact.models.relative_motion`): the source keypoints move by
    the driving keypoints' displacement since the reference frame, Jacobians become relative, and with
    ``adapt_movement_scale`` the displacement is scaled by sqrt(hull area(source) / hull area(reference)).
    absolute: the driving keypoints as they are (the driving face's shape comes along).

3D family (LivePortrait motion dicts, see :mod:`reenact.models.liveportrait.keypoint_transform`):
    relative, as LivePortrait's inference does, with R the *transposed* rotation matrices the model uses
    (row-vector keypoints multiplied on the right):
        R_new = R_d · R_ref^T · R_s;   exp_new = exp_s + (exp_d - exp_ref);
        s_new = s_s · s_d / s_ref;     t_new = t_s + (t_d - t_ref)  (t_z is dropped by the transform)
    In column-vector form that is rot_s · (rot_ref^-1 · rot_d): the head turns about its own axes as the
    driving head turned since the reference frame. Keypoints: x = s_new (x_c,s R_new + exp_new) + t_new.
    absolute: the driving pose, expression, scale and translation on the source's canonical keypoints
    (the training convention). ``adapt_movement_scale`` has no meaning here (the scale ratio covers it).

The reference frame is the first driving frame, or (``best_reference_frame``) the one whose pose is
closest to the source's: for FOMM the frame whose normalised keypoint constellation (or 68 facial
landmarks) is nearest the source's, for the 3D family the frame with the nearest head angles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError

from reenact.models.liveportrait.keypoint_transform import transform_keypoints
from reenact.models.relative_motion import normalize_kp

KeypointDict = dict[str, torch.Tensor]
FAMILIES = ("fomm", "liveportrait")
# What animation needs from each family's detector output; the rest (heatmaps, angle logits) is dropped
# so that keypoints of long videos stay small.
KEYPOINT_KEYS = {
    "fomm": ("value", "jacobian"),
    "liveportrait": ("kp_canonical", "pitch", "yaw", "roll", "exp", "t", "scale", "rotation", "value"),
}


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; animation supports {', '.join(FAMILIES)}")
    return family


def compact_keypoints(kp: KeypointDict, family: str) -> KeypointDict:
    """The entries animation uses, detached float32 (a bf16 autocast detector returns bf16)."""
    return {k: kp[k].detach().float() for k in KEYPOINT_KEYS[check_family(family)] if k in kp}


def select_keypoints(kp: KeypointDict, index: int | slice | torch.Tensor) -> KeypointDict:
    """Batch entries ``index`` of every tensor; an int keeps the batch dimension (size 1)."""
    if isinstance(index, int):
        index = slice(index, index + 1)
    return {k: v[index] for k, v in kp.items()}


def concat_keypoints(parts: Sequence[KeypointDict]) -> KeypointDict:
    if not parts:
        raise ValueError("no keypoints to concatenate (empty driving video?)")
    return {k: torch.cat([p[k] for p in parts], dim=0) for k in parts[0]}


def move_keypoints(kp: KeypointDict, device: torch.device | str) -> KeypointDict:
    return {k: v.to(device) for k, v in kp.items()}


def expand_keypoints(kp: KeypointDict, batch: int) -> KeypointDict:
    """A batch-1 dict viewed as ``batch`` copies (no memory copy)."""
    return {k: v.expand(batch, *v.shape[1:]) for k, v in kp.items()}


def liveportrait_keypoints(
    kp_source: KeypointDict, kp_driving: KeypointDict, kp_reference: KeypointDict, relative: bool = True
) -> KeypointDict:
    """3D keypoints (B, K, 3) for the warping network; source/reference batch 1, driving batch B."""
    batch = kp_driving["value"].shape[0]
    if relative:
        rotation = kp_driving["rotation"] @ kp_reference["rotation"].transpose(1, 2) @ kp_source["rotation"]
        exp = kp_source["exp"] + (kp_driving["exp"] - kp_reference["exp"])  # (B, K, 3)
        scale = kp_source["scale"] * kp_driving["scale"] / kp_reference["scale"]  # (B, 1)
        t = kp_source["t"] + (kp_driving["t"] - kp_reference["t"])  # (B, 3)
    else:
        rotation, exp, scale, t = kp_driving["rotation"], kp_driving["exp"], kp_driving["scale"], kp_driving["t"]
    t = torch.cat([t[:, :2], torch.zeros_like(t[:, 2:3])], dim=1)
    canonical = kp_source["kp_canonical"].expand(batch, -1, -1)  # identity comes from the source
    value = transform_keypoints(canonical, rotation, exp, scale, t)
    return {"value": value, "rotation": rotation, "exp": exp, "scale": scale, "t": t}


def transfer_motion(
    family: str,
    kp_source: KeypointDict,
    kp_driving: KeypointDict,
    kp_reference: KeypointDict,
    relative: bool = True,
    adapt_movement_scale: bool = False,
) -> KeypointDict:
    """Keypoints that make the source follow the driving frames (batch B); see the module docstring."""
    if check_family(family) == "liveportrait":
        return liveportrait_keypoints(kp_source, kp_driving, kp_reference, relative)
    if not relative:
        return {k: v for k, v in kp_driving.items() if k in KEYPOINT_KEYS["fomm"]}
    moved = normalize_kp(
        kp_source=kp_source,
        kp_driving=kp_driving,
        kp_driving_initial=kp_reference,
        adapt_movement_scale=adapt_movement_scale,
        use_relative_movement=True,
        use_relative_jacobian=True,
    )
    return {k: v for k, v in moved.items() if k in KEYPOINT_KEYS["fomm"]}


def normalised_constellation(points: np.ndarray) -> np.ndarray:
    """(N, 2) points centred on their mean and divided by sqrt(convex-hull area), so that frames of
    different face sizes compare by shape; the RMS radius replaces the hull for collinear points."""
    points = np.asarray(points, dtype=np.float64)
    centred = points - points.mean(axis=0, keepdims=True)
    try:
        size = np.sqrt(ConvexHull(centred).volume)  # in 2D the hull "volume" is its area
    except (QhullError, ValueError):
        size = float(np.sqrt((centred**2).sum(axis=1).mean()))
    return centred / max(size, 1e-8)


def closest_constellation(source_points: np.ndarray, driving_points: np.ndarray) -> int:
    """Index of the driving frame whose normalised points (T, N, 2) are nearest the source's (N, 2);
    frames with NaN points (no face found) never win."""
    source = normalised_constellation(source_points)
    best, best_distance = 0, np.inf
    for index, frame_points in enumerate(np.asarray(driving_points, dtype=np.float64)):
        if not np.isfinite(frame_points).all():
            continue
        distance = float(((normalised_constellation(frame_points) - source) ** 2).sum())
        if distance < best_distance:
            best, best_distance = index, distance
    if not np.isfinite(best_distance):
        raise ValueError("no driving frame has usable points to compare with the source")
    return best


def closest_head_pose(source_angles: np.ndarray, driving_angles: np.ndarray) -> int:
    """Index of the driving frame whose (pitch, yaw, roll) degrees (T, 3) are nearest the source's (3,)."""
    distance = ((np.asarray(driving_angles, np.float64) - np.asarray(source_angles, np.float64)) ** 2).sum(axis=1)
    return int(np.argmin(distance))


def head_angles(kp: KeypointDict) -> np.ndarray:
    """(B, 3) pitch, yaw, roll in degrees from a 3D-family motion dict."""
    return torch.stack([kp["pitch"], kp["yaw"], kp["roll"]], dim=-1).float().cpu().numpy()


def best_reference_frame(family: str, kp_source: KeypointDict, kp_driving_all: KeypointDict) -> int:
    """The driving frame whose pose is closest to the source's, judged by the model's own keypoints."""
    if check_family(family) == "liveportrait":
        return closest_head_pose(head_angles(kp_source)[0], head_angles(kp_driving_all))
    return closest_constellation(kp_source["value"][0].cpu().numpy(), kp_driving_all["value"].cpu().numpy())
