"""Eye and lip openness ratios from 2D facial landmarks: the conditions of LivePortrait's retargeting networks.

An eye's ratio is its opening (the mean distance between upper- and lower-lid points) over its width (corner to
corner); the lip ratio is the inner lips' opening over the mouth's width. The release measures them on its own
203-point landmarks; reenact measures them on the 68 iBUG points that ``reenact.face`` detects (dlib, offline) and, for
training on the built-in synthetic faces, on their 16 named points: the units differ between layouts (and from the
release's), so a retargeting network is conditioned in the units of the landmarks it was trained with.
Landmarks are (B, L, 2) in any coordinates (ratios do not depend on position or scale); NaN points give NaN ratios.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reenact.errors import ReenactError


class LandmarkLayoutError(ReenactError, ValueError):
    """Landmarks of a layout whose eye and lip points are unknown here."""


@dataclass(frozen=True)
class RatioLayout:
    """Point indices of one landmark layout."""

    eyes: tuple[tuple[tuple[tuple[int, int], ...], tuple[int, int]], ...]  # per eye: lid pairs, corner pair
    lip: tuple[tuple[tuple[int, int], ...], tuple[int, int]]  # inner-lip pairs, mouth-corner pair
    eye_points: tuple[tuple[int, ...], ...]  # every point of each eye (its region)
    mouth_points: tuple[int, ...]  # the mouth's points (its region)


# iBUG 68 (0-based): 36-41 and 42-47 the eyes, 48-59 the outer lips, 60-67 the inner lips
IBUG68 = RatioLayout(
    eyes=((((37, 41), (38, 40)), (36, 39)), (((43, 47), (44, 46)), (42, 45))),
    lip=(((61, 67), (62, 66), (63, 65)), (48, 54)),
    eye_points=(tuple(range(36, 42)), tuple(range(42, 48))),
    mouth_points=tuple(range(48, 68)),
)
# reenact.data.synthetic_scene.LANDMARK_NAMES: outer, inner, top, bottom of each eye; mouth corners 9, 10; lips 11, 12
SYNTHETIC16 = RatioLayout(
    eyes=((((2, 3),), (0, 1)), (((6, 7),), (4, 5))),
    lip=(((11, 12),), (9, 10)),
    eye_points=((0, 1, 2, 3), (4, 5, 6, 7)),
    mouth_points=(9, 10, 11, 12),
)
LAYOUTS = {68: IBUG68, 16: SYNTHETIC16}


def ratio_layout(landmarks: torch.Tensor) -> RatioLayout:
    if landmarks.dim() != 3 or landmarks.shape[-1] != 2:
        raise LandmarkLayoutError(f"landmarks must be (B, L, 2), got {tuple(landmarks.shape)}")
    layout = LAYOUTS.get(landmarks.shape[1])
    if layout is None:
        raise LandmarkLayoutError(f"eye and lip ratios need 68 iBUG landmarks (or the synthetic faces' 16), got "
                                  f"{landmarks.shape[1]} points")
    return layout


def _opening(points: torch.Tensor, pairs: tuple[tuple[int, int], ...], corners: tuple[int, int]) -> torch.Tensor:
    gaps = torch.stack([(points[:, a] - points[:, b]).norm(dim=-1) for a, b in pairs], dim=-1).mean(-1)  # (B,)
    width = (points[:, corners[0]] - points[:, corners[1]]).norm(dim=-1).clamp_min(1e-6)  # (B,)
    return gaps / width


def eye_ratios(landmarks: torch.Tensor) -> torch.Tensor:
    """(B, L, 2) -> (B, 2): the openness of the image-left and the image-right eye."""
    layout = ratio_layout(landmarks)
    return torch.stack([_opening(landmarks, pairs, corners) for pairs, corners in layout.eyes], dim=-1)


def lip_ratio(landmarks: torch.Tensor) -> torch.Tensor:
    """(B, L, 2) -> (B, 1): the openness of the mouth."""
    pairs, corners = ratio_layout(landmarks).lip
    return _opening(landmarks, pairs, corners)[:, None]


def region_centres(landmarks: torch.Tensor, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (B, C, 2) and a radius (B, 1) of the eyes (``part="eye"``: C = 2, radius the mean eye width) or the
    mouth (``"lip"``: C = 1, radius the mouth width)."""
    layout = ratio_layout(landmarks)
    if part == "eye":
        centres = torch.stack([landmarks[:, list(points)].mean(1) for points in layout.eye_points], dim=1)
        widths = torch.stack([(landmarks[:, a] - landmarks[:, b]).norm(dim=-1) for _, (a, b) in layout.eyes], -1)
        return centres, widths.mean(-1, keepdim=True)
    if part == "lip":
        a, b = layout.lip[1]
        centre = landmarks[:, list(layout.mouth_points)].mean(1, keepdim=True)
        return centre, (landmarks[:, a] - landmarks[:, b]).norm(dim=-1)[:, None]
    raise ValueError(f"part must be 'eye' or 'lip', got {part!r}")
