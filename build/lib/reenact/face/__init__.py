"""Face detection, 68-point landmarks, head pose and the crop rules (crop_vox) used by preprocessing."""

from __future__ import annotations

from reenact.face.crop import (
    crop_and_resize,
    enlarge_box,
    face_crop_box,
    place_in_frame,
    rescale_box,
    square_box,
    union_boxes,
)
from reenact.face.detection import DETECTOR_NAMES, FaceBox, FaceDetector, build_face_detector
from reenact.face.landmarks import (
    LANDMARK_BACKENDS,
    LandmarkDetector,
    build_landmark_detector,
    mirror_landmarks,
    stack_landmarks,
)
from reenact.face.optional import face_alignment_available
from reenact.face.pose import estimate_head_pose, estimate_head_pose_batch

__all__ = [
    "DETECTOR_NAMES",
    "LANDMARK_BACKENDS",
    "FaceBox",
    "FaceDetector",
    "LandmarkDetector",
    "build_face_detector",
    "build_landmark_detector",
    "crop_and_resize",
    "enlarge_box",
    "estimate_head_pose",
    "estimate_head_pose_batch",
    "face_alignment_available",
    "face_crop_box",
    "mirror_landmarks",
    "place_in_frame",
    "rescale_box",
    "square_box",
    "stack_landmarks",
    "union_boxes",
]
