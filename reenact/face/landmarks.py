"""68-point facial landmarks (iBUG 300-W / Multi-PIE layout) per image or over a list of frames.

Backends:

- ``"dlib"`` (offline): dlib's HOG face detector + ``shape_predictor_68_face_landmarks.dat`` from
  face_recognition_models (located with ``importlib.util.find_spec``, so no pkg_resources). About 5-10 ms
  per 256x256 frame on one CPU core. The model is trained on iBUG 300-W data (non-commercial licence).
- ``"fan"`` (optional): face-alignment's 2D FAN-4 with its S3FD detector and ``flip_input=False``, the
  landmarker of the FOMM/pose-evaluation AKD protocol. Used only when installed with weights present.

Points are (x, y) pixel coordinates of the input image, float64, shape (68, 2). Where several faces are
found one is chosen by ``face_choice``: ``"largest"`` (default) or ``"first"`` (highest detector score,
the pose-evaluation convention for AKD).
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from reenact.face.detection import DlibHogDetector, FaceBox, as_rgb_uint8
from reenact.face.optional import require_face_alignment

LANDMARK_BACKENDS = ("dlib", "fan")
NUM_LANDMARKS = 68
FaceChoice = Literal["largest", "first"]


@runtime_checkable
class LandmarkDetector(Protocol):
    """68 landmarks of one face per image; None where no face is found."""

    def detect(self, image: np.ndarray) -> np.ndarray | None: ...

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]: ...


def stack_landmarks(results: Sequence[np.ndarray | None]) -> np.ndarray:
    """Per-frame results -> (T, 68, 2) float32 with NaN rows for frames without a face."""
    out = np.full((len(results), NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
    for t, pts in enumerate(results):
        if pts is not None:
            out[t] = pts
    return out


def _choose(boxes: Sequence[FaceBox], face_choice: FaceChoice) -> int:
    if face_choice == "first":
        return int(np.argmax([b.score for b in boxes]))
    return int(np.argmax([b.area for b in boxes]))


def dlib_model_path(file_name: str = "shape_predictor_68_face_landmarks.dat") -> Path:
    """Path of a model file shipped by face_recognition_models."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("landmark backend 'dlib' needs face_recognition_models (pip install 'reenact[face]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / file_name
    if not path.is_file():
        raise FileNotFoundError(f"dlib model file {path} is missing; reinstall face_recognition_models")
    return path


class DlibLandmarkDetector:
    """HOG face detection + dlib's 68-point shape predictor.

    ``upsample`` doubles the image that many times before HOG detection (finds faces under ~80 px);
    ``retry_upsampled`` retries once with one more upsampling when nothing was found in a small image.
    """

    def __init__(
        self,
        upsample: int = 0,
        face_choice: FaceChoice = "largest",
        retry_upsampled: bool = True,
    ) -> None:
        import dlib

        self.face_choice = face_choice
        self.retry_upsampled = retry_upsampled
        self._hog = DlibHogDetector(upsample=upsample, min_score=0.0)
        self._hog_up = DlibHogDetector(upsample=upsample + 1, min_score=0.0)
        self._predictor = dlib.shape_predictor(str(dlib_model_path()))
        self._dlib = dlib

    def detect_in_box(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """Landmarks for a face whose (dlib-HOG-like) box is already known."""
        rect = self._dlib.rectangle(int(round(box.x0)), int(round(box.y0)),
                                    int(round(box.x1)) - 1, int(round(box.y1)) - 1)
        shape = self._predictor(as_rgb_uint8(image), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        image = as_rgb_uint8(image)
        boxes = self._hog.detect(image)
        if not boxes and self.retry_upsampled and max(image.shape[:2]) <= 400:
            boxes = self._hog_up.detect(image)
        if not boxes:
            return None
        return self.detect_in_box(image, boxes[_choose(boxes, self.face_choice)])

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        return [self.detect(im) for im in images]


class FanLandmarkDetector:
    """face-alignment 2D FAN-4 (+ S3FD), ``flip_input=False``; needs the package and cached weights."""

    def __init__(self, device: str = "cpu", face_choice: FaceChoice = "largest") -> None:
        require_face_alignment(need_landmark_model=True)
        import face_alignment

        kwargs: dict[str, object] = {"device": device, "flip_input": False, "face_detector": "sfd"}
        if "compile" in inspect.signature(face_alignment.FaceAlignment.__init__).parameters:
            kwargs["compile"] = False  # compiling costs a minute on CPU and is not worth it here
        self.face_choice = face_choice
        self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, **kwargs)

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        image = as_rgb_uint8(image)
        points, _, boxes = self._fa.get_landmarks_from_image(image, return_bboxes=True)
        if not points:
            return None
        faces = [FaceBox(*map(float, b[:4]), score=float(b[4]) if len(b) > 4 else 1.0) for b in boxes]
        return np.asarray(points[_choose(faces, self.face_choice)], dtype=np.float64)[:, :2]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        return [self.detect(im) for im in images]


def build_landmark_detector(
    name: str = "dlib", device: str = "cpu", *, face_choice: FaceChoice = "largest"
) -> LandmarkDetector:
    """Build a 68-point landmark detector by name (``dlib`` or ``fan``)."""
    if face_choice not in ("largest", "first"):
        raise ValueError(f"unknown face_choice {face_choice!r}; choose 'largest' or 'first'")
    if name == "dlib":
        if importlib.util.find_spec("dlib") is None:
            raise ImportError("landmark backend 'dlib' needs dlib-bin (pip install 'reenact[face]')")
        return DlibLandmarkDetector(face_choice=face_choice)
    if name == "fan":
        return FanLandmarkDetector(device=device, face_choice=face_choice)
    raise ValueError(f"unknown landmark backend {name!r}; choose one of {', '.join(LANDMARK_BACKENDS)}")


def _flip_permutation_68() -> np.ndarray:
    """Index map i -> the point that takes label i after a horizontal flip (left/right swap)."""
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips
    perm = np.arange(NUM_LANDMARKS)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


FLIP_PERMUTATION_68 = _flip_permutation_68()


def mirror_landmarks(points: np.ndarray, image_width: int) -> np.ndarray:
    """Landmarks of the horizontally flipped image (``image[:, ::-1]``): x -> W-1-x and left/right relabelled.

    Works on (68, 2) or (..., 68, 2) arrays of pixel-index coordinates.
    """
    points = np.asarray(points)
    flipped = points[..., FLIP_PERMUTATION_68, :].copy()
    flipped[..., 0] = (image_width - 1) - flipped[..., 0]
    return flipped
