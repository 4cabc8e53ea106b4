"""The three ONNX graphs of a family's inference path, built from the family contract alone.

    source encoder   source (B, 3, H, W)                                   -> encoding.<name> ...
    motion encoder   frames (B, 3, H, W)                                   -> motion.<name> ...
    renderer         encoding.<name>, source_motion.<name>, driving_motion.<name> ... -> prediction (B, 3, H', W')

The source encoder is :meth:`ReenactmentFamily.encode_source` (run once per source image), the motion encoder is
``compact_motion(encode_motion(frames))`` (run on the source and on every driving frame) and the renderer is
:meth:`ReenactmentFamily.render_encoded`. The names after the dot are the family's own dict keys, found by running
the family on example inputs; nothing here knows what they mean. Motion transfer (relative motion arithmetic)
stays in Python: it is the family's ``transfer_motion`` on the CPU, a few hundred numbers per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reenact.families.base import Motion, ReenactmentFamily
from reenact.families.motion import select_motion

SOURCE_ENCODER, MOTION_ENCODER, RENDERER = "source_encoder", "motion_encoder", "renderer"
GRAPH_NAMES = (SOURCE_ENCODER, MOTION_ENCODER, RENDERER)
ENCODING, MOTION, SOURCE_MOTION, DRIVING_MOTION = "encoding", "motion", "source_motion", "driving_motion"


def prefixed(prefix: str, keys: list[str]) -> list[str]:
    return [f"{prefix}.{key}" for key in keys]


def unprefixed(prefix: str, names: list[str]) -> list[str]:
    return [name.removeprefix(f"{prefix}.") for name in names if name.startswith(f"{prefix}.")]


@dataclass(frozen=True)
class GraphKeys:
    """The family's dict keys that become graph input and output names (sorted, so exports are reproducible)."""

    encoding: list[str]  # encode_source's entries
    motion: list[str]  # compact_motion's entries: the motion encoder's outputs and the renderer's source motion
    driving: list[str]  # transfer_motion's entries: the renderer's driving motion

    def names(self) -> dict[str, tuple[list[str], list[str]]]:
        """Input and output names of each graph."""
        return {
            SOURCE_ENCODER: (["source"], prefixed(ENCODING, self.encoding)),
            MOTION_ENCODER: (["frames"], prefixed(MOTION, self.motion)),
            RENDERER: (prefixed(ENCODING, self.encoding) + prefixed(SOURCE_MOTION, self.motion)
                       + prefixed(DRIVING_MOTION, self.driving), ["prediction"]),
        }


class SourceEncoderGraph(nn.Module):
    """source (B, 3, H, W) -> the family's source encoding, one tensor per key."""

    def __init__(self, family: ReenactmentFamily, keys: GraphKeys) -> None:
        super().__init__()
        self.family, self.keys = family, keys

    def forward(self, source: torch.Tensor) -> tuple[torch.Tensor, ...]:
        encoding = self.family.encode_source(source)
        return tuple(encoding[key] for key in self.keys.encoding)


class MotionEncoderGraph(nn.Module):
    """frames (B, 3, H, W) -> the compact motion animation keeps per frame, one tensor per key."""

    def __init__(self, family: ReenactmentFamily, keys: GraphKeys) -> None:
        super().__init__()
        self.family, self.keys = family, keys

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        motion = self.family.compact_motion(self.family.encode_motion(frames))
        return tuple(motion[key] for key in self.keys.motion)


class RendererGraph(nn.Module):
    """encoding, source motion and driving motion tensors (in :class:`GraphKeys` order, batch B each) ->
    prediction (B, 3, H', W')."""

    def __init__(self, family: ReenactmentFamily, keys: GraphKeys) -> None:
        super().__init__()
        self.family, self.keys = family, keys

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        encoding, source_motion, driving_motion = split_inputs(self.keys, tensors)
        return self.family.render_encoded(encoding, source_motion, driving_motion)


def split_inputs(keys: GraphKeys, tensors: tuple[torch.Tensor, ...]) -> tuple[dict, Motion, Motion]:
    a, b = len(keys.encoding), len(keys.encoding) + len(keys.motion)
    return (dict(zip(keys.encoding, tensors[:a], strict=True)), dict(zip(keys.motion, tensors[a:b], strict=True)),
            dict(zip(keys.driving, tensors[b:], strict=True)))


@torch.no_grad()
def example_inputs(family: ReenactmentFamily, frame_size: int, batch: int, seed: int = 0
                   ) -> tuple[GraphKeys, dict[str, tuple[torch.Tensor, ...]]]:
    """The keys and one input tuple per graph for random images of ``batch`` (>= 2) frames: the renderer gets
    the motion that moves each source to a driving frame by the family's default transfer mode, as animation feeds
    it."""
    generator = torch.Generator().manual_seed(seed)
    source = torch.rand(batch, 3, frame_size, frame_size, generator=generator)
    driving = torch.rand(batch, 3, frame_size, frame_size, generator=generator)
    encoding = family.encode_source(source)
    source_motion = family.compact_motion(family.encode_motion(source))
    driving_motion = family.compact_motion(family.encode_motion(driving))
    moved = family.transfer(select_motion(source_motion, 0), driving_motion, select_motion(driving_motion, 0))
    keys = GraphKeys(sorted(encoding), sorted(source_motion), sorted(moved))
    renderer_inputs = (*(encoding[k] for k in keys.encoding), *(source_motion[k] for k in keys.motion),
                       *(moved[k].contiguous() for k in keys.driving))
    return keys, {SOURCE_ENCODER: (source,), MOTION_ENCODER: (driving,), RENDERER: renderer_inputs}


def graph_modules(family: ReenactmentFamily, keys: GraphKeys) -> dict[str, nn.Module]:
    """The three graphs' modules in eval mode (exporters restore a module's mode afterwards: a wrapper left in
    training mode would put the family's BatchNorm layers into training mode)."""
    return {SOURCE_ENCODER: SourceEncoderGraph(family, keys).eval(),
            MOTION_ENCODER: MotionEncoderGraph(family, keys).eval(), RENDERER: RendererGraph(family, keys).eval()}
