"""Face detection backends behind one small interface.

Backends (all return boxes in the input image's pixel coordinates, best score first):

- ``"mtcnn"`` (default): facenet-pytorch's MTCNN. Its P/R/O-net weights ship inside the wheel, so it
  runs offline. Scores are probabilities in [0, 1].
- ``"dlib"``: dlib's HOG + linear SVM frontal face detector (shipped with dlib). Scores are SVM
  margins (about 0 to 3), not probabilities. Fast on CPU, misses strong profiles.
- ``"fan"``: the S3FD detector of the optional ``face-alignment`` package (the detector crop_vox used
  to make VoxCeleb). Only available when that package is importable and its weights are already in
  the torch hub cache; nothing is ever downloaded.

``build_face_detector(..., detect_height=360)`` runs any backend on a frame scaled down to that height
(as crop_vox did) and maps the boxes back, which is much faster on HD video.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from reenact.face.optional import require_face_alignment

DETECTOR_NAMES = ("mtcnn", "dlib", "fan")


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned face box ``[x0, x1) x [y0, y1)`` in pixels with a detector score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def width(self) -> float:
        return max(0.0, self.x1 - self.x0)

    @property
    def height(self) -> float:
        return max(0.0, self.y1 - self.y0)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return (0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1))

    def iou(self, other: FaceBox) -> float:
        """Intersection over union; 0 for disjoint or empty boxes."""
        iw = min(self.x1, other.x1) - max(self.x0, other.x0)
        ih = min(self.y1, other.y1) - max(self.y0, other.y0)
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        return float(inter / (self.area + other.area - inter))

    def union(self, other: FaceBox) -> FaceBox:
        """The smallest box containing both (score: the lower of the two)."""
        return FaceBox(
            min(self.x0, other.x0), min(self.y0, other.y0),
            max(self.x1, other.x1), max(self.y1, other.y1), min(self.score, other.score),
        )

    def scaled(self, sx: float, sy: float) -> FaceBox:
        return FaceBox(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy, self.score)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in an RGB uint8 image (H, W, 3); results are sorted by score, best first."""

    def detect(self, image: np.ndarray) -> list[FaceBox]: ...

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]: ...


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate an image and return it as a C-contiguous (H, W, 3) uint8 RGB array."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"face detection expects a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"face detection expects an (H, W, 3) RGB image, got shape {tuple(image.shape)}")
    return np.ascontiguousarray(image)


def _sorted(boxes: list[FaceBox]) -> list[FaceBox]:
    return sorted(boxes, key=lambda b: b.score, reverse=True)


class MTCNNDetector:
    """facenet-pytorch MTCNN; weights ship with the package, so this works offline."""

    def __init__(self, device: str = "cpu", min_score: float = 0.9, min_face_size: int = 20) -> None:
        from facenet_pytorch import MTCNN  # slow import (about 3 s), so deferred

        self.min_score = min_score
        self._mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size, post_process=False)

    def _convert(self, boxes: object, probs: object) -> list[FaceBox]:
        # facenet-pytorch 2.5.3 returns object-dtype arrays under numpy 2 and None for "no face".
        if boxes is None:
            return []
        coords = np.asarray(boxes, dtype=object)
        if coords.size == 0 or coords.ndim != 2 or any(p is None for p in np.ravel(probs)):
            return []
        coords = coords.astype(np.float64)
        scores = np.asarray(probs, dtype=object).astype(np.float64).reshape(-1)
        found = [FaceBox(*map(float, c), score=float(s)) for c, s in zip(coords, scores, strict=True)]
        return _sorted([b for b in found if b.score >= self.min_score and b.area > 0])

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        boxes, probs = self._mtcnn.detect(as_rgb_uint8(image))
        return self._convert(boxes, probs)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        if not images:
            return []
        frames = [as_rgb_uint8(im) for im in images]
        if len({f.shape for f in frames}) != 1:  # MTCNN batches need equal sizes
            return [self.detect(f) for f in frames]
        boxes, probs = self._mtcnn.detect(np.stack(frames))
        return [self._convert(b, p) for b, p in zip(boxes, probs, strict=True)]


class DlibHogDetector:
    """dlib's HOG frontal face detector; scores are SVM margins (higher is more confident)."""

    def __init__(self, upsample: int = 0, min_score: float = 0.0) -> None:
        import dlib

        self.upsample = upsample
        self.min_score = min_score
        self._detector = dlib.get_frontal_face_detector()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        rects, scores, _ = self._detector.run(as_rgb_uint8(image), self.upsample, self.min_score)
        boxes = [
            FaceBox(float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1), float(s))
            for r, s in zip(rects, scores, strict=True)
        ]
        return _sorted(boxes)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        return [self.detect(im) for im in images]


class FanS3FDDetector:
    """S3FD from the optional face-alignment package (the detector used to build VoxCeleb crops)."""

    def __init__(self, device: str = "cpu", min_score: float = 0.5) -> None:
        require_face_alignment(need_landmark_model=False)
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        self.min_score = min_score
        self._detector = SFDDetector(device=device, filter_threshold=min_score)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        found = self._detector.detect_from_image(as_rgb_uint8(image).copy())
        boxes = [FaceBox(*map(float, d[:4]), score=float(d[4])) for d in found]
        return _sorted([b for b in boxes if b.score >= self.min_score and b.area > 0])

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        return [self.detect(im) for im in images]


class DownscaledDetector:
    """Runs ``inner`` on frames resized to at most ``height`` pixels high; boxes come back in full size."""

    def __init__(self, inner: FaceDetector, height: int) -> None:
        if height < 32:
            raise ValueError(f"detect_height must be at least 32 pixels, got {height}")
        self.inner = inner
        self.height = height

    def _shrink(self, image: np.ndarray) -> tuple[np.ndarray, float, float]:
        image = as_rgb_uint8(image)
        h, w = image.shape[:2]
        if h <= self.height:
            return image, 1.0, 1.0
        new_w = max(1, round(w * self.height / h))
        small = cv2.resize(image, (new_w, self.height), interpolation=cv2.INTER_AREA)
        return small, w / new_w, h / self.height

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        small, sx, sy = self._shrink(image)
        return [b.scaled(sx, sy) for b in self.inner.detect(small)]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        shrunk = [self._shrink(im) for im in images]
        found = self.inner.detect_batch([s[0] for s in shrunk])
        return [[b.scaled(sx, sy) for b in boxes] for boxes, (_, sx, sy) in zip(found, shrunk, strict=True)]


def build_face_detector(
    name: str = "mtcnn",
    device: str = "cpu",
    *,
    detect_height: int | None = None,
    min_score: float | None = None,
    min_face_size: int = 20,
) -> FaceDetector:
    """Build a detector by name (``mtcnn``, ``dlib`` or ``fan``).

    ``detect_height`` downsizes taller frames before detection (crop_vox used 360); ``min_score``
    overrides the backend's own threshold (MTCNN 0.9 probability, dlib 0.0 margin, S3FD 0.5);
    ``min_face_size`` (pixels of the image the backend sees) bounds MTCNN's image pyramid: raising it
    from 20 to 40 roughly halves its run time. dlib's HOG window is fixed at about 80 px.
    """
    detector: FaceDetector
    if name == "mtcnn":
        if importlib.util.find_spec("facenet_pytorch") is None:
            raise ImportError("face detector 'mtcnn' needs facenet-pytorch==2.5.3 (pip install 'reenact[face]')")
        kwargs = {} if min_score is None else {"min_score": min_score}
        detector = MTCNNDetector(device=device, min_face_size=min_face_size, **kwargs)
    elif name == "dlib":
        if importlib.util.find_spec("dlib") is None:
            raise ImportError("face detector 'dlib' needs dlib-bin (pip install 'reenact[face]')")
        detector = DlibHogDetector(**({} if min_score is None else {"min_score": min_score}))
    elif name == "fan":
        detector = FanS3FDDetector(device=device, **({} if min_score is None else {"min_score": min_score}))
    else:
        raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
    if detect_height is not None:
        detector = DownscaledDetector(detector, detect_height)
    return detector
