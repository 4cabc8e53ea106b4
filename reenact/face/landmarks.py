"""68-point facial landmarks (iBUG 300-W / Multi-PIE layout) per image or over a list of frames.

Backends:

- ``"dlib"`` (offline): dlib's HOG face detector + ``shape_predictor_68_face_landmarks.dat`` from
  face_recognition_models (located with ``importlib.util.find_spec``, so no pkg_resources). The model is
  trained on iBUG 300-W data (non-commercial licence). The shape predictor's landmarks partly follow the
  box they are predicted in, and the HOG box moves in steps of several pixels, so the first estimate is
  refined: a box is derived from the landmarks alone and the predictor run again until the box settles
  (see :class:`DlibLandmarkDetector`); a face shifted by whole pixels then gets landmarks shifted by
  exactly as much. The refinement makes a frame about 2.7 times slower (0.03 -> 0.09 s per 256x256
  frame on a 2-core VM; ``experiments/2026-11-30_akd_shift.md``).
- ``"fan"`` (optional): face-alignment's 2D FAN-4 with its S3FD detector and ``flip_input=False``, the
  landmarker of the FOMM/pose-evaluation AKD protocol. Used only when installed with weights present.

Points are (x, y) pixel coordinates of the input image, float64, shape (68, 2). Where several faces are
found one is chosen by ``face_choice``: ``"largest"`` (default) or ``"first"`` (highest detector score,
the pose-evaluation convention for AKD).
"""

from __future__ import annotations

import importlib.util
import inspect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from reenact.face.detection import DlibHogDetector, FaceBox, as_rgb_uint8
from reenact.face.optional import require_face_alignment

LANDMARK_BACKENDS = ("dlib", "fan")
NUM_LANDMARKS = 68
FaceChoice = Literal["largest", "first"]

# Where dlib's HOG detector puts its box relative to the 68 landmarks predicted in it, measured on 128 frames
# of the cropped real clips (``python benchmarks/akd_shift.py --calibrate``): the square's side is 2.74 times
# the RMS distance of the landmarks from their mean, its centre lies 3.5 % of the side above that mean, and
# the landmarks' RMS spread across is 0.84 times their spread down (an undistorted face). Boxes derived with
# these constants look to the shape predictor like the boxes it was trained on.
BOX_SIDE_PER_RMS = 2.74
BOX_CENTRE_RAISE = 0.035
FACE_ASPECT = 0.84
# Refinement defaults (experiments/2026-11-30_akd_shift.md): at most 20 predictor rounds (most frames settle
# in 2-4), each averaging the predictor over 5 boxes, offset diagonally by 4 % of the box's width and height.
REFINE_ITERATIONS = 20
REFINE_JITTER = 0.04


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


def _box_from_totals(totals: np.ndarray, count: int) -> tuple[int, int, int, int]:
    """The box ``(left, top, width, height)`` in whole pixels derived from landmark totals alone.

    ``totals`` (68, 2) int64 are sums of ``count`` whole-pixel landmark sets (the landmarks are
    ``totals / count``). The box has the area of the HOG box these landmarks would come from
    (``BOX_SIDE_PER_RMS``) and is square for an undistorted face; a face stretched across (as a
    portrait video squeezed into a square frame is) gets a box stretched alike (``FACE_ASPECT``), which
    the predictor maps onto its mean shape, and finds such faces far better than in a square box.
    Integer arithmetic makes the box an exact function of the landmarks: landmarks moved by whole pixels
    give a box moved by exactly as much and of the same size, which float rounding at ties could not.
    """
    n = NUM_LANDMARKS * count
    sums = totals.sum(axis=0).tolist()
    squares = (totals.astype(np.int64) ** 2).sum(axis=0).tolist()
    # n^2 x the mean squared distance from the mean, per axis: exact integers, unchanged by a shift
    spread_x, spread_y = (NUM_LANDMARKS * q - v * v for q, v in zip(squares, sums, strict=True))
    side = BOX_SIDE_PER_RMS * math.sqrt(spread_x + spread_y) / n
    # width / height = stretch^2, bounded so that a wild first estimate cannot make a sliver of a box
    stretch = math.sqrt(min(max(math.sqrt(max(spread_x, 1) / max(spread_y, 1)) / FACE_ASPECT, 0.4), 2.5))
    width, height = max(1, round(side * stretch)), max(1, round(side / stretch))
    centre_x, centre_y = ((2 * v + n) // (2 * n) for v in sums)  # floor(mean + 1/2), exactly
    centre_y -= round(BOX_CENTRE_RAISE * height)
    return centre_x - width // 2, centre_y - height // 2, width, height


class DlibLandmarkDetector:
    """HOG face detection + dlib's 68-point shape predictor, refined until the landmarks settle.

    ``upsample`` doubles the image that many times before HOG detection (finds faces under ~80 px);
    ``retry_upsampled`` retries once with one more upsampling when nothing was found in a small image.

    The shape predictor's output partly follows its box, and the HOG box moves in coarse steps, so
    landmarks from the HOG box alone misread small motions. After that first estimate, each
    refinement round derives a box from the landmarks only (:func:`_box_from_totals`) and predicts
    again, averaging the predictor over that box and 4 copies offset diagonally by ``refine_jitter``
    x its width and height (a smoother map, with fewer nearby fixed points). Rounds stop when the box
    repeats: at a fixed point its landmarks are returned, in a short cycle the mean of the cycle's
    landmarks. Both depend on the image and not on where the HOG box fell, so a face shifted by whole
    pixels gets landmarks shifted by exactly as much whenever the rounds reach the same fixed point.
    ``refine_iterations`` bounds the rounds (the last estimate is returned if the box has not
    repeated by then); 0 gives the landmarks of the HOG box alone, the behaviour before refinement.
    """

    def __init__(
        self,
        upsample: int = 0,
        face_choice: FaceChoice = "largest",
        retry_upsampled: bool = True,
        refine_iterations: int = REFINE_ITERATIONS,
        refine_jitter: float = REFINE_JITTER,
    ) -> None:
        import dlib

        if refine_iterations < 0 or refine_jitter < 0:
            raise ValueError(f"refine_iterations and refine_jitter must be >= 0, got {refine_iterations}, "
                             f"{refine_jitter}")
        self.face_choice = face_choice
        self.retry_upsampled = retry_upsampled
        self.refine_iterations = refine_iterations
        self.refine_jitter = refine_jitter
        self._hog = DlibHogDetector(upsample=upsample, min_score=0.0)
        self._hog_up = DlibHogDetector(upsample=upsample + 1, min_score=0.0)
        self._predictor = dlib.shape_predictor(str(dlib_model_path()))
        self._dlib = dlib

    @property
    def settings(self) -> dict[str, object]:
        """What changes the landmarks, for the provenance record of landmark-based metrics."""
        return {"refine_iterations": self.refine_iterations, "refine_jitter": self.refine_jitter}

    def _predict(self, image: np.ndarray, left: int, top: int, right: int, bottom: int) -> np.ndarray:
        """Whole-pixel landmarks (68, 2) int64 in the box ``[left, right) x [top, bottom)``."""
        shape = self._predictor(image, self._dlib.rectangle(left, top, right - 1, bottom - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.int64)

    def detect_in_box(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """Landmarks from one predictor pass in a (dlib-HOG-like) box that is already known."""
        return self._predict(as_rgb_uint8(image), int(round(box.x0)), int(round(box.y0)),
                             int(round(box.x1)), int(round(box.y1))).astype(np.float64)

    def refine(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Refine a first landmark estimate (68, 2) until the box derived from it settles (class doc)."""
        image = as_rgb_uint8(image)
        totals, count = np.rint(np.asarray(points, dtype=np.float64)).astype(np.int64), 1
        seen: dict[tuple[int, int, int, int], int] = {}  # box -> index of the round that predicted in it
        rounds: list[np.ndarray] = []  # landmarks of each round
        box = _box_from_totals(totals, count)
        while box not in seen:
            if len(rounds) == self.refine_iterations:  # not settled: the last estimate
                return rounds[-1] if rounds else totals.astype(np.float64)
            seen[box] = len(rounds)
            left, top, width, height = box
            # offsets from the box size alone, which a shift leaves unchanged
            sx, sy = round(self.refine_jitter * width), round(self.refine_jitter * height)
            offsets = [(0, 0), (-sx, -sy), (sx, -sy), (-sx, sy), (sx, sy)] if sx or sy else [(0, 0)]
            totals = sum(self._predict(image, left + dx, top + dy, left + dx + width, top + dy + height)
                         for dx, dy in offsets)
            count = len(offsets)
            rounds.append(totals / count)
            box = _box_from_totals(totals, count)
        return np.mean(rounds[seen[box]:], axis=0)  # a fixed point (one round) or a short cycle

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        image = as_rgb_uint8(image)
        boxes = self._hog.detect(image)
        if not boxes and self.retry_upsampled and max(image.shape[:2]) <= 400:
            boxes = self._hog_up.detect(image)
        if not boxes:
            return None
        points = self.detect_in_box(image, boxes[_choose(boxes, self.face_choice)])
        return self.refine(image, points) if self.refine_iterations else points

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
    name: str = "dlib",
    device: str = "cpu",
    *,
    face_choice: FaceChoice = "largest",
    refine_iterations: int = REFINE_ITERATIONS,
) -> LandmarkDetector:
    """Build a 68-point landmark detector by name (``dlib`` or ``fan``).

    ``refine_iterations`` bounds the dlib backend's box refinement (0: landmarks of the HOG box only,
    the behaviour before the refinement); FAN ignores it.
    """
    if face_choice not in ("largest", "first"):
        raise ValueError(f"unknown face_choice {face_choice!r}; choose 'largest' or 'first'")
    if name == "dlib":
        if importlib.util.find_spec("dlib") is None:
            raise ImportError("landmark backend 'dlib' needs dlib-bin (pip install 'reenact[face]')")
        return DlibLandmarkDetector(face_choice=face_choice, refine_iterations=refine_iterations)
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
