"""Steady motion (``smooth=``): frame-to-frame jitter of the animated face and how closely it still follows the driving
face, with and without the filter, on the real clips of ``../shared/data/faces``.

    python benchmarks/steady_motion.py --ckpt run/checkpoints/last.ckpt --clips d0 d11 d12 --smooth 0 1 2 4

Self-reenactment, so that the output should be the driving video itself: each clip's first frame is the source and
the clip drives it (relative motion, the clips are face crops already; they are resized to the model's resolution).
Per clip and strength:

* ``jitter``: the mean absolute second difference over time of the output's 68 landmarks (dlib, on frames resized
  to 256x256, pixels), over frame triples where all three faces are found; the driving video's own is the first row;
* ``AKD``: the mean absolute distance between the output's and the driving frame's landmarks (pixels of 256x256),
  over frames where both are found; ``found``: the share of output frames with a face;
* ``kp jitter``: the same second difference on the model's own keypoints of the motion it renders with (pixels of
  256x256): the filter's effect on the motion, whatever the renderer makes of it.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "faces"
SIZE = 256


def second_difference(points: np.ndarray) -> float:
    """Mean |x[t+1] - 2 x[t] + x[t-1]| over time of (T, K, 2) points with NaN where missing."""
    d2 = points[2:] - 2 * points[1:-1] + points[:-2]
    valid = np.isfinite(d2).all(axis=(1, 2))
    return float(np.abs(d2[valid]).mean()) if valid.any() else float("nan")


def landmarks(detector: object, frames: np.ndarray) -> np.ndarray:
    """(T, 68, 2) dlib landmarks of (T, h, w, 3) uint8 frames resized to 256x256; NaN where no face is found."""
    from reenact.face import stack_landmarks

    return stack_landmarks([detector.detect(cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC))
                            for f in frames])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="+", required=True)
    parser.add_argument("--clips", nargs="+", default=["d0", "d11", "d12"])
    parser.add_argument("--frames", type=int, default=150, help="the first N frames of each clip")
    parser.add_argument("--smooth", nargs="+", type=float, default=[0, 1, 2, 4], help="strengths (0: off)")
    parser.add_argument("--faces", default=str(FACES))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    from reenact.animation.pipeline import Animator, encode_driving
    from reenact.animation.smoothing import smooth_motion
    from reenact.api import load_pretrained
    from reenact.data.video import iter_frames, probe_video
    from reenact.face import build_landmark_detector
    from reenact.families.motion import select_motion
    from reenact.utils.visualize import to_uint8

    detector = build_landmark_detector("dlib")
    print("| checkpoint | clip | frames | smooth | jitter px | AKD px | found | kp jitter px |")
    print("|---|---|---|---|---|---|---|---|")
    for ckpt in args.ckpt:
        model = load_pretrained(ckpt, device="cpu")
        name = Path(ckpt).parents[1].name if Path(ckpt).is_file() else Path(ckpt).name
        size = model.frame_size
        for clip in args.clips:
            path = Path(args.faces) / f"{clip}.mp4"
            fps = probe_video(path).fps
            raw = np.stack(list(itertools.islice(iter_frames(path), args.frames)))
            frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in raw])
            tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, S, S)
            truth = landmarks(detector, frames)
            print(f"| {name} | {clip} | {len(frames)} | driving video | {second_difference(truth):.3f} | - | "
                  f"{np.isfinite(truth).all(axis=(1, 2)).mean():.2f} | - |", flush=True)
            animator = Animator(model.network, tensor[0])
            motion = encode_driving(model.network, tensor.split(16))
            for strength in args.smooth:
                out = model.animate(tensor[0], tensor, smooth=strength or False, fps=fps)
                found = landmarks(detector, np.stack([to_uint8(f) for f in out]))
                both = np.isfinite(found).all(axis=(1, 2)) & np.isfinite(truth).all(axis=(1, 2))
                akd = float(np.abs(found[both] - truth[both]).mean()) if both.any() else float("nan")
                steady = smooth_motion(model.network, motion, strength or False, fps)
                moved = animator.render(steady, select_motion(steady, 0))["motion"]
                points = model.network.keypoints_2d(moved)
                kp = "-" if points is None else f"{second_difference((points.numpy() + 1) / 2 * SIZE):.3f}"
                print(f"| {name} | {clip} | {len(frames)} | {strength or 'off'} | {second_difference(found):.3f} | "
                      f"{akd:.2f} | {np.isfinite(found).all(axis=(1, 2)).mean():.2f} | {kp} |", flush=True)


if __name__ == "__main__":
    main()
