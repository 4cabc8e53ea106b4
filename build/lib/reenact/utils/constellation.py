"""Pose matching by point constellations: which frame's face is posed most like a reference face."""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError


def normalised_constellation(points: np.ndarray) -> np.ndarray:
    """(N, 2) points centred on their mean and divided by sqrt(convex-hull area), so that frames of
    different face sizes compare by shape; the RMS radius replaces the hull for collinear points."""
    points = np.asarray(points, dtype=np.float64)
    centred = points - points.mean(axis=0, keepdims=True)
    try:
        size = np.sqrt(ConvexHull(centred).volume)  # in 2D the hull "volume" is its area
    except (QhullError, ValueError):
        size = float(np.sqrt((centred**2).sum(axis=1).mean()))
    return centred / max(size, 1e-8)


def closest_constellation(source_points: np.ndarray, driving_points: np.ndarray) -> int:
    """Index of the driving frame whose normalised points (T, N, 2) are nearest the source's (N, 2);
    frames with NaN points (no face found) never win."""
    source = normalised_constellation(source_points)
    best, best_distance = 0, np.inf
    for index, frame_points in enumerate(np.asarray(driving_points, dtype=np.float64)):
        if not np.isfinite(frame_points).all():
            continue
        distance = float(((normalised_constellation(frame_points) - source) ** 2).sum())
        if distance < best_distance:
            best, best_distance = index, distance
    if not np.isfinite(best_distance):
        raise ValueError("no driving frame has usable points to compare with the source")
    return best
