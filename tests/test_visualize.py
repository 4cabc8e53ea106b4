"""Keypoint drawing and image grids (reenact.utils.visualize)."""

from __future__ import annotations

import numpy as np
import torch

from reenact.utils.visualize import draw_keypoints, keypoint_colours, make_grid, to_uint8


def test_keypoints_colour_discs_at_their_pixels_and_nothing_else() -> None:
    image = np.full((21, 31, 3), 40, dtype=np.uint8)
    # centre, top-left corner, bottom-right corner ([-1, 1] at the centres of the outer pixels)
    keypoints = np.array([[0.0, 0.0], [-1.0, -1.0], [1.0, 1.0]])
    drawn = draw_keypoints(image, keypoints, radius=2)
    colours = keypoint_colours(3)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (image == 40).all(), "the input is left as it was"
    for (row, col), colour in zip([(10, 15), (0, 0), (20, 30)], colours, strict=True):
        assert (drawn[row, col] == colour).all()
    # a disc of radius 2 covers the pixels two steps along each axis, not the ones three away
    assert (drawn[10, [13, 17]] == colours[0]).all() and (drawn[[8, 12], 15] == colours[0]).all()
    assert (drawn[10, [12, 18]] == 40).all() and (drawn[[7, 13], 15] == 40).all()
    changed = (drawn != image).any(axis=2)
    assert changed[5:16, 10:21].sum() + changed[:3, :3].sum() + changed[18:, 28:].sum() == changed.sum()


def test_later_keypoints_are_drawn_over_earlier_ones_and_outside_points_are_skipped() -> None:
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    drawn = draw_keypoints(image, np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 3.0]]), radius=1)
    assert (drawn[8, 8] == keypoint_colours(3)[1]).all()  # 7.5 rounds to 8
    assert not (drawn == keypoint_colours(3)[0]).all(axis=2).any()
    assert (drawn[:4].sum(), drawn[:, :4].sum()) == (0, 0)


def test_keypoint_colours_are_distinct_rainbow_colours() -> None:
    colours = keypoint_colours(10)
    assert colours.shape == (10, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours}) == 10
    assert (colours.max(axis=1) == 255).all()
    assert keypoint_colours(0).shape == (0, 3)


def test_grid_places_tiles_in_rows_with_white_padding() -> None:
    tiles = [np.full((4, 6, 3), 10 * (i + 1), dtype=np.uint8) for i in range(5)]
    grid = make_grid([tiles[:3], tiles[3:]], pad=2)
    assert grid.shape == (2 + 2 * (4 + 2), 2 + 3 * (6 + 2), 3) and grid.dtype == np.uint8
    for i, tile in enumerate(tiles):
        row, col = divmod(i, 3)
        top, left = 2 + row * 6, 2 + col * 8
        assert (grid[top : top + 4, left : left + 6] == tile).all()
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all() and (grid[6:8] == 255).all()
    assert (grid[8:12, 18:24] == 255).all(), "a short row ends in white"


def test_to_uint8_maps_unit_floats_and_grey_images_to_rgb_bytes() -> None:
    image = torch.tensor([[[0.0, 0.5], [1.0, 2.0]]])  # (1, 2, 2), one value above 1
    out = to_uint8(image)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[..., 0].tolist() == [[0, 128], [255, 255]] and (out == out[..., :1]).all()
