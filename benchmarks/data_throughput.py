"""Training-pair throughput of `PairDataset` at 256x256: mp4 clips (several GOP lengths) vs PNG frame folders.

    .venv/bin/python benchmarks/data_throughput.py                 # default sweep, prints a markdown table
    .venv/bin/python benchmarks/data_throughput.py --pairs 1000 --keyframe-intervals 8 --workers 1

Clips are rendered once by the synthetic generator (cached under --cache), re-encoded with `write_video` at each
keyframe interval and written as frame folders with `write_frame_folder`; the real clips in ../shared/data/faces
(shrunk to 256x256, GOP 8) add a row when present. Rows report source/driving pairs per
second: in the main process (num_workers=0) without and with augmentation, then through a DataLoader with N
workers (after its first batch, so worker start-up is excluded), as a total and per worker.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from reenact.data import video
from reenact.data.augmentation import Augmentation
from reenact.data.datasets import PairDataset
from reenact.data.synthetic import ensure_synthetic_dataset
from reenact.data.video import iter_frames, probe_video
from reenact.data.video_writer import write_frame_folder, write_video


def build_variants(cache: Path, frames: int, clips: int, intervals: list[int]) -> dict[str, Path]:
    source = ensure_synthetic_dataset(cache, resolution=256, num_train_identities=clips, num_test_identities=0,
                                      clips_per_identity=1, num_frames=frames) / "train"
    variants: dict[str, Path] = {}
    for interval in intervals:
        folder = cache / f"gop{interval}-f{frames}-n{clips}"
        if not folder.is_dir():
            staging = Path(tempfile.mkdtemp(dir=cache))
            for clip in sorted(source.glob("*.mp4")):
                write_video(staging / clip.name, iter_frames(clip), probe_video(clip).fps, keyframe_interval=interval)
            staging.rename(folder)
        variants[f"mp4, GOP {interval}"] = folder
    folder = cache / f"png-f{frames}-n{clips}"
    if not folder.is_dir():
        staging = Path(tempfile.mkdtemp(dir=cache))
        for clip in sorted(source.glob("*.mp4")):
            write_frame_folder(staging / clip.name, iter_frames(clip))
        staging.rename(folder)
    variants["png frame folders"] = folder
    return variants


def build_real_variant(cache: Path, faces: Path, frames: int, clips: int) -> dict[str, Path]:
    """The real talking-head clips, shrunk to 256x256 and re-encoded by write_video (GOP 8): real texture and noise
    cost more to decode than the smooth synthetic faces."""
    folder = cache / f"real-f{frames}-n{clips}"
    sources = sorted(p for p in faces.glob("d*.mp4") if probe_video(p).width == probe_video(p).height)[:clips]
    if not sources:
        return {}
    if not folder.is_dir():
        staging = Path(tempfile.mkdtemp(dir=cache))
        for index, clip in enumerate(sources):
            shrunk = (np.asarray(Image.fromarray(f).resize((256, 256), Image.BILINEAR)) for f in iter_frames(clip))
            target = staging / f"real{index}#{clip.stem}.mp4"
            write_video(target, itertools.islice(shrunk, frames), probe_video(clip).fps)
        staging.rename(folder)
    return {"real faces mp4, GOP 8": folder}


def in_process_rate(dataset: PairDataset, pairs: int) -> tuple[float, float]:
    """(pairs per wall second, pairs per CPU second of this process); the second ignores other load."""
    dataset[0]  # builds this process's frame-index cache entry of one clip, like a warm worker
    start, cpu = time.perf_counter(), time.process_time()
    for index in range(pairs):
        dataset[index % len(dataset)]
    return pairs / (time.perf_counter() - start), pairs / (time.process_time() - cpu)


def loader_rate(dataset: PairDataset, pairs: int, workers: int, batch_size: int = 8) -> tuple[float, float]:
    """(pairs per wall second after the first batch, pairs per CPU second of one worker).

    The second comes from the workers' own CPU time (they are joined at the end of the epoch, so
    RUSAGE_CHILDREN holds it): what one worker sustains when it has a core to itself, whatever else runs.
    """
    loader = DataLoader(Subset(dataset, range(pairs + batch_size)), batch_size=batch_size, shuffle=True,
                        num_workers=workers, drop_last=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    iterator = iter(loader)
    next(iterator)
    start, seen = time.perf_counter(), 0
    for batch in iterator:  # runs to the end, so that the workers exit and are reaped
        seen += batch["source"].shape[0]
    wall = time.perf_counter() - start
    del iterator
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) / workers
    return seen / wall, (seen + batch_size) / workers / max(worker_cpu, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "reenact-bench-data")
    parser.add_argument("--frames", type=int, default=128, help="frames per clip")
    parser.add_argument("--clips", type=int, default=4, help="clips (one per identity)")
    parser.add_argument("--pairs", type=int, default=400, help="pairs per measurement")
    parser.add_argument("--keyframe-intervals", type=int, nargs="+", default=[4, 8, 16, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--faces", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
                        / "faces", help="real square clips to add as a row (skipped when absent)")
    parser.add_argument("--thread-types", nargs="+", default=["NONE", "SLICE", "FRAME", "AUTO"],
                        help="decoder threading for random access, compared on GOP 8 in-process")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    args.cache.mkdir(parents=True, exist_ok=True)
    variants = build_variants(args.cache, args.frames, args.clips, args.keyframe_intervals)
    if args.faces.is_dir():
        variants.update(build_real_variant(args.cache, args.faces, args.frames, args.clips))
    augmentation = Augmentation()

    columns = (["data", "workers=0 (per CPU-s)", "workers=0 +aug (per CPU-s)"]
               + [f"{w} worker(s) +aug: total / per worker (per worker CPU-s)" for w in args.workers]
               + ["load avg"])
    print(f"\n256x256 pairs/s (wall clock; CPU-time rate in brackets), {args.clips} clips x {args.frames} frames, "
          f"{args.pairs} pairs per cell, decoder threads {video.RANDOM_ACCESS_THREAD_TYPE}, "
          f"{torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPUs\n")
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for name, folder in variants.items():
        plain = PairDataset(folder, 256, id_sampling=False, num_repeats=1000)
        augmented = PairDataset(folder, 256, id_sampling=False, num_repeats=1000, augmentation=augmentation)
        cells = ["{:.0f} ({:.0f})".format(*in_process_rate(plain, args.pairs)),
                 "{:.0f} ({:.0f})".format(*in_process_rate(augmented, args.pairs))]
        for workers in args.workers:
            total, per_cpu = loader_rate(augmented, args.pairs, workers)
            cells.append(f"{total:.0f} / {total / workers:.0f} ({per_cpu:.0f})")
        cells.append(f"{os.getloadavg()[0]:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)

    gop8 = next((f for n, f in variants.items() if n == "mp4, GOP 8"), None)
    if gop8 is not None and args.thread_types:
        print("\n| decoder thread_type (GOP 8, workers=0, no aug) | pairs/s |\n|---|---|")
        default = video.RANDOM_ACCESS_THREAD_TYPE
        for thread_type in args.thread_types:
            video.RANDOM_ACCESS_THREAD_TYPE = thread_type
            rate = in_process_rate(PairDataset(gop8, 256, id_sampling=False, num_repeats=1000), args.pairs)
            print("| {} | {:.0f} ({:.0f}) |".format(thread_type, *rate), flush=True)
        video.RANDOM_ACCESS_THREAD_TYPE = default


if __name__ == "__main__":
    main()
