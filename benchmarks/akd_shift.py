"""Does the offline AKD read a known motion? Real clips against copies of themselves shifted by whole pixels.

    python benchmarks/akd_shift.py                                 # all clips, 16 frames each, before and after
    python benchmarks/akd_shift.py --frames 4 --clips d0 d12 --shifts 1,1 2,0
    python benchmarks/akd_shift.py --output table.md               # also write the markdown table to a file

For every clip of ``--faces`` (default ``../shared/data/faces``), ``--frames`` evenly spaced frames are resized
to 256 x 256 as the AKD protocol does, then shifted by each ``dx,dy`` with edge padding (the image content
moves right by dx and down by dy). AKD is scored through the evaluation path (``detect_landmarks`` +
``keypoint_scores`` with the dlib backend) between the shifted and the original frames. AKD is the mean of
|difference| over the 68 x 2 coordinates, so a shift of (dx, dy) should read (|dx| + |dy|) / 2: 2 for (2, 2),
1 for (2, 0). Each row gives AKD before the fix (``refine_iterations=0``: landmarks of the HOG box only) and
after it (the default refinement), and the ratio of each to the expected value; a ratio within 0.9-1.1 passes.
The identical clip (shift 0,0) must read 0. Also printed: per clip, how many (frame, shift) pairs read within
+-10% on their own, and seconds per frame of landmark detection (wall clock and CPU time of this process).

``--calibrate`` instead measures, on the unrefined landmarks of the cropped clips, where dlib's HOG box lies
relative to the landmarks predicted in it: the constants ``BOX_SIDE_PER_RMS``, ``BOX_CENTRE_RAISE`` and
``FACE_ASPECT`` of reenact.face.landmarks.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from reenact.data.video import probe_video, read_frames
from reenact.face.landmarks import REFINE_ITERATIONS, build_landmark_detector
from reenact.metrics.akd import AKD_FRAME_SIZE, detect_landmarks, keypoint_scores
from reenact.metrics.frames import FrameSequence

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FACES = (REPO_ROOT / ".." / "shared" / "data" / "faces").resolve()
DEFAULT_SHIFTS = ("0,0", "1,1", "2,2", "4,4", "2,0", "0,2", "1,0", "-2,1", "-4,-4")
TOLERANCE = 0.10


def shift_frames(frames: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """(T, H, W, 3) frames with their content moved by whole pixels (right by dx, down by dy), edges replicated."""
    ax, ay = abs(dx), abs(dy)
    padded = np.pad(frames, ((0, 0), (ay, ay), (ax, ax), (0, 0)), mode="edge")
    height, width = frames.shape[1:3]
    return np.ascontiguousarray(padded[:, ay - dy:ay - dy + height, ax - dx:ax - dx + width])


def clip_frames(path: Path, count: int) -> np.ndarray:
    """``count`` evenly spaced frames of a clip at the AKD frame size, (count, 256, 256, 3) uint8."""
    total = probe_video(path).num_frames
    indices = np.linspace(0, total - 1, count).round().astype(int).tolist()
    sequence = FrameSequence(read_frames(path, indices), AKD_FRAME_SIZE)
    return np.stack([sequence.uint8_frame(t) for t in range(len(sequence))])


def timed_landmarks(frames: np.ndarray, detector: object) -> tuple[list[np.ndarray | None], float, float]:
    """Landmarks per frame, and wall-clock and CPU seconds per frame."""
    wall, cpu = time.perf_counter(), time.process_time()
    points = detect_landmarks(frames, detector, AKD_FRAME_SIZE)
    return points, (time.perf_counter() - wall) / len(frames), (time.process_time() - cpu) / len(frames)


def calibrate(faces: Path, clips: list[str], count: int) -> str:
    """Mean and spread of the HOG box relative to the landmarks predicted in it (first HOG face per frame)."""
    detector = build_landmark_detector("dlib", face_choice="first", refine_iterations=0)
    side_per_rms, raise_, aspect = [], [], []
    for clip in clips:
        for frame in clip_frames(faces / f"{clip}.mp4", count):
            boxes = detector._hog.detect(frame) or detector._hog_up.detect(frame)
            if not boxes:
                continue
            box = boxes[0]
            points = detector.detect_in_box(frame, box)
            mean = points.mean(axis=0)
            spread = ((points - mean) ** 2).mean(axis=0)  # per axis
            side_per_rms.append(box.width / np.sqrt(spread.sum()))
            raise_.append((mean[1] - box.center[1]) / box.height)
            aspect.append(np.sqrt(spread[0] / spread[1]))
    lines = [f"{len(aspect)} frames of {', '.join(clips)}", "", "| constant | mean | std |", "|---|---|---|"]
    for name, values in (("BOX_SIDE_PER_RMS", side_per_rms), ("BOX_CENTRE_RAISE", raise_), ("FACE_ASPECT", aspect)):
        lines.append(f"| {name} | {np.mean(values):.3f} | {np.std(values):.3f} |")
    return "\n".join(lines)


def parse_shift(text: str) -> tuple[int, int]:
    dx, dy = (int(v) for v in text.split(","))
    return dx, dy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="folder of the real clips")
    parser.add_argument("--clips", nargs="+", default=None, help="clip names without .mp4 (default: all)")
    parser.add_argument("--frames", type=int, default=16, help="evenly spaced frames per clip")
    parser.add_argument("--shifts", nargs="+", default=list(DEFAULT_SHIFTS), help="dx,dy pairs in pixels")
    parser.add_argument("--refine-iterations", type=int, default=REFINE_ITERATIONS,
                        help="the 'after' setting (the 'before' one is always 0)")
    parser.add_argument("--output", type=Path, default=None, help="also write the markdown tables here")
    parser.add_argument("--calibrate", action="store_true",
                        help="print the HOG-box constants measured on the cropped clips (all but d13) instead")
    args = parser.parse_args(argv)

    clips = args.clips or sorted((p.stem for p in args.faces.glob("*.mp4")), key=lambda n: int(n.lstrip("d")))
    if not clips:
        print(f"error: no clips found in {args.faces}", file=sys.stderr)
        return 2
    if args.calibrate:
        # d13 is a whole desk scene squeezed into 256 x 256: its faces are stretched, not what HOG was made for
        print(calibrate(args.faces, [c for c in clips if c != "d13"] if args.clips is None else clips, args.frames))
        return 0
    shifts = [parse_shift(s) for s in args.shifts]
    settings = {"before": 0, "after": args.refine_iterations}
    detectors = {name: build_landmark_detector("dlib", face_choice="first", refine_iterations=iterations)
                 for name, iterations in settings.items()}

    rows = ["| clip | shift (dx,dy) | expected | AKD before | before/expected | AKD after | after/expected "
            "| frames (both faces) |", "|---|---|---|---|---|---|---|---|"]
    speed = ["| clip | before: s/frame wall (CPU) | after: s/frame wall (CPU) |", "|---|---|---|"]
    failures = {name: 0 for name in settings}
    per_frame = ["| clip | (frame, shift) pairs scored after | before: within +-10% | after: within +-10% "
                 "| after: worst ratio |", "|---|---|---|---|---|"]
    for clip in clips:
        within = {name: 0 for name in settings}  # (frame, shift) pairs read within the tolerance
        pairs, worst = 0, 1.0
        frames = clip_frames(args.faces / f"{clip}.mp4", args.frames)
        reference, times = {}, {}
        for name, detector in detectors.items():
            points, wall, cpu = timed_landmarks(frames, detector)
            reference[name], times[name] = points, f"{wall:.3f} ({cpu:.3f})"
        speed.append(f"| {clip} | {times['before']} | {times['after']} |")
        for dx, dy in shifts:
            moved = shift_frames(frames, dx, dy)
            expected = (abs(dx) + abs(dy)) / 2
            cells, counted = [], []
            for name, detector in detectors.items():
                scores = keypoint_scores(detect_landmarks(moved, detector, AKD_FRAME_SIZE), reference[name])
                akd = scores.akd
                if expected > 0:
                    ratios = scores.akd_per_frame[~np.isnan(scores.akd_per_frame)] / expected
                    within[name] += int((np.abs(ratios - 1) <= TOLERANCE).sum())
                    if name == "after":
                        pairs += len(ratios)
                        worst = max([worst, *ratios], key=lambda r: abs(r - 1))
                counted.append(str(scores.counts["frames_with_both_faces"]))
                if akd is None:
                    cells += ["-", "-"]
                    failures[name] += 1
                    continue
                if expected == 0:
                    ratio, ok = "-", akd == 0.0
                else:
                    ratio, ok = f"{akd / expected:.3f}", abs(akd / expected - 1) <= TOLERANCE
                failures[name] += not ok
                cells += [f"{akd:.3f}", ratio if ok else f"**{ratio}**"]
            rows.append(f"| {clip} | {dx},{dy} | {expected:g} | {' | '.join(cells)} | {' / '.join(counted)} |")
            print(rows[-1], file=sys.stderr, flush=True)
        per_frame.append(f"| {clip} | {pairs} | {within['before']} | {within['after']} | {worst:.2f} |")

    summary = (f"rows outside +-{TOLERANCE:.0%} of the expected AKD (or not 0 for the identical clip): "
               f"before {failures['before']}, after {failures['after']} of {len(clips) * len(shifts)}")
    text = "\n".join([
        f"{len(clips)} clips x {args.frames} frames at {AKD_FRAME_SIZE} px, dlib landmarks, face_choice=first; "
        f"after = refine_iterations={args.refine_iterations}",
        f"python {platform.python_version()} on {platform.machine()}",
        "", *rows, "", summary, "",
        "Per frame (shifted frames against their own originals, shift 0,0 left out; 'worst' is the ratio farthest "
        "from 1):", "", *per_frame, "",
        "Landmark detection time per frame (256 x 256, unshifted frames):", "", *speed,
    ])
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
