"""Animation throughput: driven frames per second for each model preset, batch size and device.

    python benchmarks/animate_fps.py                                  # all presets, batch 1 and 16, CPU (+ GPU)
    python benchmarks/animate_fps.py --presets fomm liveportrait_small --batch 1 16 --device cpu
    python benchmarks/animate_fps.py --presets liveportrait --device cuda --precision fp32 bf16
    python benchmarks/animate_fps.py --backend pytorch onnxruntime --device cpu   # ONNX export beside PyTorch

A frame costs what ``python -m reenact.animate`` pays per driving frame once the source is prepared: the
driving frame's keypoints (FOMM's detector / LivePortrait's M), the motion transfer (relative) and the
generator (FOMM: dense motion + generator; LivePortrait: F + W + G; F is recomputed per frame, as
``generate`` does). Networks have random weights (speed does not depend on them) at each preset's
resolution: 64 for the CPU presets, 256 for the released sizes. Decoding, face detection and encoding are
not included. A warm-up (one batch on GPU, one frame on CPU), then ``--frames`` frames (at least one
batch) are timed. Prints a markdown table.

``--backend onnxruntime`` exports each preset's random-weight network with :mod:`reenact.export` (opset 20,
into a temporary folder) and times the same loop on onnxruntime's CPU provider; its source encoder runs once per
source (the exported renderer takes the source's encoding), so only the motion encoder and the renderer are
paid per frame. A family that cannot be exported gets a row saying why.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from reenact.animation.pipeline import Animator, encode_frames, resolve_device
from reenact.families.base import select_motion
from reenact.utils.hydra_utils import compose_config

PRESET_SIZES = {"fomm": 64, "liveportrait_small": 64, "fomm_vox256": 256, "liveportrait": 256,
                "implicit_warping_small": 64, "implicit_warping": 256}


def preset_config(preset: str) -> Any:
    return compose_config("train", [f"model={preset}", "paths.root_dir=/tmp", "paths.output_dir=/tmp/bench"]).model


def build_network(preset: str, device: torch.device) -> torch.nn.Module:
    return instantiate(preset_config(preset).network).eval().to(device)


def onnx_network(preset: str, network: torch.nn.Module, folder: Path, threads: int | None) -> torch.nn.Module:
    """``network`` exported to ONNX and loaded on onnxruntime (CPU): the family contract on three sessions."""
    from omegaconf import OmegaConf

    from reenact.export.exporter import export_model
    from reenact.export.onnx_backend import ExportedNetwork

    config = OmegaConf.to_container(preset_config(preset), resolve=True)
    export_model(network, PRESET_SIZES[preset], folder, config, verify=False)
    return ExportedNetwork(folder, threads)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def frames_per_second(network: torch.nn.Module, size: int, batch: int, frames: int, device: torch.device,
                      precision: str) -> float:
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(3, size, size, generator=generator)
    driving = torch.rand(batch, 3, size, size, generator=generator).to(device)
    animator = Animator(network, source.to(device), precision)
    reference = select_motion(animator.source_motion, 0)

    def one_batch(frames: torch.Tensor) -> None:
        animator.render(encode_frames(network, frames, precision), reference, relative=True)

    # warm-up (allocator, lazy inits, CUDA kernels): a full batch on GPU; one frame is enough on CPU
    one_batch(driving if device.type == "cuda" else driving[:1])
    synchronize(device)
    batches = max(1, math.ceil(frames / batch))
    start = time.perf_counter()
    for _ in range(batches):
        one_batch(driving)
    synchronize(device)
    return batches * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESET_SIZES), choices=list(PRESET_SIZES))
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--frames", type=int, default=16, help="frames timed per setting (rounded up to batches)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--backend", nargs="+", default=["pytorch"], choices=["pytorch", "onnxruntime"],
                        help="onnxruntime: the preset exported to ONNX, on onnxruntime's CPU provider")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, {cpu}, GPU: {gpu}", file=sys.stderr)
    print("| preset | size | backend | device | precision | batch | frames/s |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets:
        size = PRESET_SIZES[preset]
        for device_name in devices:
            device = resolve_device(device_name)
            network = build_network(preset, device)
            if "pytorch" in args.backend:
                for precision in args.precision:
                    for batch in args.batch:
                        fps = frames_per_second(network, size, batch, args.frames, device, precision)
                        print(f"| {preset} | {size} | pytorch | {device.type} | {precision} | {batch} | {fps:.3g} |",
                              flush=True)
            if "onnxruntime" in args.backend and device.type == "cpu":
                onnx_rows(preset, network, args)
            del network
            if device.type == "cuda":
                torch.cuda.empty_cache()


def onnx_rows(preset: str, network: torch.nn.Module, args: argparse.Namespace) -> None:
    from reenact.export.manifest import ExportError

    size = PRESET_SIZES[preset]
    with tempfile.TemporaryDirectory(prefix="reenact_onnx_") as folder:
        try:
            exported = onnx_network(preset, network, Path(folder), args.threads)
        except ExportError as exc:
            print(f"| {preset} | {size} | onnxruntime | cpu | fp32 | - | not exportable: {exc} |", flush=True)
            return
        for batch in args.batch:
            fps = frames_per_second(exported, size, batch, args.frames, torch.device("cpu"), "fp32")
            print(f"| {preset} | {size} | onnxruntime | cpu | fp32 | {batch} | {fps:.3g} |", flush=True)


if __name__ == "__main__":
    main()
