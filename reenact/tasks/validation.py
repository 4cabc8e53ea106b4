"""What the training task measures on held-out videos: each video reconstructed from its first frame.

``val/l1`` is logged beside ``val/l1_copy_source`` (the error of just showing the source frame), so anyone can see
whether motion transfers. A family that renders from several source images (``max_sources`` > 1 or None) also gets
``val/l1_two_sources``: every frame reconstructed from the first and the middle frame together.
"""

from __future__ import annotations

import torch

from reenact.families.base import ReenactmentFamily
from reenact.layers.geometry import resize_to


@torch.no_grad()
def reconstruct_video(
    network: ReenactmentFamily, video: torch.Tensor, chunk_frames: int, source_frames: tuple[int, ...] = (0,)
) -> torch.Tensor:
    """Every frame t is reconstructed from (the source frames, frame t), ``chunk_frames`` driving frames per pass;
    by default frame 0 is the one source. video: (T, 3, H, W) in [0, 1] -> prediction (T, 3, H', W')."""
    sources = video[list(source_frames)][None]  # (1, S, 3, H, W)
    predictions = []
    for start in range(0, video.shape[0], chunk_frames):
        driving = video[start : start + chunk_frames]
        batch = driving.shape[0]
        if sources.shape[1] == 1:
            output = network(sources[:, 0].expand(batch, -1, -1, -1), driving)
        else:
            output = network.forward_sources(sources.expand(batch, -1, -1, -1, -1), driving)
        predictions.append(output["prediction"].clamp(0, 1))
    return torch.cat(predictions)


def validates_two_sources(network: ReenactmentFamily) -> bool:
    """Whether validation also reconstructs from two sources (the family renders from several)."""
    return network.max_sources is None or network.max_sources >= 2


@torch.no_grad()
def validation_errors(network: ReenactmentFamily, video: torch.Tensor, chunk_frames: int) -> dict[str, torch.Tensor]:
    """The logged errors of one video (T, 3, H, W) in [0, 1] (see the module docstring)."""
    prediction = reconstruct_video(network, video, chunk_frames)
    target = resize_to(video, tuple(prediction.shape[-2:]))
    errors = {"val/l1": (prediction - target).abs().mean(), "val/l1_copy_source": (target[:1] - target).abs().mean()}
    if validates_two_sources(network) and video.shape[0] >= 2:  # the first and the middle frame
        two = reconstruct_video(network, video, chunk_frames, (0, video.shape[0] // 2))
        errors["val/l1_two_sources"] = (two - target).abs().mean()
    return errors
