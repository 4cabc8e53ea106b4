"""Face crops for animation, by the same rule as data preprocessing (crop_vox), and paste-back.

Source image: the largest detected face's box, grown by ``increase`` on every side, made square and
shifted into the image (:func:`reenact.face.face_crop_box`, policy "shift"); a square larger than the
image shrinks to the image's shorter side. Driving video: the same rule on the *union* of the face boxes
found on every ``detect_every``-th frame (a face tube, as preprocessing cuts clips), so one fixed crop
covers the whole clip and the head's motion inside it is kept. Without cropping the centred square of
the frame is used. Crops are resized to the model's resolution with :func:`reenact.face.crop_and_resize`.

Paste-back puts an animated crop into the full source image with a feathered border, so the seam
between the generated square and the untouched surroundings is invisible.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from reenact.animation.errors import AnimationInputError, NoFaceError
from reenact.face import FaceBox, FaceDetector, build_face_detector, face_crop_box, union_boxes
from reenact.face.crop import IntBox
from reenact.utils.messages import first_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DETECT_BATCH = 8  # sampled driving frames per detector call (MTCNN batches equal-sized frames)


@dataclass(frozen=True)
class CropSettings:
    """How faces are found and cropped (``crop`` in ``conf/animate.yaml``)."""

    source: bool = True  # crop the source image around its face
    driving: bool = True  # crop the driving video around the union of its face boxes
    allow_no_face: bool = False  # go on with the centred square when no face is found
    detector: str = "mtcnn"  # mtcnn | dlib | fan (offline backends of reenact.face)
    device: str = "cpu"
    increase: float = 0.1  # margin around the face box on every side (crop_vox)
    detect_every: int = 5  # driving video: detect on every N-th frame (and the last)
    detect_height: int | None = 360  # detect on frames scaled to this height (crop_vox); None: full size
    min_score: float | None = None  # detector threshold (default per backend)
    source_max_dim: int = 1280  # larger source images are scaled down first


def read_image(path: str | Path, max_dim: int | None = None) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, scaled down so that its longer side is at most ``max_dim``."""
    path = Path(path)
    if not path.is_file():
        raise AnimationInputError(f"source image not found: {path}")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise AnimationInputError(f"cannot read source image {path}: {first_line(exc)}") from None
    except Image.DecompressionBombError:  # a header claiming more pixels than PIL decodes safely
        raise AnimationInputError(f"source image {path} is too large to read (over {Image.MAX_IMAGE_PIXELS * 2} "
                                  f"pixels); scale it down first") from None
    if max_dim is not None and max(array.shape[:2]) > max_dim:
        scale = max_dim / max(array.shape[:2])
        size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[0] * scale)))
        array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(array)


def list_source_images(path: str | Path) -> list[Path]:
    """One image, or the images of a folder (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not images:
            raise AnimationInputError(f"source folder {path} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        return images
    if not path.exists():
        raise AnimationInputError(f"source not found: {path}")
    return [path]


def build_detector(settings: CropSettings) -> FaceDetector:
    """The configured face detector, built once per process (MTCNN takes about 2 s to build)."""
    return _cached_detector(settings.detector, settings.device, settings.detect_height, settings.min_score)


@functools.lru_cache(maxsize=4)
def _cached_detector(name: str, device: str, detect_height: int | None, min_score: float | None) -> FaceDetector:
    return build_face_detector(name, device, detect_height=detect_height, min_score=min_score)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run face detection on one intra-op thread: MTCNN is hundreds of tiny convolutions per image, where
    thread hand-offs cost more than they save, badly so on a busy CPU (measured on 2 loaded cores:
    0.06 s per 512x512 frame on one thread, 0.3 to 0.8 s on two)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def centre_square(width: int, height: int) -> IntBox:
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    return (x0, y0, x0 + side, y0 + side)


def square_crop_box(face: tuple[float, float, float, float] | FaceBox, width: int, height: int,
                    increase: float) -> IntBox:
    """crop_vox's square around ``face`` inside the frame; too large a square shrinks to fit."""
    box = face_crop_box(face, width, height, increase, policy="shift")
    if box is not None:
        return box
    x0, y0, x1, y1 = face.as_tuple() if isinstance(face, FaceBox) else face
    side = min(width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(min(max(round(cx - side / 2), 0), width - side))
    top = int(min(max(round(cy - side / 2), 0), height - side))
    return (left, top, left + side, top + side)


def _no_face(what: str, settings: CropSettings) -> NoFaceError:
    return NoFaceError(
        f"no face found in {what} (detector {settings.detector}); pass crop.allow_no_face=true to animate "
        f"the uncropped centre square"
    )


def source_crop_box(image: np.ndarray, path: str | Path, settings: CropSettings,
                    detector: FaceDetector | None) -> tuple[IntBox, FaceBox | None]:
    """The source's crop box and the face it was built on (None: no face, centred square)."""
    height, width = image.shape[:2]
    if not settings.source:
        return centre_square(width, height), None
    assert detector is not None
    with single_threaded():
        faces = detector.detect(image)
    if not faces:
        if not settings.allow_no_face:
            raise _no_face(f"source image {path}", settings)
        return centre_square(width, height), None
    face = max(faces, key=lambda b: b.area)  # the portrait's subject, not a face in the background
    return square_crop_box(face, width, height, settings.increase), face


def driving_crop_box(frames: Iterable[np.ndarray], path: str | Path, settings: CropSettings,
                     detector: FaceDetector | None, num_frames: int) -> tuple[IntBox, int]:
    """The driving video's fixed crop box and the number of sampled frames a face was found on.

    ``frames`` are the video's frames in order (``num_frames`` of them); faces are searched on every
    ``detect_every``-th frame and the last one, a few frames per detector call.
    """
    if settings.detect_every < 1:
        raise AnimationInputError(f"crop.detect_every must be >= 1, got {settings.detect_every}")
    boxes: list[FaceBox] = []
    pending: list[np.ndarray] = []
    size: tuple[int, int] | None = None

    def detect_pending() -> None:
        assert detector is not None
        with single_threaded():
            found = detector.detect_batch(pending)
        boxes.extend(faces[0] for faces in found if faces)  # the most confident face of each frame
        pending.clear()

    for index, frame in enumerate(frames):
        size = (frame.shape[1], frame.shape[0])
        if not settings.driving:
            break
        if index % settings.detect_every == 0 or index == num_frames - 1:
            pending.append(frame)
            if len(pending) == DETECT_BATCH:
                detect_pending()
    if size is None:
        raise AnimationInputError(f"driving video {path} has no frames")
    if not settings.driving:
        return centre_square(*size), 0
    if pending:
        detect_pending()
    if not boxes:
        if not settings.allow_no_face:
            raise _no_face(f"driving video {path}", settings)
        return centre_square(*size), 0
    return square_crop_box(union_boxes(boxes), size[0], size[1], settings.increase), len(boxes)


def feather_mask(size: int, feather: float = 0.1) -> np.ndarray:
    """(size, size, 1) float32 weights: 1 inside, falling linearly to 0 over ``feather`` of the side."""
    ramp_width = max(1.0, feather * size)
    distance = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32) + 0.5  # to the nearest edge
    ramp = np.clip(distance / ramp_width, 0.0, 1.0)
    return (np.minimum(ramp[:, None], ramp[None, :]))[..., None]


def paste_back(image: np.ndarray, crop: np.ndarray, box: IntBox, feather: float = 0.1) -> np.ndarray:
    """Put ``crop`` (h, w, 3) uint8 into a copy of ``image`` at the square ``box``, feathering its border."""
    x0, y0, x1, y1 = box
    side = x1 - x0
    if side != y1 - y0 or x0 < 0 or y0 < 0 or x1 > image.shape[1] or y1 > image.shape[0]:
        raise ValueError(f"paste-back box {box} is not a square inside the {image.shape[1]}x{image.shape[0]} image")
    interpolation = cv2.INTER_AREA if crop.shape[0] > side else cv2.INTER_CUBIC
    patch = cv2.resize(np.ascontiguousarray(crop), (side, side), interpolation=interpolation).astype(np.float32)
    weight = feather_mask(side, feather)
    out = image.copy()
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(weight * patch + (1.0 - weight) * region + 0.5, 0, 255).astype(np.uint8)
    return out


def even_size(image: np.ndarray) -> np.ndarray:
    """Drop a last row/column so both sides are even (H.264 yuv420p needs it)."""
    height, width = image.shape[:2]
    return image[: height - height % 2, : width - width % 2]
