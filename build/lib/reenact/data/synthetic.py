"""The built-in synthetic talking-face dataset on disk: rendered clips with ground-truth landmarks and pose.

The scene and renderer are in ``reenact.data.synthetic_scene`` (geometry and pose convention documented there).
`ensure_synthetic_dataset` writes the clips once as real .mp4 files (`{identity}#{clip:03d}.mp4`) plus
`{stem}.landmarks.npy` (T, L, 2) pixel coordinates and `{stem}.pose.npy` (T, 3) yaw/pitch/roll degrees.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np

from reenact.data.synthetic_scene import (  # noqa: F401  (re-exported: the dataset's public scene API)
    LANDMARK_FLIP_PERMUTATION,
    LANDMARK_NAMES,
    Canvas,
    Identity,
    Motion,
    render_background,
    render_clip,
    render_frame,
)
from reenact.data.video_writer import write_video

GENERATOR_VERSION = 3
COMPLETE_MARKER = "dataset.json"
SYNTHETIC_CRF = 12  # near-lossless: keeps the static background static after compression


def dataset_name(resolution: int, num_train: int, num_test: int, clips: int, frames: int, fps: float, seed: int) -> str:
    return (f"synthetic-v{GENERATOR_VERSION}-r{resolution}-id{num_train}+{num_test}-c{clips}-f{frames}"
            f"-fps{fps:g}-s{seed}")


def _write_clip(folder: Path, stem: str, seed: int, identity_index: int, clip: int, identity: Identity,
                resolution: int, num_frames: int, fps: float) -> None:
    rng = np.random.default_rng([seed, identity_index, clip, 1])
    motion = Motion.sample(rng, num_frames, fps)
    background = render_background(rng, resolution)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(0.2, 0.7), 1.0])
    frames, landmarks, pose = render_clip(identity, motion, background, light / np.linalg.norm(light))
    write_video(folder / f"{stem}.mp4", frames, fps, crf=SYNTHETIC_CRF)
    np.save(folder / f"{stem}.landmarks.npy", landmarks)
    np.save(folder / f"{stem}.pose.npy", pose)


def _remove_stale_temporaries(root: Path, name: str) -> None:
    """Drop half-built folders left by interrupted runs of this host (their process no longer exists)."""
    prefix = f".tmp-{name}-{socket.gethostname()}-"
    for folder in root.glob(f"{prefix}*"):
        try:
            os.kill(int(folder.name[len(prefix):]), 0)  # signal 0 only asks whether the process exists
        except (ValueError, ProcessLookupError):
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass


def ensure_synthetic_dataset(
    root: str | Path,
    *,
    resolution: int = 64,
    num_train_identities: int,
    num_test_identities: int,
    clips_per_identity: int,
    num_frames: int,
    fps: float = 25,
    seed: int = 0,
) -> Path:
    """Generate the dataset into `root/<name>/{train,test}` unless it is already complete; returns that folder.

    Built in a private temporary folder and renamed into place after the completion marker is written,
    so an interrupted run never leaves a folder that looks complete; concurrent callers are safe.
    """
    if resolution < 16 or resolution % 2:
        raise ValueError(f"synthetic resolution must be an even number >= 16, got {resolution}")
    if num_train_identities < 1 or num_test_identities < 0 or clips_per_identity < 1 or num_frames < 2:
        raise ValueError(
            f"synthetic dataset needs >=1 train identity, >=0 test, >=1 clip, >=2 frames; got {num_train_identities}, "
            f"{num_test_identities}, {clips_per_identity}, {num_frames}")
    root = Path(root).expanduser()
    name = dataset_name(resolution, num_train_identities, num_test_identities, clips_per_identity, num_frames, fps,
                        seed)
    final = root / name
    if (final / COMPLETE_MARKER).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root, name)
    building = root / f".tmp-{name}-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    try:
        splits = {"train": range(num_train_identities),
                  "test": range(num_train_identities, num_train_identities + num_test_identities)}
        for split, identities in splits.items():
            (building / split).mkdir(parents=True)
            for index in identities:
                identity = Identity.sample(np.random.default_rng([seed, index, 0]))
                for clip in range(clips_per_identity):
                    _write_clip(building / split, f"id{index:04d}#{clip:03d}", seed, index, clip, identity,
                                resolution, num_frames, fps)
        meta = {"generator_version": GENERATOR_VERSION, "resolution": resolution, "fps": fps, "seed": seed,
                "num_frames": num_frames, "clips_per_identity": clips_per_identity,
                "identities": {k: [f"id{i:04d}" for i in v] for k, v in splits.items()},
                "landmark_names": list(LANDMARK_NAMES), "landmark_flip_permutation": list(LANDMARK_FLIP_PERMUTATION),
                "pose": "yaw, pitch, roll in degrees; R = Rz(roll) Rx(pitch) Ry(yaw); +yaw nose to image right, "
                        "+pitch face down, +roll counter-clockwise on screen"}
        (building / COMPLETE_MARKER).write_text(json.dumps(meta, indent=1))
        try:
            os.rename(building, final)
        except OSError:
            if not (final / COMPLETE_MARKER).is_file():  # an incomplete leftover, not a concurrent winner
                shutil.rmtree(final, ignore_errors=True)
                os.rename(building, final)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final
