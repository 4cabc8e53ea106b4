"""Face detection, landmarks, head pose and the crop rules (reenact.face)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from reenact.face import (
    FaceBox,
    build_face_detector,
    build_landmark_detector,
    crop_and_resize,
    enlarge_box,
    estimate_head_pose,
    face_alignment_available,
    face_crop_box,
    mirror_landmarks,
    place_in_frame,
    square_box,
    stack_landmarks,
    union_boxes,
)
from reenact.face.landmarks import FLIP_PERMUTATION_68
from reenact.face.pose import (
    MODEL_INDICES,
    MODEL_POINTS_3D,
    angles_from_rotation,
    camera_matrix,
    project_model,
    rotation_from_angles,
)

# ---------------------------------------------------------------- boxes and crop rules (no models)


def test_face_box_iou_union_area() -> None:
    a = FaceBox(0, 0, 10, 10, 0.9)
    b = FaceBox(5, 0, 15, 10, 0.8)
    assert a.area == 100 and a.center == (5.0, 5.0)
    assert a.iou(b) == pytest.approx(50 / 150)
    assert a.iou(FaceBox(20, 20, 30, 30)) == 0.0
    u = a.union(b)
    assert u.as_tuple() == (0, 0, 15, 10) and u.score == 0.8
    assert union_boxes([a, b, (2, -3, 4, 5)]) == (0, -3, 15, 10)


def test_enlarge_and_square_follow_crop_vox() -> None:
    # 100 wide x 200 high face: +10% per side keeps the aspect ratio, then the square takes the long side.
    assert enlarge_box((100, 100, 200, 300), 0.1) == pytest.approx((90, 80, 210, 320))
    assert square_box((90, 80, 210, 320)) == pytest.approx((30, 80, 270, 320))
    # the combined rule: side = 1.2 * max(w, h) around the centre
    crop = face_crop_box((100, 100, 200, 300), 1000, 1000, increase=0.1, policy="reject")
    assert crop == (30, 80, 270, 320)


def test_placement_reject_shift_and_impossible() -> None:
    near_left = face_crop_box((0, 100, 100, 200), 640, 480, increase=0.1)  # square would start at x=-10
    assert face_crop_box((0, 100, 100, 200), 640, 480, increase=0.1, policy="reject") is None
    assert near_left == (0, 90, 120, 210)  # shifted right by 10, size kept
    assert place_in_frame((600.0, 400.0, 700.0, 500.0), 640, 480, "shift") == (540, 380, 640, 480)
    assert place_in_frame((0.0, 0.0, 500.0, 500.0), 640, 480, "shift") is None  # larger than the frame height
    with pytest.raises(ValueError, match="unknown placement policy"):
        place_in_frame((0.0, 0.0, 5.0, 5.0), 10, 10, "clamp")  # type: ignore[arg-type]


def test_crop_and_resize_pads_outside_and_antialiases() -> None:
    frame = np.full((100, 100, 3), 200, np.uint8)
    out = crop_and_resize(frame, (-50, 0, 50, 100), 20)  # left half of the box is outside the frame
    assert out.shape == (20, 20, 3)
    assert out[:, :9].max() == 0 and out[:, 11:].min() == 200
    # A 1-pixel checkerboard must average to grey when shrunk 8x (point sampling would give 0 or 255).
    checker = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)
    small = crop_and_resize(np.repeat(checker[:, :, None], 3, 2), (0, 0, 256, 256), 32)
    assert np.abs(small.astype(float) - 127.5).max() < 2
    up = crop_and_resize(frame, (10, 10, 20, 20), 64)  # upscaling path
    assert up.shape == (64, 64, 3) and (up == 200).all()


# ---------------------------------------------------------------- head pose (synthetic geometry)


def _model_landmarks(points_2d: np.ndarray) -> np.ndarray:
    lm = np.full((68, 2), np.nan)
    lm[MODEL_INDICES] = points_2d
    return lm


def test_pose_angles_mean_what_the_synthetic_labels_mean() -> None:
    from reenact.data.synthetic_scene import head_rotation  # y up, z towards the camera

    to_camera_axes = np.diag([1.0, -1.0, -1.0])  # OpenCV: y down, z away from the camera
    for angles in [(25.0, -10.0, 8.0), (-35.0, 15.0, -12.0), (5.0, 30.0, -20.0)]:
        rotation = rotation_from_angles(*angles)
        np.testing.assert_allclose(rotation, to_camera_axes @ head_rotation(*angles) @ to_camera_axes, atol=1e-12)
        assert angles_from_rotation(rotation) == pytest.approx(angles, abs=1e-9)


def test_pose_recovers_known_angles_and_frontal_is_zero() -> None:
    size = (256, 256)
    frontal = _model_landmarks(project_model(0, 0, 0, size))
    assert estimate_head_pose(frontal, size) == pytest.approx((0, 0, 0), abs=1e-3)
    for angles in [(25.0, -10.0, 8.0), (-35.0, 15.0, -12.0)]:
        got = estimate_head_pose(_model_landmarks(project_model(*angles, size)), size)
        assert got == pytest.approx(angles, abs=0.1)
    assert np.isnan(estimate_head_pose(np.full((68, 2), np.nan), size)).all()


def test_pose_sign_convention_from_physical_rotations() -> None:
    """Rotate the face by hand (Rodrigues) and check the documented signs, not the module's own inverse."""
    size = (256, 256)
    k = camera_matrix(size)

    def pose_after(axis: tuple[float, float, float], degrees: float) -> tuple[np.ndarray, tuple]:
        rvec = np.radians(degrees) * np.asarray(axis, dtype=np.float64)
        pts, _ = cv2.projectPoints(MODEL_POINTS_3D, rvec, np.array([0.0, 0.0, 600.0]), k, None)
        lm = _model_landmarks(pts.reshape(-1, 2))
        return lm, estimate_head_pose(lm, size)

    lm, (yaw, _, _) = pose_after((0, -1, 0), 20)  # nose swings towards image right
    assert lm[30, 0] > (lm[36, 0] + lm[45, 0]) / 2 and yaw == pytest.approx(20, abs=0.1)
    lm, (_, pitch, _) = pose_after((1, 0, 0), 15)  # with y down, +x rotation moves the nose tip down
    assert lm[30, 1] - lm[27, 1] > 0 and pitch == pytest.approx(15, abs=0.1)
    lm, (_, _, roll) = pose_after((0, 0, -1), 10)  # counter-clockwise on screen: image-right eye goes up
    assert lm[45, 1] < lm[36, 1] and roll == pytest.approx(10, abs=0.1)


def test_mirrored_landmarks_negate_yaw_and_roll() -> None:
    size = (200, 300)
    lm = _model_landmarks(project_model(18.0, 7.0, -9.0, size))
    yaw, pitch, roll = estimate_head_pose(mirror_landmarks(lm, 300), size)
    assert (yaw, pitch, roll) == pytest.approx((-18.0, 7.0, 9.0), abs=0.1)
    assert (FLIP_PERMUTATION_68[FLIP_PERMUTATION_68] == np.arange(68)).all()


# ---------------------------------------------------------------- backends and errors


def test_unknown_backends_raise_one_line_errors() -> None:
    with pytest.raises(ValueError, match="unknown face detector 'retina'") as info:
        build_face_detector("retina")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown landmark backend"):
        build_landmark_detector("mediapipe")


@pytest.mark.skipif(face_alignment_available(), reason="face-alignment and its weights are installed here")
def test_fan_backend_explains_what_is_missing() -> None:
    for build in (lambda: build_face_detector("fan"), lambda: build_landmark_detector("fan")):
        with pytest.raises((ImportError, FileNotFoundError), match="face-alignment|weight file") as info:
            build()
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------- real images


@pytest.fixture(scope="module")
def portrait(faces_dir) -> np.ndarray:
    import imageio.v3 as iio

    return np.ascontiguousarray(iio.imread(faces_dir / "s0.jpg")[..., :3])  # 600x704 painted portrait


@pytest.fixture(scope="module")
def landmarker():
    return build_landmark_detector("dlib")


@pytest.mark.parametrize("name", ["mtcnn", "dlib"])
def test_detectors_find_the_portrait_face_and_nothing_in_blank(name: str, portrait: np.ndarray) -> None:
    detector = build_face_detector(name)
    boxes = detector.detect(portrait)
    assert len(boxes) == 1
    # the face sits around x 275-365, y 65-185 in this portrait (both detectors, different box styles)
    assert boxes[0].iou(FaceBox(275, 70, 362, 182)) > 0.5
    assert detector.detect(np.full((240, 320, 3), 127, np.uint8)) == []
    # detection on a downscaled copy maps boxes back: a 2x portrait detected at the original height
    big = cv2.resize(portrait, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    mapped = build_face_detector(name, detect_height=portrait.shape[0]).detect(big)
    assert len(mapped) == 1 and mapped[0].iou(boxes[0].scaled(2, 2)) > 0.9


def test_batched_detection_matches_single(portrait: np.ndarray) -> None:
    detector = build_face_detector("mtcnn", detect_height=360)
    blank = np.zeros_like(portrait)
    batched = detector.detect_batch([portrait, blank, portrait])
    assert [len(b) for b in batched] == [1, 0, 1]
    assert batched[0][0].iou(detector.detect(portrait)[0]) > 0.95


def test_landmarks_lie_in_the_face_box(portrait: np.ndarray, landmarker) -> None:
    points = landmarker.detect(portrait)
    assert points is not None and points.shape == (68, 2)
    box = FaceBox(*enlarge_box(build_face_detector("mtcnn").detect(portrait)[0], 0.1))
    inside = (points[:, 0] > box.x0) & (points[:, 0] < box.x1) & (points[:, 1] > box.y0) & (points[:, 1] < box.y1)
    assert inside.all()
    eyes_y, nose_y, mouth_y, chin_y = points[36:48, 1].mean(), points[30, 1], points[48:60, 1].mean(), points[8, 1]
    assert eyes_y < nose_y < mouth_y < chin_y
    assert points[36:42, 0].mean() < points[42:48, 0].mean()  # label 36-41 is the eye on the image left
    results = landmarker.detect_batch([portrait, np.zeros((128, 128, 3), np.uint8)])
    assert results[1] is None
    stacked = stack_landmarks(results)
    assert stacked.shape == (2, 68, 2) and np.isnan(stacked[1]).all() and np.allclose(stacked[0], points)


def test_real_face_pose_frontal_and_mirrored(faces_dir, landmarker) -> None:
    from reenact.data.video import read_frames

    frame = read_frames(faces_dir / "d0.mp4", [0])[0]  # a frontal, centred face (512x512)
    points = landmarker.detect(frame)
    yaw, pitch, roll = estimate_head_pose(points, frame.shape[:2])
    assert abs(yaw) < 6 and abs(pitch) < 10 and abs(roll) < 6
    turned = landmarker.detect(np.ascontiguousarray(frame[:, ::-1]))
    assert np.abs(mirror_landmarks(points, frame.shape[1]) - turned).max() < 4  # same face, relabelled
    m_yaw, m_pitch, m_roll = estimate_head_pose(turned, frame.shape[:2])
    assert m_yaw == pytest.approx(-yaw, abs=1.5) and m_roll == pytest.approx(-roll, abs=1.5)
    assert m_pitch == pytest.approx(pitch, abs=1.5)
