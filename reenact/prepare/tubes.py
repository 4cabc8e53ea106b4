"""Face tubes for arbitrary videos (``folder`` mode), following crop_vox's rules.

Faces are detected on every ``detect_every``-th frame (plus the last frame), on a copy of the frame
scaled to ``detect_height`` pixels high. A detection continues a tube when its IoU with the tube's
*first* box is at least ``iou_threshold`` (0.25); frames between two matched detections belong to the
tube (the boxes in between are the linear interpolation, which lies inside the union). A tube ends at
the first detection frame without a match, or before it would exceed ``max_frames`` (1024), in which
case a new tube starts there. A tube is kept when it has at least ``min_frames`` (64) frames and the
longer side of the union of its boxes is at least ``min_size`` pixels (256, as crop_vox); its crop is
the union enlarged by ``increase`` (0.1), made square and shifted to stay inside the frame. When that square
is larger than the frame, the face with its margin fills the frame (the video is already a face crop): the
crop is then the largest square of the frame that holds the union, and the tube is marked as taken as it is.
Every refused tube comes with its reason and the option that would keep it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from reenact.data.video import iter_frames
from reenact.face.crop import IntBox, face_crop_box, largest_square_holding
from reenact.face.detection import FaceBox, FaceDetector, build_face_detector


@dataclass(frozen=True)
class TubeRules:
    iou_threshold: float = 0.25
    max_frames: int = 1024
    min_frames: int = 64
    min_size: float = 256.0
    increase: float = 0.1


@dataclass
class FaceTube:
    start: int  # first frame
    last: int  # last frame with a matched detection; the tube covers [start, last + 1)
    first: FaceBox
    union: FaceBox

    @property
    def end(self) -> int:
        return self.last + 1

    @property
    def num_frames(self) -> int:
        return self.end - self.start


def _new_tube(frame: int, box: FaceBox) -> FaceTube:
    return FaceTube(start=frame, last=frame, first=box, union=box)


def track_tubes(detections: Iterable[tuple[int, list[FaceBox]]], rules: TubeRules) -> list[FaceTube]:
    """Link per-frame detections (frame numbers ascending) into tubes; returns all tubes, unfiltered."""
    active: list[FaceTube] = []
    closed: list[FaceTube] = []
    for frame, boxes in detections:
        pairs = sorted(
            ((tube.first.iou(box), t, d) for t, tube in enumerate(active) for d, box in enumerate(boxes)),
            reverse=True,
        )
        tube_of: dict[int, int] = {}
        used: set[int] = set()
        for iou, t, d in pairs:
            if iou < rules.iou_threshold:
                break
            if t not in tube_of and d not in used:
                tube_of[t] = d
                used.add(d)
        still_active: list[FaceTube] = []
        for t, tube in enumerate(active):
            if t not in tube_of:
                closed.append(tube)
                continue
            box = boxes[tube_of[t]]
            if frame + 1 - tube.start > rules.max_frames:  # would get too long: cut here, restart
                closed.append(tube)
                still_active.append(_new_tube(frame, box))
                continue
            tube.last = frame
            tube.union = tube.union.union(box)
            still_active.append(tube)
        still_active += [_new_tube(frame, box) for d, box in enumerate(boxes) if d not in used]
        active = still_active
    return sorted(closed + active, key=lambda tube: (tube.start, tube.first.x0))


class TubeCrop(NamedTuple):
    """A kept tube, its square crop in frame pixels, and whether the frame was taken as it is."""

    tube: FaceTube
    box: IntBox
    as_is: bool  # the face with its margin fills the frame: the crop is the frame's largest square


# Named in the refusals an already-cropped folder meets: crops of 256x256 or less (VoxCeleb as distributed) have
# faces below crop_vox's 256 px, and --cropped is what such a folder needs.
CROPPED_HINT = "if the videos are already face crops, --cropped takes every frame as it is"


def select_tubes(
    tubes: list[FaceTube], frame_width: int, frame_height: int, rules: TubeRules
) -> tuple[list[TubeCrop], list[str]]:
    """Keep tubes that satisfy the length/size/frame rules; returns their crops and, per refused tube, the
    reason with the option that would keep it."""
    kept: list[TubeCrop] = []
    reasons: list[str] = []
    for tube in tubes:
        where = f"face at frames {tube.start}-{tube.end}"
        size = max(tube.union.width, tube.union.height)
        if tube.num_frames < rules.min_frames:
            reasons.append(f"{where}: {tube.num_frames} frames < min_frames {rules.min_frames} "
                           f"(--min-frames {tube.num_frames} keeps it)")
            continue
        if size < rules.min_size:
            reasons.append(f"{where}: face size {size:.0f} px < min_size {rules.min_size:.0f} "
                           f"(--min-size {int(size)} keeps it; {CROPPED_HINT})")
            continue
        crop = face_crop_box(tube.union, frame_width, frame_height, rules.increase, policy="shift")
        if crop is not None:
            kept.append(TubeCrop(tube, crop, as_is=False))
            continue
        held = largest_square_holding(tube.union, frame_width, frame_height)
        if held is None:
            reasons.append(f"{where}: the face ({tube.union.width:.0f}x{tube.union.height:.0f} px) does not fit "
                           f"in any square of the {frame_width}x{frame_height} frame ({CROPPED_HINT})")
            continue
        kept.append(TubeCrop(tube, held, as_is=True))
    return kept, reasons


def detection_min_face(min_size: float, frame_height: int, detect_height: int | None) -> int:
    """Smallest face worth detecting, in pixels of the (downscaled) detection frame.

    A kept tube's box union reaches ``min_size``; single boxes are smaller, so half of it (scaled to
    the detection frame) is safe. Rounded to 10 px to share cached detectors; 20 to 80 px.
    """
    scale = min(1.0, detect_height / frame_height) if detect_height else 1.0
    return int(min(80, max(20, 10 * int(0.05 * min_size * scale))))


@functools.lru_cache(maxsize=8)
def cached_face_detector(
    name: str, device: str, detect_height: int | None, min_score: float | None, min_face_size: int = 20
) -> FaceDetector:
    return build_face_detector(
        name, device, detect_height=detect_height, min_score=min_score, min_face_size=min_face_size
    )


def detect_video_faces(
    video: Path, detector: FaceDetector, detect_every: int = 1, batch_size: int = 8
) -> tuple[list[tuple[int, list[FaceBox]]], int, float]:
    """Run ``detector`` on every ``detect_every``-th frame and the last one, streaming the video once.

    Returns (frame, boxes) pairs, the number of frames decoded, and the seconds spent detecting.
    """
    if detect_every < 1:
        raise ValueError(f"detect_every must be >= 1, got {detect_every}")
    results: list[tuple[int, list[FaceBox]]] = []
    pending: list[tuple[int, np.ndarray]] = []
    seconds = 0.0

    def flush() -> None:
        nonlocal seconds
        if pending:
            started = time.perf_counter()
            found = detector.detect_batch([frame for _, frame in pending])
            seconds += time.perf_counter() - started
            results.extend(zip([n for n, _ in pending], found, strict=True))
            pending.clear()

    number = -1
    previous: np.ndarray | None = None
    for number, frame in enumerate(iter_frames(video)):
        if number % detect_every == 0:
            pending.append((number, frame))
            if len(pending) >= batch_size:
                flush()
        previous = frame
    if previous is not None and number % detect_every != 0:
        pending.append((number, previous))  # the last frame, so tubes can reach the end of the video
    flush()
    return results, number + 1, seconds
