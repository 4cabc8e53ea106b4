"""Animation memory against driving-video length: peak memory of ``python -m reenact.animate``'s job for a short and
a long driving video (the shared real clips looped), each in a fresh process.

    python benchmarks/animation_memory.py --ckpt logs/train/runs/<run> --seconds 30 600
    python benchmarks/animation_memory.py --ckpt last.ckpt --seconds 30 600 --size 256 --side-by-side --smooth

The driving videos are the clips of ``../shared/data/faces`` (the cropped ones) played one after another, resized to
``--size`` and repeated until the length is reached, at 25 fps; they are written once to ``--work`` and reused. Each
length runs :func:`reenact.animation.video_job.animate_files` (face crop of the portrait and of the video, motion of
every frame, rendering, the mp4 written as frames come) in a child process, which reports its peak resident memory
(``ru_maxrss``) and, separately, the peak after the model was loaded, so the table shows what animating adds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "faces"
CLIPS = ("d0", "d3", "d6", "d10", "d11", "d12", "d14")  # the cropped square clips
FPS = 25.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kilobytes on Linux


def looped_frames(faces: Path, size: int) -> Iterator[np.ndarray]:
    from reenact.data.video import iter_frames

    for clip in itertools.cycle(CLIPS):
        for frame in iter_frames(faces / f"{clip}.mp4"):
            yield cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


def driving_video(work: Path, seconds: float, size: int, faces: Path) -> Path:
    """The looped clips, ``seconds`` long at 25 fps, written once."""
    from reenact.data.video_writer import write_video

    path = work / f"driving_{seconds:g}s_{size}.mp4"
    if not path.exists():
        frames = itertools.islice(looped_frames(faces, size), round(seconds * FPS))
        write_video(path, frames, FPS, crf=23)
    return path


def child(args: argparse.Namespace) -> None:
    """One animation job; prints a JSON line with its peak memory."""
    from reenact.animation.cropping import CropSettings
    from reenact.animation.video_job import AnimationOptions, animate_files
    from reenact.api import load_pretrained

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.no_trim:  # the passes as they were before reenact.utils.heap: freed heap memory stays with the process
        from reenact.utils import heap

        heap._malloc_trim = lambda: None
    model = load_pretrained(args.ckpt, device="cpu")
    loaded = peak_mb()
    start = time.perf_counter()
    options = AnimationOptions(progress=False, side_by_side=args.side_by_side, smooth=args.smooth or None,
                               batch_size=args.batch_size, crop=CropSettings(detect_every=args.detect_every))
    result = animate_files(model, args.source, args.driving, args.output, options)[0]
    print(json.dumps({"frames": result.num_frames, "seconds": time.perf_counter() - start, "peak_loaded_mb": loaded,
                      "peak_mb": peak_mb()}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--seconds", nargs="+", type=float, default=[30, 600])
    parser.add_argument("--size", type=int, default=256, help="driving video side (the clips are resized)")
    parser.add_argument("--source", default=str(FACES / "s0.jpg"))
    parser.add_argument("--faces", default=str(FACES))
    parser.add_argument("--work", default="/tmp/reenact_animation_memory")
    parser.add_argument("--side-by-side", action="store_true")
    parser.add_argument("--smooth", type=float, default=0.0, help="steady-motion strength (0: off)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--detect-every", type=int, default=50, help="driving face detection on every N-th frame")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 on a busy machine: idle threads spin and slow it down)")
    parser.add_argument("--no-trim", action="store_true",
                        help="without handing freed heap memory back during the passes (the comparison row)")
    parser.add_argument("--driving", help=argparse.SUPPRESS)  # child process only
    parser.add_argument("--output", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.driving:
        child(args)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"checkpoint {args.ckpt}, source {Path(args.source).name}, driving {args.size}x{args.size} at {FPS:g} fps, "
          f"side-by-side {'on' if args.side_by_side else 'off'}, smoothing {args.smooth or 'off'}, "
          f"face detection on every {args.detect_every}th driving frame, freed heap memory "
          f"{'kept (--no-trim)' if args.no_trim else 'handed back every 256 frames'}")
    print("| driving | frames | animation s | peak after loading MB | peak MB | peak - loaded MB |")
    print("|---|---|---|---|---|---|")
    for seconds in args.seconds:
        driving = driving_video(work, seconds, args.size, Path(args.faces))
        command = [sys.executable, __file__, "--ckpt", args.ckpt, "--source", args.source, "--driving", str(driving),
                   "--output", str(work / f"out_{seconds:g}s{'_no_trim' if args.no_trim else ''}.mp4"),
                   "--smooth", str(args.smooth),
                   "--batch-size", str(args.batch_size),
                   "--detect-every", str(args.detect_every)]
        command += (["--threads", str(args.threads)] if args.threads else []) + (
            ["--side-by-side"] if args.side_by_side else []) + (["--no-trim"] if args.no_trim else [])
        env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's reenact
        out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO, env=env).stdout
        row = json.loads(out.strip().splitlines()[-1])
        minutes = f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
        print(f"| {minutes} | {row['frames']} | {row['seconds']:.0f} | {row['peak_loaded_mb']:.0f} | "
              f"{row['peak_mb']:.0f} | {row['peak_mb'] - row['peak_loaded_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
