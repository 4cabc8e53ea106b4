"""The offline (dlib) AKD reads a known motion: real clips against copies shifted by whole pixels.

AKD is the mean of |difference| over the 68 x 2 landmark coordinates, so a shift of (dx, dy) pixels should
read (|dx| + |dy|) / 2. Before the box refinement in reenact.face.landmarks, dlib's landmarks partly followed
the HOG box, which moves in coarse steps, and e.g. a 2 px horizontal shift read 1.2-1.6 instead of 1.
The quick test uses 2 frames per clip, the slow one 8; benchmarks/akd_shift.py runs 16 and prints the table of
experiments/2026-11-30_akd_shift.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reenact.face.landmarks import _box_from_totals
from reenact.metrics.akd import AKD_FRAME_SIZE, detect_landmarks, keypoint_scores
from reenact.metrics.frames import FrameSequence

CLIPS = ("d0", "d3", "d6", "d9", "d10", "d11", "d12", "d13", "d14")
# diagonal shifts of 1, 2 and 4 px, and shifts that are not diagonal
SHIFTS = ((1, 1), (2, 2), (4, 4), (2, 0), (0, 2))
TOLERANCE = 0.10


def shift_frames(frames: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """(T, H, W, 3) frames with their content moved right by dx and down by dy pixels, edges replicated."""
    ax, ay = abs(dx), abs(dy)
    padded = np.pad(frames, ((0, 0), (ay, ay), (ax, ax), (0, 0)), mode="edge")
    height, width = frames.shape[1:3]
    return np.ascontiguousarray(padded[:, ay - dy:ay - dy + height, ax - dx:ax - dx + width])


def clip_frames(faces_dir: Path, clip: str, indices: list[int] | int) -> np.ndarray:
    """Frames ``indices`` of a clip (or that many evenly spaced inside it, ends excluded) at the AKD frame size."""
    from reenact.data.video import probe_video, read_frames

    path = faces_dir / f"{clip}.mp4"
    if isinstance(indices, int):
        total = probe_video(path).num_frames
        indices = np.linspace(0, total - 1, indices + 2)[1:-1].round().astype(int).tolist()
    sequence = FrameSequence(read_frames(path, indices), AKD_FRAME_SIZE)
    return np.stack([sequence.uint8_frame(t) for t in range(len(sequence))])


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("dlib")
    from reenact.face.landmarks import build_landmark_detector

    return build_landmark_detector("dlib", "cpu", face_choice="first")


def misread_shifts(faces_dir: Path, detector, which: list[int] | int) -> list[str]:
    """Every (clip, shift) whose AKD is off by more than TOLERANCE, or that is not 0 against itself."""
    wrong = []
    for clip in CLIPS:
        frames = clip_frames(faces_dir, clip, which)
        reference = detect_landmarks(frames, detector, AKD_FRAME_SIZE)
        assert any(p is not None for p in reference), f"{clip}: no face found"
        itself = keypoint_scores(detect_landmarks(frames, detector, AKD_FRAME_SIZE), reference).akd
        if itself != 0.0:
            wrong.append(f"{clip} identical: AKD {itself}")
        for dx, dy in SHIFTS:
            expected = (abs(dx) + abs(dy)) / 2
            akd = keypoint_scores(detect_landmarks(shift_frames(frames, dx, dy), detector, AKD_FRAME_SIZE),
                                  reference).akd
            if akd is None or abs(akd / expected - 1) > TOLERANCE:
                wrong.append(f"{clip} shift ({dx},{dy}): AKD {akd} instead of {expected}")
    return wrong


def test_shift_frames_moves_content() -> None:
    frames = np.arange(2 * 5 * 6 * 3, dtype=np.uint8).reshape(2, 5, 6, 3)
    moved = shift_frames(frames, 2, -1)
    assert np.array_equal(moved[:, :4, 2:], frames[:, 1:, :4])  # content moved right 2, up 1
    assert np.array_equal(moved[:, :, 0], moved[:, :, 2]) and np.array_equal(moved[:, 4], moved[:, 3])  # edges


@pytest.mark.parametrize("count", [1, 5])
def test_box_from_landmarks_moves_exactly_with_them(count: int) -> None:
    """The refinement's box is a function of the landmarks alone that commutes with whole-pixel shifts."""
    rng = np.random.default_rng(count)
    for _ in range(200):
        points = rng.normal(128, 25, (68, 2)) * [rng.uniform(0.6, 1.6), 1.0]  # faces stretched across, too
        totals = np.rint(points * count).astype(np.int64)
        left, top, width, height = _box_from_totals(totals, count)
        dx, dy = (int(v) for v in rng.integers(-7, 8, 2))
        assert _box_from_totals(totals + count * np.array([dx, dy]), count) == (left + dx, top + dy, width, height)
        assert 0.4 <= width / height <= 2.5


@pytest.mark.real_data
def test_dlib_akd_reads_known_shifts_quick(faces_dir: Path, detector) -> None:
    # two frames near the start of every clip (the shortest has 78), cheap to decode
    assert misread_shifts(faces_dir, detector, [10, 50]) == []


@pytest.mark.real_data
@pytest.mark.slow
def test_dlib_akd_reads_known_shifts_full(faces_dir: Path, detector) -> None:
    assert misread_shifts(faces_dir, detector, 8) == []


@pytest.mark.real_data
def test_refined_landmarks_move_exactly_with_the_face(faces_dir: Path, detector) -> None:
    """Per frame, not only on average: a whole-pixel shift moves every refined landmark by exactly that much."""
    frame = clip_frames(faces_dir, "d0", [40])
    base = detector.detect(frame[0])
    for dx, dy in ((1, 0), (0, 3), (-2, 1)):
        moved = detector.detect(shift_frames(frame, dx, dy)[0])
        np.testing.assert_allclose(moved - base, np.broadcast_to([dx, dy], base.shape), atol=1e-9)
