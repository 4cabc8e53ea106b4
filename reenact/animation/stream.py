"""Live driving: one driving frame in, one animated frame out.

    animate = model.stream(portrait, smooth=True, fps=30)   # PretrainedModel.stream -> StreamAnimator
    for frame in camera:                                     # (H, W, 3) uint8 RGB or (3, H, W) float in [0, 1]
        out = animate(frame)                                 # the same form back, at the model's resolution

A :class:`StreamAnimator` keeps what a batch over a whole video would compute once: the source's encoding and motion
(:class:`reenact.animation.pipeline.Animator`), the reference driving motion (the first frame it is given, or a
reference image passed up front) and the state of the steady-motion filter (:mod:`reenact.animation.smoothing`,
causal). Streaming a video's frames one by one therefore gives the frames that ``model.animate`` gives for the whole
video with ``reference_frame="first"``. The frames are taken as they are (already cropped to the face, as
``model.animate`` takes them); :mod:`reenact.live` crops camera frames and paces the stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from reenact.animation.pipeline import Animator, encode_frames, resolve_settings
from reenact.animation.settings import AnimationSettings
from reenact.animation.smoothing import DEFAULT_FPS, MotionSmoother
from reenact.families.base import Motion
from reenact.layers.geometry import resize_to
from reenact.utils.visualize import to_uint8


def as_image_tensor(image: Any) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, H, W) float in [0, 1]; a tensor is returned as float."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"a frame must be (H, W, 3) RGB, got {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"a frame must be an (H, W, 3) uint8 array or a (3, H, W) tensor, got {type(image)}")
    return image.float()


class StreamAnimator:
    """Animate a source with driving frames given one at a time (see the module docstring)."""

    def __init__(self, model: Any, source: Any, settings: AnimationSettings | None = None, *, reference: Any = None,
                 **changes: Any) -> None:
        """``settings`` (:class:`AnimationSettings`) with keyword ``changes``, as ``model.animate`` takes them;
        ``smooth`` and ``fps`` set the filter, ``transfer`` and the family's options the motion transfer."""
        settings = resolve_settings(settings, changes)
        self.network = model.network
        self.network.check_transfer(settings.transfer, dict(settings.transfer_options))  # one line, up front
        self.settings = settings
        self.size = (model.frame_size, model.frame_size)
        sources = as_image_tensor(source)  # (3, H, W) or (S, 3, H, W)
        batch = sources if sources.dim() == 4 else sources[None]
        resized = resize_to(batch.to(model.device), self.size)
        self.animator = Animator(self.network, resized if sources.dim() == 4 else resized[0], settings.precision)
        self.precision = settings.precision
        self.fps = float(settings.fps or DEFAULT_FPS)
        self.smoother: MotionSmoother | None = None
        self.given_reference = None if reference is None else self.encode(reference)
        self.reference_motion: Motion | None = self.given_reference
        self.frames = 0

    def encode(self, frame: Any) -> Motion:
        """The family's motion of one frame (batch 1) at the model's resolution."""
        image = as_image_tensor(frame)
        image = image if image.dim() == 4 else image[None]
        return encode_frames(self.network, resize_to(image.to(self.animator.device), self.size), self.precision)

    def reset(self) -> None:
        """A new driving clip: the next frame is the reference again (unless one was given) and the filter forgets."""
        self.reference_motion = self.given_reference
        self.smoother = None
        self.frames = 0

    @torch.no_grad()
    def __call__(self, frame: Any, dt: float | None = None) -> Any:
        """One driving frame ((H, W, 3) uint8 or (3, H, W) float) -> the animated frame in the same form.
        ``dt``: seconds since the previous frame, for the filter (default 1 / fps)."""
        motion = self.encode(frame)
        if self.settings.smooth is not None:
            if self.smoother is None:
                self.smoother = MotionSmoother(self.network.motion_smoothing(motion), self.settings.smooth, self.fps)
            motion = self.smoother(motion, dt)
        if self.reference_motion is None:
            self.reference_motion = motion
        out = self.animator.render(motion, self.reference_motion, self.settings.transfer,
                                   dict(self.settings.transfer_options))
        self.frames += 1
        prediction = out["prediction"][0].cpu()  # (3, H', W') in [0, 1]
        return to_uint8(prediction) if isinstance(frame, np.ndarray) else prediction
