"""FOMM's training augmentations, applied identically to the source and the driving frame.

Time flip (swap source and driving) fires with probability `time_flip_p`; as in FOMM, when it fires the
horizontal flip is skipped. The horizontal flip mirrors both images, negates the normalised landmark x
coordinate (the align_corners=True convention makes x_px -> W-1-x_px exactly x -> -x), re-orders mirrored
landmark pairs (left eye <-> right eye) when a permutation is given, and negates yaw and roll labels.
Colour jitter draws one brightness/contrast/saturation/hue setting and one operation order per sample, like
torchvision's ColorJitter, except that hue is rotated in YIQ chroma space (a 3x3 linear map) rather than through
an HSV round trip: the same kind of perturbation at ~1/25 of the cost (the HSV version alone took 10 ms per
256x256 pair, capping a worker near 100 pairs/s).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms.v2 import functional as TF

# Mirror pairs of the iBUG 300-W 68-point layout (dlib's shape predictor): jaw, brows, nose, eyes, lips.
IBUG68_FLIP_PERMUTATION = (
    *range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, *range(35, 30, -1),
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
    *range(54, 47, -1), 59, 58, 57, 56, 55, *range(64, 59, -1), 67, 66, 65,
)
FRAMES = ("source", "driving")


class Augmentation:
    """Callable on a pair sample dict; all randomness comes from the `generator` passed in."""

    def __init__(
        self,
        time_flip_p: float = 0.5,
        horizontal_flip_p: float = 0.5,
        brightness: float = 0.1,
        contrast: float = 0.1,
        saturation: float = 0.1,
        hue: float = 0.1,
        landmark_flip_permutation: Sequence[int] | None = None,
    ) -> None:
        for name, value, top in (("time_flip_p", time_flip_p, 1), ("horizontal_flip_p", horizontal_flip_p, 1),
                                 ("brightness", brightness, 1), ("contrast", contrast, 1),
                                 ("saturation", saturation, 1), ("hue", hue, 0.5)):
            if not 0 <= value <= top:
                raise ValueError(f"augmentation {name}={value} is outside [0, {top}]")
        if landmark_flip_permutation is not None:
            order = list(landmark_flip_permutation)
            if sorted(order) != list(range(len(order))) or any(order[order[i]] != i for i in range(len(order))):
                raise ValueError(f"landmark_flip_permutation {order} is not a mirror pairing (an involution)")
        self.time_flip_p = time_flip_p
        self.horizontal_flip_p = horizontal_flip_p
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.landmark_flip_permutation = (
            torch.tensor(list(landmark_flip_permutation)) if landmark_flip_permutation is not None else None
        )

    def __call__(self, sample: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        sample = dict(sample)
        if self._coin(self.time_flip_p, generator):
            sample = time_flip(sample)
        elif self._coin(self.horizontal_flip_p, generator):
            sample = horizontal_flip(sample, self.landmark_flip_permutation)
        return self._jitter(sample, generator)

    @staticmethod
    def _coin(p: float, generator: torch.Generator) -> bool:
        return bool(torch.rand((), generator=generator) < p)

    def _jitter(self, sample: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        def factor(strength: float) -> float:
            return float(1 + strength * (2 * torch.rand((), generator=generator) - 1))

        ops = [
            (TF.adjust_brightness, factor(self.brightness), self.brightness > 0),
            (TF.adjust_contrast, factor(self.contrast), self.contrast > 0),
            (TF.adjust_saturation, factor(self.saturation), self.saturation > 0),
            (rotate_hue, float(self.hue * (2 * torch.rand((), generator=generator) - 1)), self.hue > 0),
        ]
        order = torch.randperm(len(ops), generator=generator).tolist()
        for key in FRAMES:
            image = sample[key]  # (3, H, W) in [0, 1]
            for position in order:
                op, value, enabled = ops[position]
                if enabled:
                    image = op(image, value)
            sample[key] = image.clamp(0, 1)
        return sample


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rotate_hue(image: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate chroma by `shift` turns (in [-0.5, 0.5]) keeping luma; image (..., 3, H, W) in [0, 1].

    The sign follows HSV: a positive shift moves red towards yellow, as torchvision's adjust_hue does.
    """
    angle = torch.tensor(-2 * torch.pi * shift)  # I/Q rotate opposite to the HSV hue circle
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, float(cos), -float(sin)], [0.0, float(sin), float(cos)]])
    matrix = (_YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ).to(image.dtype)
    return (matrix @ image.flatten(-2)).view(image.shape).clamp_(0, 1)  # (..., 3, H*W) -> (..., 3, H, W)


def time_flip(sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Swap everything that belongs to the source with the driving counterpart (reversed time)."""
    flipped = dict(sample)
    for key, value in sample.items():
        for mine, other in (FRAMES, FRAMES[::-1]):
            if key == mine or key.startswith(mine + "_"):
                flipped[other + key[len(mine):]] = value
    return flipped


def horizontal_flip(
    sample: dict[str, torch.Tensor], landmark_flip_permutation: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Mirror images, landmarks (normalised coords, (L, 2)) and pose labels (yaw, pitch, roll) left-right."""
    flipped = dict(sample)
    for frame in FRAMES:
        flipped[frame] = sample[frame].flip(-1)
        if f"{frame}_landmarks" in sample:
            points = sample[f"{frame}_landmarks"].clone()  # (L, 2)
            points[:, 0] = -points[:, 0]
            if landmark_flip_permutation is not None:
                if len(landmark_flip_permutation) != points.shape[0]:
                    raise ValueError(
                        f"landmark_flip_permutation has {len(landmark_flip_permutation)} entries but samples have "
                        f"{points.shape[0]} landmarks")
                points = points[landmark_flip_permutation]
            flipped[f"{frame}_landmarks"] = points
        if f"{frame}_pose" in sample:
            flipped[f"{frame}_pose"] = sample[f"{frame}_pose"] * torch.tensor([-1.0, 1.0, -1.0])
    return flipped
