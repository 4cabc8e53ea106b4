"""FOMM's training augmentations, applied identically to the source and the driving frame.

Time flip (swap source and driving) fires with probability `time_flip_p`; as in FOMM, when it fires the
horizontal flip is skipped. A sample with several source frames (`sources` (S, 3, H, W), the source first) gets the
same flip and colour jitter on every frame; a time flip swaps the driving frame with the first source.
The horizontal flip mirrors both images, negates the normalised landmark x
coordinate (the align_corners=True convention makes x_px -> W-1-x_px exactly x -> -x), re-orders mirrored
landmark pairs (left eye <-> right eye) when a permutation is given, and negates yaw and roll labels.
Shape jitter (off by default: `shape_scale`, `shape_shift`, `shape_zoom`) moves every frame of a sample by one random
axis-aligned affine map, x -> (z s_x x + t_x, z s_y y + t_y), with s_x and s_y drawn independently around 1 and one
zoom z for both axes, log-uniform in [1 / (1 + shape_zoom), 1 + shape_zoom]: a wider or longer, nearer or farther face
at another place in the frame, moving exactly as the original did. With few identities (a handful of real clips) it
gives the motion networks faces of other proportions, sizes and places than the ones they were trained on; an unseen
clip framed wider than the training clips then still shows a face of a size they know. Landmarks follow the same map;
head-pose labels are kept, as the map has no rotation in the image plane.
Colour jitter draws one brightness/contrast/saturation/hue setting and one operation order per sample, like
torchvision's ColorJitter, but folds the chain into a single affine colour map (see `colour_jitter`) and rotates
hue in YIQ chroma space instead of an HSV round trip: the same kind of perturbation at a fraction of the cost
(torchvision's HSV hue alone took 10 ms per 256x256 pair, capping a DataLoader worker near 100 pairs/s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

# Mirror pairs of the iBUG 300-W 68-point layout (dlib's shape predictor): jaw, brows, nose, eyes, lips.
IBUG68_FLIP_PERMUTATION = (
    *range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, *range(35, 30, -1),
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
    *range(54, 47, -1), 59, 58, 57, 56, 55, *range(64, 59, -1), 67, 66, 65,
)
FRAMES = ("source", "driving")
SOURCES = "sources"  # optional (S, 3, H, W): several source frames, the first equal to `source`


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
        shape_scale: float = 0.0,
        shape_shift: float = 0.0,
        shape_zoom: float = 0.0,
    ) -> None:
        for name, value, top in (("time_flip_p", time_flip_p, 1), ("horizontal_flip_p", horizontal_flip_p, 1),
                                 ("brightness", brightness, 1), ("contrast", contrast, 1),
                                 ("saturation", saturation, 1), ("hue", hue, 0.5),
                                 ("shape_scale", shape_scale, 0.5), ("shape_shift", shape_shift, 0.5),
                                 ("shape_zoom", shape_zoom, 1)):
            if not 0 <= value <= top:
                raise ValueError(f"augmentation {name}={value} is outside [0, {top}]")
        if landmark_flip_permutation is not None:
            order = list(landmark_flip_permutation)
            if sorted(order) != list(range(len(order))) or any(order[order[i]] != i for i in range(len(order))):
                raise ValueError(f"landmark_flip_permutation {order} is not a mirror pairing (an involution)")
        self.time_flip_p = time_flip_p
        self.horizontal_flip_p = horizontal_flip_p
        self.shape_scale, self.shape_shift, self.shape_zoom = shape_scale, shape_shift, shape_zoom
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
        if SOURCES in sample:  # the first source follows `source` through a time flip
            sample[SOURCES] = torch.cat([sample["source"][None], sample[SOURCES][1:]])
        if self.shape_scale > 0 or self.shape_shift > 0 or self.shape_zoom > 0:  # no draw when off: runs reproduce
            sample = self._shape(sample, generator)
        return self._jitter(sample, generator)

    def _shape(self, sample: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        def uniform(half_width: float) -> float:
            return float(half_width * (2 * torch.rand((), generator=generator) - 1))

        scale = (1 + uniform(self.shape_scale), 1 + uniform(self.shape_scale))
        shift = (uniform(self.shape_shift), uniform(self.shape_shift))
        if self.shape_zoom > 0:  # drawn last, and only when on: runs without it draw what they drew before
            zoom = math.exp(uniform(math.log1p(self.shape_zoom)))
            scale = (scale[0] * zoom, scale[1] * zoom)
        return axis_affine(sample, scale, shift)

    @staticmethod
    def _coin(p: float, generator: torch.Generator) -> bool:
        return bool(torch.rand((), generator=generator) < p)

    def _jitter(self, sample: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        def factor(strength: float) -> float:
            return float(1 + strength * (2 * torch.rand((), generator=generator) - 1))

        settings = {"brightness": factor(self.brightness), "contrast": factor(self.contrast),
                    "saturation": factor(self.saturation),
                    "hue": float(self.hue * (2 * torch.rand((), generator=generator) - 1))}
        order = [list(settings)[i] for i in torch.randperm(len(settings), generator=generator).tolist()]
        order = [name for name in order if getattr(self, name) > 0]  # a disabled op must not even round
        if not order:
            return sample
        extra = sample[SOURCES][1:] if SOURCES in sample else sample["source"][None][:0]  # (S - 1, 3, H, W)
        frames = torch.cat([torch.stack([sample[key] for key in FRAMES]), extra])  # (2 + S - 1, 3, H, W)
        images = colour_jitter(frames, settings, order)  # per image, one setting for all
        sample["source"], sample["driving"] = images[0], images[1]
        if SOURCES in sample:
            sample[SOURCES] = torch.cat([images[:1], images[2:]])
        return sample


# The colour maps are composed in numpy (float64): a handful of 3x3 products, far cheaper than tiny torch ops.
_GREY = np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as torchvision
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def hue_matrix(shift: float) -> np.ndarray:
    """(3, 3) RGB map rotating chroma by `shift` turns and keeping luma; a positive shift moves red towards
    yellow, the direction of torchvision's HSV adjust_hue."""
    angle = -2 * math.pi * shift  # I/Q turn opposite to the HSV hue circle
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(angle), -math.sin(angle)],
                         [0.0, math.sin(angle), math.cos(angle)]])
    return _YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ


def colour_jitter(images: torch.Tensor, settings: dict[str, float], order: Sequence[str]) -> torch.Tensor:
    """Apply brightness/contrast/saturation factors and a hue shift in `order` to (N, 3, H, W) images in [0, 1].

    Every step is affine in RGB (contrast blends towards the image's mean grey, which an affine map carries
    along exactly), so the chain folds into one map per image applied in a single pass, clamped once. That
    equals torchvision's op-by-op chain wherever no intermediate value leaves [0, 1].
    """
    matrix = np.eye(3)
    mean = images.mean(dim=(-2, -1)).double().numpy()  # (N, 3) mean colour of the input
    offset = np.zeros_like(mean)  # per image, because contrast depends on each image's mean
    for name in order:
        value = settings[name]
        shift = np.zeros_like(offset)
        if name == "brightness":
            step = value * np.eye(3)
        elif name == "contrast":
            current_grey = (mean @ matrix.T + offset) @ _GREY  # (N,) mean grey of the image so far
            step, shift = value * np.eye(3), np.repeat((1 - value) * current_grey[:, None], 3, axis=1)
        elif name == "saturation":
            step = value * np.eye(3) + (1 - value) * np.outer(np.ones(3), _GREY)
        elif name == "hue":
            step = hue_matrix(value)
        else:
            raise ValueError(f"unknown colour operation {name!r}")
        matrix, offset = step @ matrix, offset @ step.T + shift
    weights = torch.from_numpy(matrix).to(images.dtype)
    out = torch.matmul(weights, images.flatten(-2))  # (N, 3, H*W)
    out += torch.from_numpy(offset).to(images.dtype)[..., None]
    return out.view(images.shape).clamp_(0, 1)


def axis_affine(
    sample: dict[str, torch.Tensor], scale: tuple[float, float], shift: tuple[float, float]
) -> dict[str, torch.Tensor]:
    """Move the content of every frame by x -> (scale_x x + shift_x, scale_y y + shift_y) in normalised coordinates
    (align_corners=True, as the landmarks); landmarks (L, 2) move the same way. Uncovered borders repeat the edge."""
    moved = dict(sample)
    keys = [key for key in (*FRAMES, SOURCES) if key in sample]
    stacks = [sample[key].reshape(-1, *sample[key].shape[-3:]) for key in keys]  # (1 or S, 3, H, W) each
    frames = torch.cat(stacks)  # (N, 3, H, W)
    # output pixel p shows input point (p - shift) / scale
    theta = torch.tensor([[1 / scale[0], 0.0, -shift[0] / scale[0]], [0.0, 1 / scale[1], -shift[1] / scale[1]]],
                         dtype=frames.dtype)
    grid = torch.nn.functional.affine_grid(theta.expand(len(frames), 2, 3), list(frames.shape), align_corners=True)
    warped = torch.nn.functional.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=True)
    for key, part in zip(keys, warped.split([len(stack) for stack in stacks]), strict=True):
        moved[key] = part.reshape(sample[key].shape)
    for frame in FRAMES:
        if f"{frame}_landmarks" in sample:
            points = sample[f"{frame}_landmarks"]  # (L, 2)
            moved[f"{frame}_landmarks"] = points * points.new_tensor(scale) + points.new_tensor(shift)
    return moved


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
    if SOURCES in sample:
        flipped[SOURCES] = sample[SOURCES].flip(-1)
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
