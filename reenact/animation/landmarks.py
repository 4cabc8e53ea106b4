"""The 68 dlib landmarks animation hands to a family whose motion transfer reads them
(``ReenactmentFamily.transfer_needs_landmarks``), in normalised [-1, 1] coordinates of the crop, NaN where no face
was found."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

LANDMARK_SIZE = 256  # crops for dlib's landmarks, whose HOG face detector needs faces of about 80 px or more


@functools.lru_cache(maxsize=1)
def landmark_detector() -> Any:
    from reenact.face import build_landmark_detector

    return build_landmark_detector("dlib")  # a few seconds to load: once per process


def normalised(points: np.ndarray, size: int) -> torch.Tensor:
    """(T, 68, 2) pixel coordinates on ``size`` x ``size`` crops -> normalised [-1, 1] coordinates (float32)."""
    return torch.from_numpy(2.0 * np.asarray(points, dtype=np.float32) / (size - 1) - 1.0)


def crop_landmarks(crops: Iterable[np.ndarray], size: int = LANDMARK_SIZE) -> torch.Tensor:
    """(size, size, 3) uint8 crops -> (T, 68, 2) normalised landmarks, NaN rows where no face was found."""
    from reenact.face import stack_landmarks

    detector = landmark_detector()
    return normalised(stack_landmarks([detector.detect(crop) for crop in crops]), size)


def image_landmarks(images: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) images in [0, 1] -> (T, 68, 2) normalised landmarks, found on copies resized to LANDMARK_SIZE."""
    from reenact.layers.geometry import resize_to

    resized = resize_to(images.detach().float().cpu(), (LANDMARK_SIZE, LANDMARK_SIZE)).clamp(0, 1)
    crops = (resized * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return crop_landmarks(list(crops))
