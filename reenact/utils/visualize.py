"""Image grids with keypoints for training and animation visuals, drawn with ``torchvision.utils``.

Images go in and come out as (H, W, 3) uint8 numpy arrays, the form that image writers and loggers take.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch
import torchvision.utils

GRID_PAD_VALUE = 255  # white between the tiles of a grid


def keypoint_colours(num_kp: int) -> np.ndarray:
    """A rainbow of ``num_kp`` RGB uint8 colours (like FOMM's gist_rainbow)."""
    return np.array(
        [[int(255 * c) for c in colorsys.hsv_to_rgb(i / max(num_kp, 1), 1.0, 1.0)] for i in range(num_kp)],
        dtype=np.uint8,
    ).reshape(num_kp, 3)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    array = image.detach().float().clamp(0, 1).cpu()
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    return (array.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, radius: int = 2) -> np.ndarray:
    """Filled discs of ``radius`` pixels on a copy of an (H, W, 3) uint8 image, one rainbow colour per keypoint.

    ``keypoints`` is (K, 2) normalised (x, y) in [-1, 1] with -1 and 1 at the centres of the first and last pixels;
    each disc is centred on the nearest pixel. Later keypoints are drawn over earlier ones. A NaN or infinite point
    (a diverged model) is not drawn; the others keep their colours.
    """
    height, width = image.shape[:2]
    points = torch.as_tensor(np.asarray(keypoints, dtype=np.float64)).reshape(-1, 2)
    pixels = ((points + 1) / 2 * torch.tensor([width - 1, height - 1], dtype=torch.float64)).round()
    canvas = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    for colour, point in zip(keypoint_colours(len(pixels)), pixels, strict=True):
        if not bool(torch.isfinite(point).all()):
            continue
        canvas = torchvision.utils.draw_keypoints(
            canvas, point.view(1, 1, 2), colors=tuple(int(c) for c in colour), radius=radius
        )
    return canvas.permute(1, 2, 0).numpy().copy()


def make_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile rows of equally sized (H, W, 3) uint8 images into one image, ``pad`` white pixels around each tile.

    The grid has as many columns as the longest row; shorter rows end in white tiles. A single image comes back
    as it is, without padding (torchvision's ``make_grid`` does that).
    """
    height, width = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    blank = torch.full((3, height, width), GRID_PAD_VALUE, dtype=torch.uint8)
    tiles: list[torch.Tensor] = []
    for row in rows:
        tiles += [torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) for image in row]
        tiles += [blank] * (cols - len(row))
    grid = torchvision.utils.make_grid(torch.stack(tiles), nrow=cols, padding=pad, pad_value=GRID_PAD_VALUE)
    return grid.permute(1, 2, 0).numpy().copy()
