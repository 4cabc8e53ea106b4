"""Helpers on a family's :data:`~reenact.families.base.Motion` (a dict of tensors with the batch first): slicing,
batching, joining, moving and broadcasting the frames of a motion without knowing what its entries are."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from reenact.families.base import Motion


def iter_motion(motion: Motion, batch_size: int) -> Iterator[Motion]:
    """Consecutive slices of at most ``batch_size`` frames of a motion."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    length = motion_length(motion)
    for start in range(0, length, batch_size):
        yield select_motion(motion, slice(start, start + batch_size))


def motion_length(motion: Motion) -> int:
    """The number of frames of a motion (its tensors' first dimension)."""
    if not motion:
        raise ValueError("empty motion: it has no entries")
    return next(iter(motion.values())).shape[0]


def select_motion(motion: Motion, index: int | slice | torch.Tensor) -> Motion:
    """Frames ``index`` of every tensor; an int keeps the batch dimension (size 1)."""
    if isinstance(index, int):
        index = slice(index, index + 1)
    return {k: v[index] for k, v in motion.items()}


def concat_motion(parts: list[Motion]) -> Motion:
    """The frames of several motions one after another (every part has the same entries)."""
    if not parts:
        raise ValueError("no motion to concatenate (empty driving video?)")
    return {k: torch.cat([p[k] for p in parts], dim=0) for k in parts[0]}


def move_motion(motion: Motion, device: torch.device | str) -> Motion:
    """Every tensor of a motion on ``device``."""
    return {k: v.to(device) for k, v in motion.items()}


def expand_motion(motion: Motion, batch: int) -> Motion:
    """A batch-1 motion viewed as ``batch`` copies (no memory copy)."""
    return {k: v.expand(batch, *v.shape[1:]) for k, v in motion.items()}
