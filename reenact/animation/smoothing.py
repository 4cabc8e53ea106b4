"""Steady motion: a One-Euro filter over time on the driving motion, before it is transferred and rendered.

    smoother = MotionSmoother(network.motion_smoothing(motion), strength=1.0, fps=25.0)
    steady = smoother(motion)            # T consecutive frames; the filter state carries over to the next call

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is an exponential smoothing whose cut-off frequency rises
with the signal's speed: ``f_c = min_cutoff + beta * |dx/dt|``, ``alpha = 1 / (1 + 1 / (2 pi f_c dt))``. A still
head is held steady (low cut-off, jitter removed) while a fast turn passes with little lag. The filter is causal, so
a whole video filtered at once and the same frames streamed one by one (:mod:`reenact.animation.stream`) give the
same motion.

How each entry of the family's motion is filtered is the family's declaration,
:meth:`reenact.families.base.ReenactmentFamily.motion_smoothing`: ``"linear"`` (every number on its own),
``"rotation"`` ((..., 3, 3) rotation matrices: filtered element-wise, then projected back onto the nearest rotation),
``"angle"`` (angles in degrees: unwrapped so that 179 -> -179 is a 2-degree step, filtered in radians so that their
speeds compare with the other entries', wrapped back to [-180, 180)) or ``"none"`` (passed through).

``smooth=`` on the command line, the API, the live mode and the app: ``false`` (off, the default: the motion is not
touched), ``true`` (:data:`DEFAULT_STRENGTH`) or a positive number (the strength: larger is steadier and lags more;
the cut-off frequencies scale with 1/strength).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from reenact.animation.errors import AnimationInputError
from reenact.families.base import Motion
from reenact.families.motion import motion_length

SMOOTHING_KINDS = ("linear", "rotation", "angle", "none")
DEFAULT_STRENGTH = 1.0
DEFAULT_FPS = 25.0  # the frame rate assumed for driving frames given as tensors, without a video's own
# One-Euro parameters at strength 1, for motion in normalised units (keypoints in [-1, 1], angles in radians) at a
# frame rate of about 25-30 fps: a still head is filtered at 1 Hz; a speed of 1 unit/s raises the cut-off by 1 Hz.
MIN_CUTOFF_HZ = 1.0
BETA = 1.0
DERIVATIVE_CUTOFF_HZ = 1.0


def smoothing_strength(value: Any) -> float | None:
    """``smooth=`` as given (false/None/0, true, a number or its text) -> the strength, or None when off."""
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_STRENGTH
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "false", "off", "no", "none", "null", "0"):
            return None
        if text in ("true", "on", "yes"):
            return DEFAULT_STRENGTH
        try:
            value = float(text)
        except ValueError:
            raise AnimationInputError(f"smooth={value!r}; give false, true or a positive strength") from None
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return None if value == 0 else float(value)
    raise AnimationInputError(f"smooth={value!r}; give false, true or a positive strength")


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


def nearest_rotation(matrices: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> the nearest rotation matrices (Frobenius norm): U diag(1, 1, det(U V^T)) V^T of the SVD."""
    u, _, vh = torch.linalg.svd(matrices.double())
    sign = torch.linalg.det(u @ vh)  # (...,): -1 where the nearest orthogonal matrix is a reflection
    d = torch.ones(*sign.shape, 3, dtype=torch.float64)
    d[..., 2] = sign
    return (u * d[..., None, :]) @ vh


class MotionSmoother:
    """A One-Euro filter over the frames of a family's motion (every numbered entry at once), with state: call it on
    consecutive batches of frames (a whole video, or one frame at a time) and it continues where it left off."""

    def __init__(self, kinds: dict[str, str], strength: float = DEFAULT_STRENGTH, fps: float = 25.0) -> None:
        unknown = {k: v for k, v in kinds.items() if v not in SMOOTHING_KINDS}
        if unknown:
            name, kind = next(iter(unknown.items()))
            raise ValueError(f"motion entry {name!r}: smoothing kind {kind!r}; known: {', '.join(SMOOTHING_KINDS)}")
        if not strength > 0:
            raise AnimationInputError(f"smoothing strength must be positive, got {strength}")
        if not fps > 0:
            raise AnimationInputError(f"smoothing needs the frame rate; got fps={fps}")
        self.kinds = dict(kinds)
        self.strength = float(strength)
        self.min_cutoff = MIN_CUTOFF_HZ / self.strength
        self.beta = BETA / self.strength
        self.dt = 1.0 / float(fps)
        self._filtered: np.ndarray | None = None  # (N,) the last output, in filter units (angles unwrapped, rad)
        self._speed: np.ndarray | None = None  # (N,) the filtered derivative
        self._last_angles: dict[str, np.ndarray] = {}  # the last unwrapped angle (radians) per "angle" entry

    def reset(self) -> None:
        """Forget the past (a new clip)."""
        self._filtered = self._speed = None
        self._last_angles = {}

    def _angles_in(self, name: str, degrees: np.ndarray) -> np.ndarray:
        """(T, n) degrees -> radians unwrapped along time, continuing from the previous call."""
        radians = np.deg2rad(degrees)
        previous = self._last_angles.get(name)
        if previous is not None:
            radians = np.concatenate([previous[None], radians])
        unwrapped = np.unwrap(radians, axis=0)  # the first row kept as it is: the previous unwrapped angle
        if previous is not None:
            unwrapped = unwrapped[1:]
        self._last_angles[name] = unwrapped[-1].copy()
        return unwrapped

    def __call__(self, motion: Motion, dt: float | None = None) -> Motion:
        """The filtered motion of ``motion``'s T frames (in time order); entries of kind "none", and entries the
        family did not list, are returned as they are. ``dt``: seconds between frames (default 1 / fps)."""
        step = self.dt if dt is None else float(dt)
        frames = motion_length(motion)
        names = [k for k, kind in self.kinds.items() if kind != "none" and k in motion]
        if not names:
            return dict(motion)
        columns = []
        for name in names:
            values = motion[name].detach().double().cpu().reshape(frames, -1).numpy()  # (T, n)
            columns.append(self._angles_in(name, values) if self.kinds[name] == "angle" else values)
        signal = np.concatenate(columns, axis=1)  # (T, N)
        out = np.empty_like(signal)
        filtered, speed = self._filtered, self._speed
        alpha_d = _alpha(DERIVATIVE_CUTOFF_HZ, step)
        for t in range(frames):
            x = signal[t]
            if filtered is None:
                filtered, speed = x.copy(), np.zeros_like(x)
            else:
                speed = alpha_d * (x - filtered) / step + (1.0 - alpha_d) * speed
                alpha = _alpha(self.min_cutoff + self.beta * np.abs(speed), step)
                filtered = alpha * x + (1.0 - alpha) * filtered
            out[t] = filtered
        self._filtered, self._speed = filtered, speed
        result = dict(motion)
        start = 0
        for name, column in zip(names, columns, strict=True):
            width = column.shape[1]
            part = out[:, start:start + width]
            start += width
            source = motion[name]
            if self.kinds[name] == "angle":
                part = (np.rad2deg(part) + 180.0) % 360.0 - 180.0
            tensor = torch.from_numpy(np.ascontiguousarray(part)).reshape(source.shape)
            if self.kinds[name] == "rotation":
                tensor = nearest_rotation(tensor)
            result[name] = tensor.to(source.device, source.dtype)
        return result


def smoother_for(network: Any, motion: Motion, smooth: Any, fps: float) -> MotionSmoother | None:
    """The filter ``smooth=`` asks for on ``network``'s motion (None when smoothing is off)."""
    strength = smoothing_strength(smooth)
    if strength is None:
        return None
    return MotionSmoother(network.motion_smoothing(motion), strength, fps)


def smooth_motion(network: Any, motion: Motion, smooth: Any, fps: float) -> Motion:
    """The driving motion of a whole video filtered as ``smooth=`` asks (``motion`` itself when it is off)."""
    smoother = smoother_for(network, motion, smooth, fps)
    return motion if smoother is None else smoother(motion)
