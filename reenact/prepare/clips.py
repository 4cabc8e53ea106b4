"""Cutting clips out of a raw video and writing them (with optional landmark/pose side files).

Output layout (FOMM video-preprocessing naming, so identity sampling works):
``OUT_DIR/{train,test}/{person_id}#{video_id}#{start:06d}#{end:06d}.mp4`` — an H.264 file with a short GOP,
or with ``--format png`` a folder of that name holding ``0000000.png, ...``. Side files sit next to it:
``{stem}.landmarks.npy`` (T, 68, 2) float32 pixels in the written clip and ``{stem}.pose.npy`` (T, 3) float32
yaw/pitch/roll degrees (NaN rows where no face was found), the names the synthetic dataset uses.
"""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reenact.data.datasets import side_file
from reenact.data.video import VideoError, iter_frames, read_video
from reenact.data.video_writer import write_frame_folder, write_video
from reenact.face.crop import IntBox, crop_and_resize
from reenact.face.landmarks import LandmarkDetector, build_landmark_detector, stack_landmarks
from reenact.face.pose import estimate_head_pose_batch
from reenact.prepare.report import Failure, PrepareReport
from reenact.utils.messages import first_line

KEYFRAME_INTERVAL = 8  # short GOP: a random frame read decodes at most 8 frames
CRF = 18


@dataclass(frozen=True)
class OutputOptions:
    out_dir: str
    size: int = 256
    fmt: str = "mp4"  # "mp4" or "png"
    landmarks: bool = False
    pose: bool = False
    landmark_backend: str = "dlib"
    device: str = "cpu"


@dataclass(frozen=True)
class ClipSpec:
    """One output clip: which raw frames (one per output frame, repeats allowed), where to crop, at what rate."""

    name: str
    split: str
    frame_indices: tuple[int, ...]
    box: IntBox  # (x0, y0, x1, y1) in raw-frame pixels
    fps: float


def safe_id(text: str) -> str:
    """An id usable inside a clip name: no '#' (the field separator), no path separators, no spaces."""
    cleaned = re.sub(r"[#/\\\s]+", "_", text.strip())
    return cleaned or "unnamed"


def clip_name(person_id: str, video_id: str, start: int, end: int) -> str:
    return f"{safe_id(person_id)}#{safe_id(video_id)}#{start:06d}#{end:06d}.mp4"


def clip_path(options: OutputOptions, split: str, name: str) -> Path:
    return Path(options.out_dir) / split / name


def wanted_side_files(clip: Path, options: OutputOptions) -> list[Path]:
    kinds = (["landmarks"] if options.landmarks else []) + (["pose"] if options.pose else [])
    return [side_file(clip, k) for k in kinds]


def is_complete(clip: Path, options: OutputOptions) -> bool:
    """A clip counts as done when it exists (temporary names never match) with every requested side file."""
    return clip.exists() and all(p.is_file() for p in wanted_side_files(clip, options))


@functools.lru_cache(maxsize=4)
def cached_landmark_detector(backend: str, device: str) -> LandmarkDetector:
    return build_landmark_detector(backend, device)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(temporary, "wb") as handle:
            np.save(handle, array)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_side_files(clip: Path, frames: np.ndarray, options: OutputOptions) -> None:
    """Landmarks/pose of the written frames (T, S, S, 3), each file written atomically."""
    if not (options.landmarks or options.pose):
        return
    detector = cached_landmark_detector(options.landmark_backend, options.device)
    landmarks = stack_landmarks(detector.detect_batch(list(frames)))  # (T, 68, 2), NaN where no face
    if options.landmarks:
        _save_npy_atomic(side_file(clip, "landmarks"), landmarks)
    if options.pose:
        _save_npy_atomic(side_file(clip, "pose"), estimate_head_pose_batch(landmarks, frames.shape[1:3]))


def write_clip(clip: Path, frames: np.ndarray, fps: float, options: OutputOptions) -> None:
    """Write the clip (temp name, then rename) and then its side files."""
    if options.fmt == "png":
        write_frame_folder(clip, frames)
    else:
        write_video(clip, frames, fps, keyframe_interval=KEYFRAME_INTERVAL, crf=CRF)
    write_side_files(clip, frames, options)


def complete_side_files(clip: Path, options: OutputOptions) -> None:
    """A clip from an earlier run without the side files now asked for: compute them from the clip."""
    if any(not p.is_file() for p in wanted_side_files(clip, options)):
        write_side_files(clip, read_video(clip), options)


def extract_clips(video: Path, specs: Sequence[ClipSpec], options: OutputOptions) -> PrepareReport:
    """Decode ``video`` once and write every clip in ``specs``; each clip is written as soon as it is full.

    Per-clip problems (a frame past the end of the video, a write error) fail that clip only.
    """
    report = PrepareReport()
    if not specs:
        return report
    needed: dict[int, list[tuple[int, list[int]]]] = {}  # raw frame -> [(clip, output positions)]
    for k, spec in enumerate(specs):
        positions: dict[int, list[int]] = {}
        for pos, raw in enumerate(spec.frame_indices):
            positions.setdefault(raw, []).append(pos)
        for raw, pos_list in positions.items():
            needed.setdefault(raw, []).append((k, pos_list))
    finishing: dict[int, list[int]] = {}
    for k, spec in enumerate(specs):
        finishing.setdefault(max(spec.frame_indices), []).append(k)
    last_needed = max(finishing)
    buffers: dict[int, np.ndarray] = {}
    done: set[int] = set()
    frame_number = -1
    reason = ""
    try:
        for frame_number, frame in enumerate(iter_frames(video)):
            for k, pos_list in needed.get(frame_number, ()):
                if k not in buffers:
                    buffers[k] = np.empty((len(specs[k].frame_indices), options.size, options.size, 3), np.uint8)
                buffers[k][pos_list] = crop_and_resize(frame, specs[k].box, options.size)
            for k in finishing.get(frame_number, ()):
                _finish(specs[k], buffers.pop(k), options, report)
                done.add(k)
            if frame_number >= last_needed:
                break
    except VideoError as exc:  # damaged part-way: clips already written stay written
        reason = str(exc)
    for k, spec in enumerate(specs):
        if k not in done:
            needs = max(spec.frame_indices)
            why = reason or f"{video} has only {frame_number + 1} frames; the clip needs frame {needs}"
            report.failed.append(Failure(str(clip_path(options, spec.split, spec.name)), why))
    return report


def _finish(spec: ClipSpec, frames: np.ndarray, options: OutputOptions, report: PrepareReport) -> None:
    clip = clip_path(options, spec.split, spec.name)
    try:
        write_clip(clip, frames, spec.fps, options)
    except (OSError, ValueError, RuntimeError) as exc:
        report.failed.append(Failure(str(clip), f"could not write: {first_line(exc)}"))
        return
    report.written.append(str(clip))
