"""The built-in synthetic dataset: determinism, identity split, ground truth that matches the pictures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from reenact.data import synthetic
from reenact.data.synthetic import (
    LANDMARK_FLIP_PERMUTATION,
    LANDMARK_NAMES,
    Canvas,
    Identity,
    Motion,
    ensure_synthetic_dataset,
    render_background,
    render_frame,
)
from reenact.data.video import probe_video, read_video

SMALL = dict(resolution=64, num_train_identities=3, num_test_identities=2, clips_per_identity=2, num_frames=24)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), **SMALL)


def clips(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.mp4"))


def test_layout_and_side_files(dataset: Path) -> None:
    train, test = clips(dataset / "train"), clips(dataset / "test")
    assert len(train) == 3 * 2 and len(test) == 2 * 2
    for clip in train + test:
        assert re.fullmatch(r"id\d{4}#\d{3}\.mp4", clip.name)
        info = probe_video(clip)
        assert (info.num_frames, info.width, info.height, info.fps) == (24, 64, 64, 25.0)
        landmarks = np.load(clip.with_name(clip.stem + ".landmarks.npy"))
        pose = np.load(clip.with_name(clip.stem + ".pose.npy"))
        assert landmarks.shape == (24, len(LANDMARK_NAMES), 2) and landmarks.dtype == np.float32
        assert pose.shape == (24, 3) and pose.dtype == np.float32
        assert landmarks.min() >= 0 and landmarks.max() <= 63
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["landmark_flip_permutation"] == list(LANDMARK_FLIP_PERMUTATION)


def test_split_by_identity(dataset: Path) -> None:
    identities = {split: {c.name.split("#")[0] for c in clips(dataset / split)} for split in ("train", "test")}
    assert len(identities["train"]) == 3 and len(identities["test"]) == 2
    assert not identities["train"] & identities["test"]


def test_deterministic_and_idempotent(dataset: Path, tmp_path: Path) -> None:
    again = ensure_synthetic_dataset(tmp_path, **SMALL)
    for clip in clips(dataset / "train")[:2]:
        twin = again / "train" / clip.name
        for kind in ("landmarks", "pose"):
            assert np.array_equal(np.load(clip.with_name(f"{clip.stem}.{kind}.npy")),
                                  np.load(twin.with_name(f"{clip.stem}.{kind}.npy")))
        assert np.abs(read_video(clip).astype(int) - read_video(twin)).max() <= 2
    stamp = (again / "dataset.json").stat().st_mtime_ns
    assert ensure_synthetic_dataset(tmp_path, **SMALL) == again
    assert (again / "dataset.json").stat().st_mtime_ns == stamp  # not regenerated
    other = ensure_synthetic_dataset(tmp_path, **dict(SMALL, seed=1))
    assert other != again
    name = clips(dataset / "train")[0].stem
    assert not np.allclose(np.load(again / "train" / f"{name}.landmarks.npy"),
                           np.load(other / "train" / f"{name}.landmarks.npy"))


def test_motion_blinks_and_mouth(dataset: Path) -> None:
    index = {name: i for i, name in enumerate(LANDMARK_NAMES)}
    for clip in clips(dataset / "train"):
        landmarks = np.load(clip.with_name(clip.stem + ".landmarks.npy"))
        pose = np.load(clip.with_name(clip.stem + ".pose.npy"))
        assert landmarks.std(axis=0).mean() > 0.5  # pixels: the head moves
        assert np.ptp(pose, axis=0).min() > 2.0  # yaw, pitch and roll all vary (degrees)
        eye = landmarks[:, index["left_eye_bottom"], 1] - landmarks[:, index["left_eye_top"], 1]
        assert eye.min() < 0.3 * eye.max()  # at least one blink
        mouth = landmarks[:, index["lower_lip"], 1] - landmarks[:, index["upper_lip"], 1]
        assert mouth.max() > 1.8 * mouth.min()  # the mouth opens and closes
        # yaw is a real 3D rotation: the nose tip swings sideways relative to the eyes as yaw changes
        left, right = landmarks[:, index["left_eye_outer"]], landmarks[:, index["right_eye_outer"]]
        eye_line = (right - left) / np.linalg.norm(right - left, axis=1, keepdims=True)  # follows roll
        sideways = ((landmarks[:, index["nose_tip"]] - (left + right) / 2) * eye_line).sum(1)
        assert np.corrcoef(sideways, pose[:, 0])[0, 1] > 0.8


def test_copying_the_source_is_clearly_wrong(dataset: Path) -> None:
    """Static background, moving face: repeating frame 0 leaves a large error in the face only."""
    video = read_video(clips(dataset / "train")[0]).astype(np.float32) / 255
    assert np.abs(video[1:] - video[0]).mean() > 0.015
    corner = np.abs(video[:, :6, :6] - video[0, :6, :6]).mean()
    assert corner < 0.01


def test_landmarks_are_resolution_independent() -> None:
    identity = Identity.sample(np.random.default_rng([0, 5, 0]))
    motion = Motion.sample(np.random.default_rng(3), 4, 25.0)
    light = np.array([0.0, 0.0, 1.0])
    points = {}
    for size in (64, 256):
        image, points[size] = render_frame(Canvas(render_background(np.random.default_rng(1), size)), identity,
                                           motion, 2, light)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert np.allclose(points[64] / 63, points[256] / 255, atol=1e-4)


def test_interrupted_generation_leaves_nothing_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def crash_on_second_clip(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = synthetic._write_clip
    monkeypatch.setattr(synthetic, "_write_clip", crash_on_second_clip)
    tiny = dict(SMALL, num_train_identities=1, num_test_identities=1, num_frames=4)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(tmp_path, **tiny)
    assert list(tmp_path.iterdir()) == []  # no partial folder under the final name, no temporary left
    name = synthetic.dataset_name(64, 1, 1, 2, 4, 25, 0)
    stale = tmp_path / f".tmp-{name}-{synthetic.socket.gethostname()}-999999999"
    stale.mkdir()  # left by a killed process
    monkeypatch.setattr(synthetic, "_write_clip", original)
    folder = ensure_synthetic_dataset(tmp_path, **tiny)
    assert (folder / "dataset.json").is_file() and len(clips(folder / "train")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


def test_rejects_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        ensure_synthetic_dataset(tmp_path, **dict(SMALL, resolution=63))
    with pytest.raises(ValueError, match="frames"):
        ensure_synthetic_dataset(tmp_path, **dict(SMALL, num_frames=1))
