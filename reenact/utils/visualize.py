"""Image grids with keypoints for training and animation visuals (numpy only, no logger dependency)."""

from __future__ import annotations

import colorsys

import numpy as np
import torch


def keypoint_colours(num_kp: int) -> np.ndarray:
    """A rainbow of ``num_kp`` RGB uint8 colours (like FOMM's gist_rainbow)."""
    return np.array(
        [[int(255 * c) for c in colorsys.hsv_to_rgb(i / max(num_kp, 1), 1.0, 1.0)] for i in range(num_kp)],
        dtype=np.uint8,
    )


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    array = image.detach().float().clamp(0, 1).cpu()
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    return (array.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, radius: int = 2) -> np.ndarray:
    """Draw filled discs at normalised (x, y) keypoints in [-1, 1] (pixel-centre convention) on (H, W, 3) uint8."""
    out = image.copy()
    height, width = out.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width]
    for colour, (x, y) in zip(keypoint_colours(len(keypoints)), keypoints, strict=True):
        px, py = (x + 1) * (width - 1) / 2, (y + 1) * (height - 1) / 2
        out[(xx - px) ** 2 + (yy - py) ** 2 <= radius**2] = colour
    return out


def make_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Stack rows of equally sized (H, W, 3) uint8 images into one image with white padding."""
    height, width = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    grid = np.full((len(rows) * (height + pad) + pad, cols * (width + pad) + pad, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = pad + i * (height + pad), pad + j * (width + pad)
            grid[y : y + height, x : x + width] = image
    return grid
