"""L1: mean absolute error between prediction and ground truth on [0, 1] frames.

This is FOMM's reconstruction "L1" (reconstruction.py): |prediction - target| averaged over pixels and
channels of each frame, then over all frames of all videos (frame-weighted, not video-weighted).
"""

from __future__ import annotations

import torch

from reenact.metrics.backends import describe
from reenact.metrics.frames import FrameSequence, Video, check_same_length


def l1_per_frame(
    prediction: Video,
    target: Video,
    batch_size: int = 64,
    device: str = "cpu",
) -> torch.Tensor:
    """Per-frame mean absolute error, (T,) float32 on the CPU."""
    prediction, target = FrameSequence.wrap(prediction), FrameSequence.wrap(target)
    check_same_length(prediction, target)
    values = []
    for start in range(0, len(prediction), batch_size):
        stop = min(start + batch_size, len(prediction))
        diff = prediction.float_chunk(start, stop, device) - target.float_chunk(start, stop, device)
        values.append(diff.abs().mean(dim=(1, 2, 3)).cpu())  # (n,)
    return torch.cat(values) if values else torch.zeros(0)


def l1_distance(
    prediction: Video,
    target: Video,
) -> float:
    """Mean absolute error over all frames (the L1 of FOMM's Table 1)."""
    return float(l1_per_frame(prediction, target).mean())


def l1_backend() -> dict[str, object]:
    return describe("torch", "torch", definition="mean |prediction - target| on [0, 1] frames")
