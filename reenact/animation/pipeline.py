"""Batched animation on tensors: one source image (or several of one person), driving frames in batches, rendered
frames out.

    animator = Animator(network, source)                      # source (3, H, W) or sources (S, 3, H, W) in [0, 1]
    motion_all = encode_driving(network, batches)             # the motion of every driving frame (pass 1)
    reference = choose_reference(network, animator.source_motion, motion_all, "first")
    for out in animator.render_batches(motion_all, reference):   # (B, 3, H', W') predictions (pass 2)
        ...

``network`` is any :class:`reenact.families.base.ReenactmentFamily`: the family encodes motion, transfers it and
renders. Driving motion is encoded for the whole video before anything is rendered, because the reference
frame (the first, or the one whose pose is closest to the source's) must be known first; with several source
images the first one is the source the motion is transferred to (relative motion, best reference frame), and the
family draws on all of them when it renders (a family that takes one source says so in one line); motion is small
(a few hundred numbers per frame), so videos are never held in memory as images. A single source is encoded once
(:meth:`~reenact.families.base.ReenactmentFamily.encode_source`), so a driving frame pays only the motion encoder and
:meth:`~reenact.families.base.ReenactmentFamily.render_encoded`. ``precision="bf16"``
runs the networks under ``torch.autocast`` with bfloat16 (meant for GPUs; it also runs, slowly, on CPU);
the motion arithmetic stays in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from reenact.animation.errors import AnimationInputError
from reenact.animation.landmarks import image_landmarks
from reenact.animation.settings import PRECISIONS, REFERENCE_CHOICES, AnimationSettings, transfer_from_relative
from reenact.animation.smoothing import DEFAULT_FPS, smooth_motion
from reenact.families.base import Motion, ReenactmentFamily
from reenact.families.motion import concat_motion, expand_motion, motion_length, move_motion, select_motion
from reenact.layers.geometry import resize_to
from reenact.utils.heap import HeapTrimmer

__all__ = ["PRECISIONS", "REFERENCE_CHOICES", "Animator", "animate_frames", "choose_reference", "encode_driving"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when available; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def progress_bar(total: int, description: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="frame", disable=not enabled, dynamic_ncols=True)


def network_device(network: nn.Module) -> torch.device:
    parameter = next(network.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def batched(frames: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, frames.shape[0], batch_size):
        yield frames[start : start + batch_size]


@torch.no_grad()
def encode_frames(network: ReenactmentFamily, images: torch.Tensor, precision: str = "fp32") -> Motion:
    """The family's motion of a batch (B, 3, H, W), compact float32 on the network's device."""
    device = network_device(network)
    with autocast(device, precision):
        motion = network.encode_motion(images.to(device))
    return network.compact_motion(motion)


@torch.no_grad()
def encode_driving(
    network: ReenactmentFamily,
    batches: Iterable[torch.Tensor],
    precision: str = "fp32",
    progress: Any = None,
    total: int | None = None,
) -> Motion:
    """The motion of every driving frame, batch by batch, gathered on the CPU; ``progress`` is a tqdm bar.

    ``total`` (the number of frames, when known): the motion is written into tensors allocated once. Keeping one
    small tensor per batch alive between the networks' large temporary buffers fragments the C heap, so that freed
    memory never returns: a 10-minute video grew the process by 450 MB that way
    (experiments/2026-12-06_animation.md). The freed heap is handed back every few hundred frames
    (:class:`~reenact.utils.heap.HeapTrimmer`)."""
    trimmer = HeapTrimmer()
    if total is None:
        parts = []
        for batch in batches:
            parts.append(move_motion(encode_frames(network, batch, precision), "cpu"))
            if progress is not None:
                progress.update(batch.shape[0])
            trimmer.advance(batch.shape[0])
        return concat_motion(parts)
    motion: Motion | None = None
    filled = 0
    for batch in batches:
        part = move_motion(encode_frames(network, batch, precision), "cpu")
        count = batch.shape[0]
        if filled + count > total:
            raise ValueError(f"more driving frames than the {total} announced")
        if motion is None:
            motion = {key: torch.empty((total, *value.shape[1:]), dtype=value.dtype) for key, value in part.items()}
        for key, value in part.items():
            motion[key][filled:filled + count] = value
        filled += count
        if progress is not None:
            progress.update(count)
        trimmer.advance(count)
    if motion is None:
        raise ValueError("no motion to concatenate (empty driving video?)")
    return {key: value[:filled] for key, value in motion.items()}


def choose_reference(network: ReenactmentFamily, source_motion: Motion, motion_all: Motion,
                     reference_frame: int | str) -> int:
    """Index of the reference driving frame: ``"first"``, ``"best"`` (pose closest to the source, as the family
    judges it) or an index."""
    num_frames = motion_length(motion_all)
    if reference_frame == "first":
        return 0
    if reference_frame == "best":
        return network.best_reference_frame(move_motion(source_motion, "cpu"), motion_all)
    if isinstance(reference_frame, int) and not isinstance(reference_frame, bool):
        if not 0 <= reference_frame < num_frames:
            raise AnimationInputError(
                f"reference_frame={reference_frame} is outside the driving video's {num_frames} frames")
        return reference_frame
    raise AnimationInputError(f"reference_frame={reference_frame!r}; choose first, best or a frame index")


class Animator:
    """One network and one source image (or several of one person): the sources' motion once, then frames for
    driving motion."""

    def __init__(self, network: ReenactmentFamily, source_image: torch.Tensor, precision: str = "fp32",
                 source_landmarks: torch.Tensor | None = None) -> None:
        """``source_landmarks`` (1, 68, 2): the first source's landmarks, for a family whose transfer reads them
        (``transfer_needs_landmarks``); they go to ``transfer`` only."""
        if source_image.dim() not in (3, 4) or source_image.shape[-3] != 3 or source_image.numel() == 0:
            raise ValueError(f"source_image must be (3, H, W) or (S, 3, H, W), got {tuple(source_image.shape)}")
        if not isinstance(network, ReenactmentFamily):
            raise TypeError(f"{type(network).__qualname__} is not a ReenactmentFamily")
        sources = source_image if source_image.dim() == 4 else source_image[None]  # (S, 3, H, W)
        network.check_sources(sources.shape[0])  # one line when the family takes fewer
        self.network = network
        self.device = network_device(network)
        self.precision = precision
        self.sources = sources.to(self.device, torch.float32)  # (S, 3, H, W)
        self.source = self.sources[:1]  # (1, 3, H, W): the one motion is transferred to
        motions = encode_frames(network, self.sources, precision)
        self.source_motions = [select_motion(motions, i) for i in range(self.sources.shape[0])]  # batch 1 each
        self.source_motion = self.source_motions[0]
        self.transfer_source_motion = self.source_motion  # what transfer gets: plus the landmarks when given
        if source_landmarks is not None:
            self.transfer_source_motion = {**self.source_motion, "landmarks": source_landmarks[:1].to(self.device)}
        # what rendering needs of the one source (LivePortrait's F volume, FOMM's encoder features), computed once
        # here rather than for every driving frame; several sources go through render_sources
        self.source_encoding: dict[str, torch.Tensor] | None = None
        if self.sources.shape[0] == 1:
            with torch.no_grad(), autocast(self.device, precision):
                self.source_encoding = network.encode_source(self.source)  # batch 1 each

    @torch.no_grad()
    def render(self, driving_motion: Motion, reference_motion: Motion, transfer: str | None = None,
               transfer_options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Frames for a batch of driving motion, transferred by ``transfer`` (a mode of the family's
        ``transfer_modes``; None: its default) with the family's ``transfer_options``: ``prediction``
        (B, 3, H', W') in [0, 1] and the motion the source was rendered with (``motion``)."""
        driving_motion = move_motion(driving_motion, self.device)
        moved = self.network.transfer(self.transfer_source_motion, driving_motion,
                                      move_motion(reference_motion, self.device), transfer, **(transfer_options or {}))
        batch = motion_length(driving_motion)
        with autocast(self.device, self.precision):
            if self.source_encoding is not None:
                encoding = {key: value.expand(batch, *value.shape[1:]) for key, value in self.source_encoding.items()}
                prediction = self.network.render_encoded(encoding, expand_motion(self.source_motion, batch), moved)
            else:
                prediction = self.network.render_sources(
                    self.sources[None].expand(batch, -1, -1, -1, -1),
                    [expand_motion(motion, batch) for motion in self.source_motions], moved)["prediction"]
        return {"prediction": prediction.float().clamp(0.0, 1.0), "motion": moved}

    def render_batches(self, motion_all: Motion, reference_index: int, batch_size: int = 16,
                       transfer: str | None = None, transfer_options: dict[str, Any] | None = None,
                       progress: Any = None) -> Iterator[dict[str, Any]]:
        """:meth:`render` over all frames in batches; yields each batch's output as soon as it is ready. The mode
        and the options are checked once, before the first batch. The C heap's freed memory is handed back every few
        hundred frames (:class:`~reenact.utils.heap.HeapTrimmer`), so a long video does not grow the process."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        transfer, transfer_options = self.network.check_transfer(transfer, transfer_options)
        reference_motion = select_motion(motion_all, reference_index)
        num_frames = motion_length(motion_all)
        trimmer = HeapTrimmer()
        for start in range(0, num_frames, batch_size):
            batch = select_motion(motion_all, slice(start, start + batch_size))
            out = self.render(batch, reference_motion, transfer, transfer_options)
            if progress is not None:
                progress.update(motion_length(batch))
            trimmer.advance(motion_length(batch))
            yield out


def animate_frames(
    network: ReenactmentFamily,
    source_image: torch.Tensor,
    driving_frames: torch.Tensor,
    settings: AnimationSettings | None = None,
    **changes: Any,
) -> torch.Tensor:
    """Drive ``source_image`` (3, H, W), or several images of one person (S, 3, H, W), with ``driving_frames``
    (T, 3, H, W), all in [0, 1]; returns (T, 3, H', W') on the CPU. Driving frames of another size are resized to the
    source's. ``settings`` (default :class:`AnimationSettings`) with ``changes`` applied to it (any of its fields;
    ``relative=True/False`` is read as ``transfer="relative"/"absolute"``); ``max_frames`` keeps the first frames."""
    settings = resolve_settings(settings, changes)
    _, options = network.check_transfer(settings.transfer, dict(settings.transfer_options))  # one line, before work
    if driving_frames.dim() != 4 or driving_frames.shape[1] != 3 or driving_frames.shape[0] == 0:
        raise ValueError(f"driving_frames must be (T, 3, H, W) with T >= 1, got {tuple(driving_frames.shape)}")
    if settings.max_frames is not None:
        driving_frames = driving_frames[: settings.max_frames]
    batch_size, precision = settings.batch_size, settings.precision
    landmarks = network.transfer_needs_landmarks(options)
    first = source_image if source_image.dim() == 3 else source_image[0]
    animator = Animator(network, source_image, precision, image_landmarks(first[None]) if landmarks else None)
    size = tuple(source_image.shape[-2:])
    total = driving_frames.shape[0]
    batches = (resize_to(b.to(animator.device, torch.float32), size) for b in batched(driving_frames, batch_size))
    with progress_bar(total, "motion", settings.progress) as bar:
        motion_all = encode_driving(network, batches, precision, bar, total=total)
    motion_all = smooth_motion(network, motion_all, settings.smooth, settings.fps or DEFAULT_FPS)
    if landmarks:
        motion_all["landmarks"] = torch.cat([image_landmarks(b) for b in batched(driving_frames, batch_size)])
    reference = choose_reference(network, animator.source_motion, motion_all, settings.reference_frame)
    with progress_bar(total, "animate", settings.progress) as bar:
        outputs = [out["prediction"].cpu() for out in animator.render_batches(
            motion_all, reference, batch_size, settings.transfer, dict(settings.transfer_options), bar)]
    return torch.cat(outputs)


def resolve_settings(settings: AnimationSettings | None, changes: dict[str, Any]) -> AnimationSettings:
    """``settings`` (default: :class:`AnimationSettings` with ``progress`` off) with keyword ``changes`` applied:
    any field of the settings, ``relative`` (the older flag for ``transfer``), and any other name taken as one of
    the family's transfer options."""
    settings = settings or AnimationSettings(progress=False)
    changes = dict(changes)
    if "relative" in changes:
        relative = changes.pop("relative")
        if relative is not None and changes.get("transfer") is None:
            changes["transfer"] = transfer_from_relative(relative)
    fields = set(AnimationSettings.__dataclass_fields__)
    options = {name: changes.pop(name) for name in list(changes) if name not in fields}
    if options:
        changes["transfer_options"] = {**settings.transfer_options, **changes.get("transfer_options", {}), **options}
    return settings.replace(**changes) if changes else settings
