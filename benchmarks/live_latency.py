"""Live driving latency: per-frame latency (p50, p95) and frames/s of ``model.stream(source)`` for every family, at its
CPU preset and at 256x256, on PyTorch and on onnxruntime, in one table.

    python benchmarks/live_latency.py                                   # every family, both sizes, both backends
    python benchmarks/live_latency.py --presets fomm liveportrait_small --frames 20 --backends pytorch

A frame costs what ``python -m reenact.live`` pays per camera frame once the source is prepared: the (H, W, 3) uint8
frame to a tensor, the driving motion, the steady-motion filter (``--smooth``, on by default), the motion transfer
(relative to the first frame) and the rendering from the source's kept encoding, back to uint8. Reading the camera and
cropping are not included. Networks have random weights (speed does not depend on them). One warm-up frame, then
``--frames`` frames are timed one by one (batch 1: a live frame cannot wait for the next).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reenact.api import PretrainedModel

sys.path.insert(0, str(Path(__file__).resolve().parent))

# every family at its CPU preset (64x64) and at its 256x256 preset
PRESETS = {"fomm": 64, "liveportrait_small": 64, "implicit_warping_small": 64, "correlation_small": 64,
           "fomm_vox256": 256, "liveportrait": 256, "implicit_warping": 256, "correlation": 256}


def build(preset: str, backend: str, threads: int) -> tuple[Any, Any]:
    """A PretrainedModel of the preset on the backend (random weights), and what must outlive it (an export folder)."""
    from animate_fps import build_network, preset_config  # this folder's animation benchmark

    size = PRESETS[preset]
    network = build_network(preset, torch.device("cpu"))
    keep = None
    if backend == "onnxruntime":
        from omegaconf import OmegaConf

        from reenact.export.exporter import export_model
        from reenact.export.onnx_backend import ExportedNetwork

        keep = tempfile.TemporaryDirectory(prefix="reenact_live_onnx_")
        config = OmegaConf.to_container(preset_config(preset), resolve=True)
        export_model(network, size, Path(keep.name), config, verify=False)
        network = ExportedNetwork(keep.name, threads)
    return PretrainedModel(network, size, torch.device("cpu"), {}), keep


def latencies(model: Any, frames: int, smooth: bool) -> np.ndarray:
    """Seconds per frame of a stream over ``frames`` random uint8 frames (after one warm-up frame)."""
    rng = np.random.default_rng(0)
    size = model.frame_size
    source = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    driving = rng.integers(0, 256, (frames + 1, size, size, 3), dtype=np.uint8)
    animate = model.stream(source, smooth=smooth, fps=30)
    animate(driving[0])  # warm-up (allocator, lazy inits; the first frame is the reference)
    times = []
    for frame in driving[1:]:
        start = time.perf_counter()
        animate(frame)
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--backends", nargs="+", default=["pytorch", "onnxruntime"], choices=["pytorch", "onnxruntime"])
    parser.add_argument("--frames", type=int, default=10, help="frames timed per row")
    parser.add_argument("--frames-256", type=int, default=None, help="frames timed at 256x256 (default: --frames)")
    parser.add_argument("--no-smooth", dest="smooth", action="store_false", help="without the steady-motion filter")
    parser.add_argument("--threads", type=int, default=None, help="torch / onnxruntime CPU threads")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from reenact.export.manifest import ExportError

    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, {cpu}, smoothing "
          f"{'on' if args.smooth else 'off'}")
    print("| preset | size | backend | frames | p50 ms | p95 ms | frames/s |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets:
        size = PRESETS[preset]
        count = args.frames if size <= 64 or args.frames_256 is None else args.frames_256
        for backend in args.backends:
            try:
                model, keep = build(preset, backend, torch.get_num_threads())
            except ExportError as exc:
                print(f"| {preset} | {size} | {backend} | - | not exportable: {exc} | - | - |", flush=True)
                continue
            seconds = latencies(model, count, args.smooth)
            p50, p95 = np.percentile(seconds, 50) * 1000, np.percentile(seconds, 95) * 1000
            print(f"| {preset} | {size} | {backend} | {count} | {p50:.1f} | {p95:.1f} | {1 / seconds.mean():.3g} |",
                  flush=True)
            del model, keep


if __name__ == "__main__":
    main()
