"""Steady motion (smooth=): the One-Euro filter, the families' declarations, the batch and streaming animators."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reenact.animation.errors import AnimationInputError
from reenact.animation.pipeline import animate_frames
from reenact.animation.smoothing import (
    DEFAULT_STRENGTH,
    MotionSmoother,
    nearest_rotation,
    smooth_motion,
    smoothing_strength,
)
from reenact.api import PretrainedModel
from reenact.families.liveportrait.keypoint_transform import rotation_matrix
from reenact.families.motion import concat_motion, select_motion
from tests.test_animate import fomm, liveportrait


def test_smooth_option_values() -> None:
    for off in (None, False, 0, 0.0, "false", "off", "0", ""):
        assert smoothing_strength(off) is None
    assert smoothing_strength(True) == smoothing_strength("true") == DEFAULT_STRENGTH
    assert smoothing_strength(2) == smoothing_strength("2.0") == 2.0
    for bad in ("strong", -1, float("nan"), [1]):
        with pytest.raises(AnimationInputError, match="smooth="):
            smoothing_strength(bad)


def _noisy_track(frames: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A slow sine (the head's motion) plus frame-to-frame jitter, (T, 4, 2) each."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None, None] / 25.0
    clean = 0.3 * np.sin(2 * math.pi * 0.4 * t + np.arange(4)[None, :, None]) * np.ones((1, 4, 2))
    return clean, clean + 0.01 * rng.standard_normal(clean.shape)


def _jitter(track: np.ndarray) -> float:
    return float(np.abs(np.diff(track, n=2, axis=0)).mean())


def test_filter_removes_jitter_and_keeps_the_motion() -> None:
    clean, noisy = _noisy_track()
    motion = {"value": torch.from_numpy(noisy).float()}
    steady = MotionSmoother({"value": "linear"}, 1.0, fps=25)(motion)["value"].double().numpy()
    assert _jitter(steady) < 0.35 * _jitter(noisy)
    # still following the motion: its error to the clean track is a fraction of the motion's size
    assert np.abs(steady - clean)[25:].mean() < 0.05 < 0.15 < np.abs(clean - clean.mean(0)).mean()
    stronger = MotionSmoother({"value": "linear"}, 4.0, fps=25)(motion)["value"].double().numpy()
    assert _jitter(stronger) < _jitter(steady)


def test_filter_is_causal_so_a_stream_equals_the_whole_video() -> None:
    _, noisy = _noisy_track(60)
    motion = {"value": torch.from_numpy(noisy).float(), "code": torch.arange(60)}
    whole = MotionSmoother({"value": "linear", "code": "none"}, 1.0, 25)(motion)
    smoother = MotionSmoother({"value": "linear", "code": "none"}, 1.0, 25)
    pieces = concat_motion([smoother(select_motion(motion, slice(i, i + 7))) for i in range(0, 60, 7)])
    torch.testing.assert_close(pieces["value"], whole["value"])
    assert torch.equal(whole["code"], motion["code"])  # "none": passed through


def test_rotations_stay_rotations_and_angles_wrap() -> None:
    rng = np.random.default_rng(1)
    frames = 50
    yaw = torch.from_numpy(170.0 + 25.0 * np.linspace(0, 1, frames) + rng.normal(0, 2, frames)).float()
    yaw = (yaw + 180.0) % 360.0 - 180.0  # crosses +-180 part-way
    zeros = torch.zeros(frames)
    motion = {"yaw": yaw, "rotation": rotation_matrix(zeros, yaw, zeros).transpose(1, 2)}
    out = MotionSmoother({"yaw": "angle", "rotation": "rotation"}, 1.0, 25)(motion)
    r = out["rotation"].double()
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(frames, 3, 3),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(frames, dtype=torch.float64), atol=1e-5, rtol=0)
    # filtered on the circle: every output angle is near the input (a plain average of 179 and -179 would give 0)
    step = (out["yaw"] - yaw + 180.0) % 360.0 - 180.0
    assert step.abs().max() < 15.0
    assert (out["yaw"] >= -180).all() and (out["yaw"] < 180).all()


def test_nearest_rotation_of_a_noisy_rotation() -> None:
    rotation = rotation_matrix(torch.tensor([10.0]), torch.tensor([-30.0]), torch.tensor([5.0]))
    noisy = rotation + 0.05 * torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(0))
    projected = nearest_rotation(noisy)
    assert torch.allclose(projected @ projected.transpose(1, 2), torch.eye(3, dtype=torch.float64), atol=1e-6)
    assert (projected - rotation.double()).abs().max() < 0.1


def test_families_declare_how_their_motion_is_filtered() -> None:
    with torch.no_grad():
        lp_motion = liveportrait().compact_motion(liveportrait().encode_motion(torch.rand(2, 3, 64, 64)))
        fomm_motion = fomm().compact_motion(fomm().encode_motion(torch.rand(2, 3, 64, 64)))
    lp = liveportrait().motion_smoothing(lp_motion)
    assert lp["rotation"] == "rotation" and {lp[k] for k in ("pitch", "yaw", "roll")} == {"angle"}
    assert lp["exp"] == lp["t"] == lp["scale"] == "linear"
    assert set(fomm().motion_smoothing(fomm_motion).values()) == {"linear"}
    assert set(fomm().motion_smoothing(fomm_motion)) == set(fomm_motion)


@pytest.mark.parametrize("family", [fomm, liveportrait])
def test_smoothing_a_still_video_changes_nothing_and_a_shaking_one_is_steadier(family) -> None:
    network = family()
    g = torch.Generator().manual_seed(0)
    source = torch.rand(3, 64, 64, generator=g)
    still = torch.rand(1, 3, 64, 64, generator=g).expand(6, -1, -1, -1)
    plain = animate_frames(network, source, still, batch_size=4)
    torch.testing.assert_close(animate_frames(network, source, still, batch_size=4, smooth=True), plain,
                               atol=2e-5, rtol=0)
    # a face shaking between two frames: the smoothed output changes less from frame to frame
    shaking = torch.stack([torch.rand(3, 64, 64, generator=g), torch.rand(3, 64, 64, generator=g)] * 5)
    raw = animate_frames(network, source, shaking, batch_size=4)
    steady = animate_frames(network, source, shaking, batch_size=4, smooth=4.0, fps=25)
    assert (steady[1:] - steady[:-1]).abs().mean() < 0.8 * (raw[1:] - raw[:-1]).abs().mean()
    with pytest.raises(AnimationInputError, match="smooth="):
        animate_frames(network, source, still, smooth="much")


@pytest.mark.parametrize("smooth", [False, 2.0])
def test_stream_gives_the_frames_of_the_whole_video(smooth) -> None:
    network = liveportrait()
    model = PretrainedModel(network, 64, torch.device("cpu"), {})
    g = torch.Generator().manual_seed(3)
    source, driving = torch.rand(3, 64, 64, generator=g), torch.rand(5, 3, 64, 64, generator=g)
    whole = model.animate(source, driving, smooth=smooth, fps=30)
    animate = model.stream(source, smooth=smooth, fps=30)
    streamed = torch.stack([animate(frame) for frame in driving])
    torch.testing.assert_close(streamed, whole, atol=1e-4, rtol=0)
    # uint8 frames in, uint8 frames out; reset starts a new clip from a fresh reference
    animate.reset()
    first = animate((driving[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    assert first.dtype == np.uint8 and first.shape == (64, 64, 3)


def test_smooth_motion_off_returns_the_motion_itself() -> None:
    motion = {"value": torch.rand(4, 3, 2)}
    assert smooth_motion(fomm(), motion, False, 25) is motion
