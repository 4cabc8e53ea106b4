"""AED (average embedding distance): how far the prediction's identity is from the reference's.

Per frame: embed the face of the prediction and of the reference (the ground truth in reconstruction,
the source image in cross-identity animation) and take a distance between the embeddings; AED is the
mean over frames. The embedder is pluggable (anything with ``embed(image, landmarks)`` and ``backend``).

Default embedder: dlib's face-recognition ResNet (128-d, ``dlib_face_recognition_resnet_model_v1.dat``
from face_recognition_models), run offline on the face aligned by its 68 landmarks. FOMM's protocol
used OpenFace on the whole frame resized to 96 x 96 without alignment, so numbers from this default are
**not comparable** with the paper's AED (0.140 on VoxCeleb); compare methods with the same embedder.
The default distance is the protocol's squared L2, sum((e_ref - e_pred)^2); ``"l2"`` (dlib's usual
same-person threshold is 0.6 in that unit) and ``"cosine"`` are available.

Frames are 256 x 256 (as for AKD). Frames without a reference face are counted and skipped. Where the
prediction's own face is not found, it is aligned with the fallback landmarks (the frame-aligned
target's) and counted, so a blurry prediction still pays in AED rather than being dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from reenact.metrics.backends import describe
from reenact.metrics.frames import FrameSequence, Video

DISTANCES = ("squared_l2", "l2", "cosine")


@runtime_checkable
class FaceEmbedder(Protocol):
    """Identity embedding of the face in ``image`` (H, W, 3) uint8 located by 68 ``landmarks`` (68, 2)."""

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray: ...

    @property
    def backend(self) -> dict[str, object]: ...


class DlibFaceEmbedder:
    """dlib's 128-d face-recognition ResNet on the landmark-aligned 150 x 150 face chip (offline)."""

    def __init__(self, model_path: str | None = None, padding: float = 0.25) -> None:
        import dlib

        if model_path is None:
            from reenact.face.landmarks import dlib_model_path

            model_path = str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"dlib face recognition model not found: {model_path}")
        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(model_path)
        self._model_name = Path(model_path).name
        self.padding = padding

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        points = np.asarray(landmarks, dtype=np.float64)
        if points.shape != (68, 2):
            raise ValueError(f"dlib face embedding needs (68, 2) landmarks, got {points.shape}")
        dlib = self._dlib
        x0, y0 = np.floor(points.min(axis=0)).astype(int)
        x1, y1 = np.ceil(points.max(axis=0)).astype(int)
        # dlib aligns the chip from the landmark layout; the rectangle only needs to enclose the face
        shape = dlib.full_object_detection(
            dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
            dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in points]),
        )
        descriptor = self._model.compute_face_descriptor(np.ascontiguousarray(image), shape, 0, self.padding)
        return np.asarray(descriptor, dtype=np.float64)  # (128,)

    @property
    def backend(self) -> dict[str, object]:
        return describe(
            "dlib-bin",
            "dlib-bin",
            "dlib",
            embedder="dlib_resnet_128d",
            model=self._model_name,
            alignment="68-landmark face chip",
            comparable_with_fomm_aed=False,
        )


def build_face_embedder(name: str = "dlib", model_path: str | None = None) -> FaceEmbedder:
    """Embedder by name; only ``"dlib"`` ships offline. Pass an object instead for anything else."""
    if name == "dlib":
        return DlibFaceEmbedder(model_path)
    raise ValueError(f"unknown face embedder {name!r}; use 'dlib' or pass a FaceEmbedder object")


def identity_distance(a: np.ndarray, b: np.ndarray, distance: str = "squared_l2") -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if distance == "squared_l2":
        return float(((a - b) ** 2).sum())
    if distance == "l2":
        return float(np.linalg.norm(a - b))
    if distance == "cosine":
        return float(1.0 - a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    raise ValueError(f"unknown identity distance {distance!r}; choose one of {DISTANCES}")


@dataclass
class IdentityScores:
    aed_per_frame: np.ndarray  # (T,) distance, NaN where the frame does not count
    frames_without_reference_face: int
    frames_aligned_with_fallback: int

    @property
    def aed(self) -> float | None:
        valid = ~np.isnan(self.aed_per_frame)
        return float(self.aed_per_frame[valid].mean()) if valid.any() else None

    @property
    def counts(self) -> dict[str, int]:
        return {
            "aed_frames": int((~np.isnan(self.aed_per_frame)).sum()),
            "aed_frames_without_reference_face": self.frames_without_reference_face,
            "aed_frames_aligned_with_target_landmarks": self.frames_aligned_with_fallback,
        }


def identity_scores(
    prediction: FrameSequence,
    reference: FrameSequence,
    prediction_landmarks: Sequence[np.ndarray | None],
    reference_landmarks: Sequence[np.ndarray | None],
    embedder: FaceEmbedder,
    distance: str = "squared_l2",
    fallback_landmarks: Sequence[np.ndarray | None] | None = None,
    frame_size: int = 256,
) -> IdentityScores:
    """Per-frame AED. ``reference`` has T frames or 1 (one source image for every frame).

    Landmarks are in pixels of the ``frame_size`` frame, as :func:`~reenact.metrics.akd.detect_landmarks`
    gives them.
    """
    count = len(prediction)
    if len(reference) not in (1, count):
        raise ValueError(f"reference has {len(reference)} frames; expected 1 or {count}")
    if distance not in DISTANCES:
        raise ValueError(f"unknown identity distance {distance!r}; choose one of {DISTANCES}")
    values = np.full(count, np.nan)
    no_reference = fallback_used = 0
    shared_reference: np.ndarray | None = None
    for t in range(count):
        r = t if len(reference) == count else 0
        if reference_landmarks[r] is None:
            no_reference += 1
            continue
        points = prediction_landmarks[t]
        if points is None and fallback_landmarks is not None and fallback_landmarks[t] is not None:
            points = fallback_landmarks[t]
            fallback_used += 1
        if points is None:
            continue
        if len(reference) == count or shared_reference is None:
            reference_embedding = embedder.embed(reference.uint8_frame(r, frame_size), reference_landmarks[r])
            if len(reference) == 1:
                shared_reference = reference_embedding  # one source image: embed it once
        else:
            reference_embedding = shared_reference
        predicted_embedding = embedder.embed(prediction.uint8_frame(t, frame_size), points)
        values[t] = identity_distance(reference_embedding, predicted_embedding, distance)
    return IdentityScores(values, no_reference, fallback_used)


class AEDMetric:
    """AED between a prediction and its identity reference, detecting landmarks itself."""

    def __init__(
        self,
        embedder: FaceEmbedder | None = None,
        landmark_backend: str = "dlib",
        device: str = "cpu",
        distance: str = "squared_l2",
        frame_size: int = 256,
        detector: object | None = None,
    ) -> None:
        from reenact.metrics.akd import AKDMetric

        self.embedder = embedder if embedder is not None else build_face_embedder("dlib")
        self.landmarks = AKDMetric(landmark_backend, device, frame_size, detector=detector)
        self.distance = distance
        self.frame_size = frame_size

    def scores(self, prediction: Video, reference: Video) -> IdentityScores:
        prediction, reference = FrameSequence.wrap(prediction), FrameSequence.wrap(reference)
        reference_landmarks = self.landmarks.landmarks(reference)
        # a frame-aligned reference has the prediction's pose: its landmarks can align an undetected face
        fallback = reference_landmarks if len(reference) == len(prediction) else None
        return identity_scores(
            prediction,
            reference,
            self.landmarks.landmarks(prediction),
            reference_landmarks,
            self.embedder,
            self.distance,
            fallback,
            self.frame_size,
        )

    def __call__(self, prediction: Video, reference: Video) -> dict[str, float | int | None]:
        """{"aed": distance or None, plus frame counts}; ``reference`` may be a single image (1 frame)."""
        result = self.scores(prediction, reference)
        return {"aed": result.aed, **result.counts}

    @property
    def backend(self) -> dict[str, object]:
        return {**self.embedder.backend, "distance": self.distance, "landmarks": self.landmarks.backend}
