"""Face crop rules shared by preprocessing and animation.

The rule follows crop_vox (the VoxCeleb crops FOMM was trained on): take the face box (for a clip,
the union of its per-frame boxes), grow it by ``increase`` of its size on every side (aspect ratio kept),
then grow the shorter side until the box is square, so the crop side is ``(1 + 2 * increase) * max(w, h)``
around the box centre. The square is then placed in the frame:

- ``policy="reject"`` (crop_vox): a square that leaves the frame is rejected (``None``).
- ``policy="shift"``: the square is moved the least distance that brings it inside the frame; it is
  rejected only when it is larger than the frame's shorter side.

A video that is already a face crop has no such square: the face with its margin is larger than the frame's
shorter side. ``largest_square_holding`` then takes the largest square of the frame that holds the face itself.

Boxes are ``(x0, y0, x1, y1)`` in pixels with exclusive ``x1, y1``; integer boxes index ``frame[y0:y1, x0:x1]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import cv2
import numpy as np

from reenact.face.detection import FaceBox

Box = tuple[float, float, float, float]
IntBox = tuple[int, int, int, int]
PlacementPolicy = Literal["reject", "shift"]


def _coords(box: Box | FaceBox) -> Box:
    return box.as_tuple() if isinstance(box, FaceBox) else tuple(float(v) for v in box)  # type: ignore[return-value]


def union_boxes(boxes: Iterable[Box | FaceBox]) -> Box:
    """The smallest box containing all boxes."""
    coords = np.array([_coords(b) for b in boxes], dtype=np.float64)
    if coords.size == 0:
        raise ValueError("union_boxes needs at least one box")
    return (float(coords[:, 0].min()), float(coords[:, 1].min()), float(coords[:, 2].max()), float(coords[:, 3].max()))


def enlarge_box(box: Box | FaceBox, increase: float = 0.1) -> Box:
    """Grow a box by ``increase`` of its width (height) on the left and right (top and bottom)."""
    x0, y0, x1, y1 = _coords(box)
    if increase < 0:
        raise ValueError(f"increase must be >= 0, got {increase}")
    dw, dh = (x1 - x0) * increase, (y1 - y0) * increase
    return (x0 - dw, y0 - dh, x1 + dw, y1 + dh)


def square_box(box: Box | FaceBox) -> Box:
    """The square with the box's centre and its longer side."""
    x0, y0, x1, y1 = _coords(box)
    side = max(x1 - x0, y1 - y0)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def place_in_frame(
    box: Box, frame_width: int, frame_height: int, policy: PlacementPolicy = "shift"
) -> IntBox | None:
    """Round a (square) box to integer pixels and place it in the frame, or None if impossible."""
    x0, y0, x1, y1 = box
    w, h = round(x1 - x0), round(y1 - y0)
    if w < 1 or h < 1:
        return None
    ix0, iy0 = round(x0), round(y0)
    if policy == "reject":
        if ix0 < 0 or iy0 < 0 or ix0 + w > frame_width or iy0 + h > frame_height:
            return None
    elif policy == "shift":
        if w > frame_width or h > frame_height:
            return None
        ix0 = min(max(ix0, 0), frame_width - w)
        iy0 = min(max(iy0, 0), frame_height - h)
    else:
        raise ValueError(f"unknown placement policy {policy!r}; choose 'reject' or 'shift'")
    return (ix0, iy0, ix0 + w, iy0 + h)


def face_crop_box(
    box: Box | FaceBox,
    frame_width: int,
    frame_height: int,
    increase: float = 0.1,
    policy: PlacementPolicy = "shift",
) -> IntBox | None:
    """crop_vox's square crop around a face box, placed in the frame by ``policy`` (None: rejected)."""
    return place_in_frame(square_box(enlarge_box(box, increase)), frame_width, frame_height, policy)


def rescale_box(box: Box, from_size: tuple[int, int], to_size: tuple[int, int]) -> Box:
    """Map a box given for a ``(width, height)`` reference resolution onto another resolution."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    x0, y0, x1, y1 = box
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def crop_and_resize(frame: np.ndarray, box: Box | FaceBox, size: int) -> np.ndarray:
    """Crop ``box`` from an (H, W, C) uint8 frame and resize it to ``size x size`` with anti-aliasing.

    Parts of the box outside the frame are filled with black. Downscaling uses area averaging (an
    anti-aliasing filter, like skimage's ``anti_aliasing=True``); upscaling uses bicubic interpolation.
    """
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    x0, y0, x1, y1 = (int(round(v)) for v in _coords(box))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop box {(x0, y0, x1, y1)}")
    h, w = frame.shape[:2]
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        patch = frame[y0:y1, x0:x1]
    else:
        patch = np.zeros((y1 - y0, x1 - x0) + frame.shape[2:], dtype=frame.dtype)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    shrinking = patch.shape[0] >= size and patch.shape[1] >= size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interpolation)


def largest_square_holding(box: Box | FaceBox, frame_width: int, frame_height: int) -> IntBox | None:
    """The largest square in the frame (side: the frame's shorter side) that holds the part of ``box`` inside the
    frame, centred on that part as far as the frame allows; None when that part is longer than the square.

    This is the crop of a video that is already a face crop: its face, with crop_vox's margin, is larger than
    the frame's shorter side, so no enlarged square fits (``face_crop_box`` returns None).
    """
    x0, y0, x1, y1 = _coords(box)
    # Detectors put boxes partly outside the frame (a chin below the lower edge); no crop can hold that part.
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(frame_width)), min(y1, float(frame_height))
    side = min(frame_width, frame_height)
    if x1 <= x0 or y1 <= y0 or x1 - x0 > side or y1 - y0 > side:
        return None
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    return place_in_frame((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), frame_width, frame_height)


def centre_square(frame_width: int, frame_height: int) -> IntBox:
    """The largest square in the middle of the frame (``--cropped``: the frame is taken as the face crop)."""
    side = min(frame_width, frame_height)
    x0, y0 = (frame_width - side) // 2, (frame_height - side) // 2
    return (x0, y0, x0 + side, y0 + side)
