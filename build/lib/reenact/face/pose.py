"""Head pose (yaw, pitch, roll) from 68 facial landmarks with ``cv2.solvePnP``.

The 3D reference is a generic mean face written for this project: 22 stable, non-contour landmarks
(brows, nose, eye corners, lips, chin) in millimetres, left/right symmetric, in a head frame whose axes
match the camera's for a frontal face (x to the image right, y down, z away from the camera, origin at
the nose tip). Jaw-line points are left out because their 3D position moves with the silhouette.

Camera: pinhole, focal length ``max(H, W)`` pixels, principal point at the image centre, no distortion.
That is crude but pose angles are insensitive to it for face crops.

Sign convention (degrees; all 0 for a frontal face looking into the camera), the same as the synthetic
dataset's ground truth (``reenact.data.synthetic_scene``) so ``{stem}.pose.npy`` files mean one thing:

- **yaw > 0**: the nose turns towards the image's right side (the subject's own left).
- **pitch > 0**: the face tilts down (looking below the camera).
- **roll > 0**: the face turns counter-clockwise as seen on screen (top of the head moves to the image left).

Mirroring the image horizontally negates yaw and roll and keeps pitch. The rotation is
R = Rz(-roll) · Rx(pitch) · Ry(-yaw) (head frame -> camera frame, OpenCV axes): the synthetic renderer's
Rz(roll) Rx(pitch) Ry(yaw) in its y-up, z-towards-camera axes, so both sources give the same angles for the same
head turn, Euler order included. (The LivePortrait model's own angles differ in yaw and roll sign and in order;
its head-pose loss converts, see ``reenact.families.liveportrait.keypoint_transform.pose_labels_to_model_angles``.)

The generic model assumes adult proportions: faces with other proportions (children, stylised faces)
get a biased pitch of up to ~20 degrees, and the pose is measured against the camera axis, so a face far
from the image centre gets a perspective offset; use it on face crops.
"""

from __future__ import annotations

import cv2
import numpy as np

# Mean-face 3D positions (mm): index in the 68-point layout -> (x, y, z).
_MODEL_POINTS: dict[int, tuple[float, float, float]] = {
    17: (-52.0, -55.0, 45.0), 19: (-33.0, -64.0, 28.0), 21: (-12.0, -58.0, 22.0),
    22: (12.0, -58.0, 22.0), 24: (33.0, -64.0, 28.0), 26: (52.0, -55.0, 45.0),
    27: (0.0, -42.0, 24.0), 30: (0.0, 0.0, 0.0),
    31: (-13.0, 8.0, 18.0), 33: (0.0, 10.0, 14.0), 35: (13.0, 8.0, 18.0),
    36: (-44.0, -38.0, 40.0), 39: (-15.0, -37.0, 30.0), 42: (15.0, -37.0, 30.0), 45: (44.0, -38.0, 40.0),
    48: (-25.0, 32.0, 30.0), 51: (0.0, 22.0, 16.0), 54: (25.0, 32.0, 30.0), 57: (0.0, 42.0, 20.0),
    37: (-34.0, -42.0, 34.0), 44: (34.0, -42.0, 34.0),
    8: (0.0, 78.0, 28.0),
}

MODEL_INDICES = np.array(sorted(_MODEL_POINTS), dtype=np.int64)
MODEL_POINTS_3D = np.array([_MODEL_POINTS[i] for i in MODEL_INDICES], dtype=np.float64)
_EYE_CORNER_DISTANCE_MM = 88.0


def camera_matrix(image_size: tuple[int, int]) -> np.ndarray:
    """Pinhole intrinsics for an image of ``(height, width)`` pixels (pixel-index coordinates)."""
    h, w = image_size
    f = float(max(h, w))
    return np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head-to-camera rotation for angles in degrees (inverse of the decomposition used here)."""
    b, a, g = np.radians([-yaw, pitch, -roll])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(g), -np.sin(g), 0], [np.sin(g), np.cos(g), 0], [0, 0, 1]])
    return rz @ rx @ ry


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from R = Rz(-roll) Rx(pitch) Ry(-yaw)."""
    r = np.asarray(rotation, dtype=np.float64)
    # Rz(g) Rx(a) Ry(b) has [2,1] = sin a, [2,0] = -cos a sin b, [2,2] = cos a cos b,
    # [0,1] = -sin g cos a, [1,1] = cos g cos a
    a = np.arcsin(np.clip(r[2, 1], -1.0, 1.0))
    b = np.arctan2(-r[2, 0], r[2, 2])
    g = np.arctan2(-r[0, 1], r[1, 1])
    yaw, pitch, roll = np.degrees([-b, a, -g])
    return float(yaw), float(pitch), float(roll)


def project_model(
    yaw: float, pitch: float, roll: float, image_size: tuple[int, int], distance_mm: float = 600.0
) -> np.ndarray:
    """Project the mean face at a given pose into the image: (len(MODEL_INDICES), 2) pixels.

    The nose tip lands on the image centre. Useful for tests and for checking the sign convention.
    """
    rvec, _ = cv2.Rodrigues(rotation_from_angles(yaw, pitch, roll))
    tvec = np.array([0.0, 0.0, distance_mm])
    pts, _ = cv2.projectPoints(MODEL_POINTS_3D, rvec, tvec, camera_matrix(image_size), None)
    return pts.reshape(-1, 2)


def estimate_head_pose(landmarks68: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees for 68 landmarks (x, y pixels) of an image of ``(height, width)``.

    Returns NaNs when the landmarks contain NaN (no face found in that frame).
    """
    pts = np.asarray(landmarks68, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"estimate_head_pose expects (68, 2) landmarks, got shape {tuple(pts.shape)}")
    image_points = pts[MODEL_INDICES]
    if not np.isfinite(image_points).all():
        return (float("nan"),) * 3
    k = camera_matrix(image_size)
    # Start from a frontal pose at the distance implied by the eye-corner spacing; this keeps the
    # iterative solver away from the mirrored (face-behind-camera) solution.
    eye_px = max(float(np.linalg.norm(pts[45] - pts[36])), 1.0)
    z = k[0, 0] * _EYE_CORNER_DISTANCE_MM / eye_px
    nose = pts[30]
    tvec0 = np.array([[(nose[0] - k[0, 2]) * z / k[0, 0]], [(nose[1] - k[1, 2]) * z / k[1, 1]], [z]])
    rvec0 = np.zeros((3, 1))
    ok, rvec, _ = cv2.solvePnP(
        MODEL_POINTS_3D, image_points, k, None, rvec0, tvec0,
        useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        return (float("nan"),) * 3
    rotation, _ = cv2.Rodrigues(rvec)
    return angles_from_rotation(rotation)


def estimate_head_pose_batch(landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(T, 68, 2) landmarks (NaN rows allowed) -> (T, 3) float32 yaw/pitch/roll degrees (NaN rows kept)."""
    landmarks = np.asarray(landmarks)
    out = np.full((len(landmarks), 3), np.nan, dtype=np.float32)
    for t, pts in enumerate(landmarks):
        out[t] = estimate_head_pose(pts, image_size)
    return out
