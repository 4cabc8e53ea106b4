"""AKD (average keypoint distance) and MKR (missing keypoint rate) from 68-point face landmarks.

The definitions follow FOMM's pose-evaluation protocol for faces (cmp_kp.py), made robust:
- Every frame is resized to 256 x 256 (the protocol's ``--image_shape 256,256``) before landmark
  detection, so AKD is in pixels of a 256 x 256 frame whatever the video's size.
- Per frame where *both* faces are found: the mean over the 68 x 2 coordinates of |x_gt - x_pred|
  (a per-coordinate L1, not a Euclidean distance). AKD is the mean of these over all such frames.
- MKR: among frames whose ground truth has a detected face, the fraction whose prediction has none.
  (The original face script skips such frames silently and has no MKR; its body MKR is the analogous
  per-keypoint rate.) Frames without a ground-truth face are counted and skipped, never a crash.
- Landmarks come from a configurable backend: ``"fan"`` (face-alignment's FAN, the original protocol,
  needs its weights) or ``"dlib"`` (offline). The two give different numbers; the backend is recorded,
  with the dlib backend's refinement settings (its landmarks are refined until their box settles, so
  that a frame shifted by whole pixels reads AKD = the shift; see reenact.face.landmarks).
- A motion of (dx, dy) pixels reads (|dx| + |dy|) / 2: the mean is over both coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reenact.metrics.backends import describe
from reenact.metrics.frames import FrameSequence, Video

AKD_FRAME_SIZE = 256
_BACKEND_PACKAGES = {"fan": ("face-alignment", "face_alignment"), "dlib": ("dlib-bin", "dlib")}


def detect_landmarks(
    video: Video,
    detector: object,
    frame_size: int = AKD_FRAME_SIZE,
    frame_indices: Sequence[int] | None = None,
) -> list[np.ndarray | None]:
    """68-point landmarks (pixels of the ``frame_size`` frame) per frame; None where no face is found.

    ``detector`` is anything with ``detect(image (H, W, 3) uint8) -> (68, 2) | None``, e.g. from
    :func:`reenact.face.landmarks.build_landmark_detector`.
    """
    sequence = FrameSequence.wrap(video)
    indices = range(len(sequence)) if frame_indices is None else frame_indices
    results: list[np.ndarray | None] = []
    for index in indices:
        points = detector.detect(sequence.uint8_frame(index, frame_size))
        results.append(None if points is None else np.asarray(points, dtype=np.float64)[:, :2])
    return results


@dataclass
class KeypointScores:
    """Per-frame AKD and MKR indicators; NaN marks frames that do not count."""

    akd_per_frame: np.ndarray  # (T,) pixel distance where both faces were found, else NaN
    missing_per_frame: np.ndarray  # (T,) 1 if GT face found and prediction's not, 0 if both, NaN if no GT face

    @property
    def akd(self) -> float | None:
        valid = ~np.isnan(self.akd_per_frame)
        return float(self.akd_per_frame[valid].mean()) if valid.any() else None

    @property
    def mkr(self) -> float | None:
        valid = ~np.isnan(self.missing_per_frame)
        return float(self.missing_per_frame[valid].mean()) if valid.any() else None

    @property
    def counts(self) -> dict[str, int]:
        return {
            "frames": int(self.akd_per_frame.shape[0]),
            "frames_with_gt_face": int((~np.isnan(self.missing_per_frame)).sum()),
            "frames_with_both_faces": int((~np.isnan(self.akd_per_frame)).sum()),
            "frames_missing_prediction_face": int(np.nansum(self.missing_per_frame)),
        }


def keypoint_scores(
    prediction_landmarks: Sequence[np.ndarray | None],
    target_landmarks: Sequence[np.ndarray | None],
) -> KeypointScores:
    """AKD and MKR per frame from landmark lists of equal length (None = no face)."""
    if len(prediction_landmarks) != len(target_landmarks):
        raise ValueError(f"{len(prediction_landmarks)} predicted landmark sets but {len(target_landmarks)} targets")
    count = len(target_landmarks)
    akd = np.full(count, np.nan)
    missing = np.full(count, np.nan)
    for t, (pred, true) in enumerate(zip(prediction_landmarks, target_landmarks, strict=True)):
        if true is None:
            continue
        if pred is None:
            missing[t] = 1.0
            continue
        pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
        if pred.shape != true.shape:
            raise ValueError(f"frame {t}: landmark shapes differ, {pred.shape} vs {true.shape}")
        missing[t] = 0.0
        akd[t] = np.abs(true - pred).mean()  # over the 68 x 2 coordinates
    return KeypointScores(akd, missing)


class AKDMetric:
    """AKD and MKR between two videos with a named landmark backend (``"fan"`` or ``"dlib"``).

    ``face_choice="first"`` keeps the most confident detection, as pose-evaluation keeps the first face.
    """

    def __init__(
        self,
        backend: str = "fan",
        device: str = "cpu",
        frame_size: int = AKD_FRAME_SIZE,
        face_choice: str = "first",
        detector: object | None = None,
    ) -> None:
        if detector is None:
            from reenact.face.landmarks import build_landmark_detector

            detector = build_landmark_detector(backend, device, face_choice=face_choice)
        self.detector = detector
        self.backend_name = backend
        self.frame_size = frame_size
        self.face_choice = face_choice

    def landmarks(self, video: Video) -> list[np.ndarray | None]:
        return detect_landmarks(video, self.detector, self.frame_size)

    def scores(
        self,
        prediction: Video,
        target: Video,
    ) -> KeypointScores:
        prediction, target = FrameSequence.wrap(prediction), FrameSequence.wrap(target)
        if len(prediction) != len(target):
            raise ValueError(f"prediction has {len(prediction)} frames but target has {len(target)}")
        return keypoint_scores(self.landmarks(prediction), self.landmarks(target))

    def __call__(
        self,
        prediction: Video,
        target: Video,
    ) -> dict[str, float | int | None]:
        """{"akd": pixels or None, "mkr": rate or None, plus frame counts}."""
        result = self.scores(prediction, target)
        return {"akd": result.akd, "mkr": result.mkr, **result.counts}

    @property
    def backend(self) -> dict[str, object]:
        return landmark_backend_record(self.backend_name, self.detector, self.face_choice, self.frame_size)


def landmark_backend_record(
    name: str, detector: object, face_choice: str, frame_size: int = AKD_FRAME_SIZE
) -> dict[str, object]:
    """The provenance of landmark-based scores: backend name, its package version, detector class and settings."""
    packages = _BACKEND_PACKAGES.get(name, (name,))
    # settings that change the landmarks (the dlib backend's refinement) belong with the numbers
    settings = getattr(detector, "settings", None)
    extra = {"detector_settings": dict(settings)} if isinstance(settings, dict) else {}
    return describe(
        packages[0],
        *packages,
        landmarks=name,
        detector=type(detector).__name__,
        points=68,
        frame_size=frame_size,
        face_choice=face_choice,
        **extra,
    )
