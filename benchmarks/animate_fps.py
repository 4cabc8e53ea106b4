"""Animation throughput: driven frames per second for each model preset, batch size and configuration, with the
ratio to the plain fp32 path measured in the same run.

    python benchmarks/animate_fps.py                                  # all presets, batch 1 and 16, CPU (+ GPU)
    python benchmarks/animate_fps.py --presets liveportrait --batch 1 --frames 2 \
        --configs per_frame_source fp32 channels_last onnxruntime
    python benchmarks/animate_fps.py --presets liveportrait --device cuda --configs per_frame_source fp32 bf16 \
        bf16_channels_last

A frame costs what ``python -m reenact.animate`` pays per driving frame once the source is prepared: the
driving frame's motion (FOMM's detector / LivePortrait's M), the motion transfer (relative) and the rendering from
the source's encoding (FOMM: dense motion + generator decoder; LivePortrait: W + G), because the animator encodes a
source once (LivePortrait's F, FOMM's encoder). Configurations (``--configs``):

* ``per_frame_source``: the source re-encoded for every driving frame (what animation did before it encoded the
  source once); the baseline of the ratio column when listed, else ``fp32``;
* ``fp32``: the animator as it runs by default;
* ``channels_last``: the networks stored channels-last (``animate.channels_last=true``);
* ``nnpack``: 3x3 convolutions by NNPACK's Winograd algorithm (``animate.nnpack=true``, CPU only);
* ``bf16``, ``bf16_channels_last``: bf16 autocast (``animate.precision=bf16``); fast on GPUs and on CPUs with
  bfloat16 arithmetic (AVX512-BF16 / AMX), emulated and slow elsewhere;
* ``onnxruntime``: the preset exported with :mod:`reenact.export` (opset 20, into a temporary folder) on
  onnxruntime's CPU provider (CPU only); a family that cannot be exported gets a row saying why.

Networks have random weights (speed does not depend on them) at each preset's resolution: 64 for the CPU presets,
256 for the released sizes. Decoding, face detection and encoding are not included. A warm-up (one batch on GPU, one
frame on CPU), then ``--frames`` frames (at least one batch) are timed. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from reenact.animation.pipeline import Animator, encode_frames, resolve_device
from reenact.families.motion import select_motion
from reenact.utils.hydra_utils import compose_config
from reenact.utils.memory_format import to_channels_last
from reenact.utils.nnpack import use_nnpack

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


CONFIGS = ("per_frame_source", "fp32", "channels_last", "nnpack", "bf16", "bf16_channels_last", "onnxruntime")


@torch.no_grad()
def frames_per_second(network: torch.nn.Module, size: int, batch: int, frames: int, device: torch.device,
                      precision: str, per_frame_source: bool = False) -> float:
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(3, size, size, generator=generator)
    driving = torch.rand(batch, 3, size, size, generator=generator).to(device)
    animator = Animator(network, source.to(device), precision)
    if per_frame_source:
        animator.source_encoding = None  # render from the image: the source is encoded again for every frame
    reference = select_motion(animator.source_motion, 0)

    def one_batch(frames: torch.Tensor) -> None:
        animator.render(encode_frames(network, frames, precision), reference)

    # warm-up (allocator, lazy inits, CUDA kernels): a full batch on GPU; one frame is enough on CPU
    one_batch(driving if device.type == "cuda" else driving[:1])
    synchronize(device)
    batches = max(1, math.ceil(frames / batch))
    start = time.perf_counter()
    for _ in range(batches):
        one_batch(driving)
    synchronize(device)
    return batches * batch / (time.perf_counter() - start)


def configured_network(preset: str, config: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The network a configuration runs and its precision; raises ExportError for an unexportable family."""
    network = build_network(preset, device)
    if config == "onnxruntime":
        folder = tempfile.TemporaryDirectory(prefix="reenact_onnx_")
        exported = onnx_network(preset, network, Path(folder.name), torch.get_num_threads())
        exported.export_folder = folder  # removed with the network
        return exported, "fp32"
    if config in ("channels_last", "bf16_channels_last"):
        to_channels_last(network)
    if config == "nnpack":
        use_nnpack(network)
    return network, "bf16" if config.startswith("bf16") else "fp32"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESET_SIZES), choices=list(PRESET_SIZES))
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--configs", nargs="+", default=["per_frame_source", "fp32", "channels_last"],
                        choices=CONFIGS)
    parser.add_argument("--frames", type=int, default=16, help="frames timed per setting (rounded up to batches)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from reenact.export.manifest import ExportError
    from reenact.utils.hydra_utils import cpu_computes_bf16

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, {cpu} (bf16 arithmetic: "
          f"{'yes' if cpu_computes_bf16() else 'no'}), GPU: {gpu}")
    print("| preset | size | device | config | batch | frames/s | x baseline |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets:
        size = PRESET_SIZES[preset]
        for device_name in devices:
            device = resolve_device(device_name)
            configs = [c for c in args.configs if not (c in ("onnxruntime", "nnpack") and device.type != "cpu")]
            baseline: dict[int, float] = {}
            for config in configs:
                try:
                    network, precision = configured_network(preset, config, device)
                except ExportError as exc:
                    print(f"| {preset} | {size} | {device.type} | {config} | - | not exportable: {exc} | - |",
                          flush=True)
                    continue
                for batch in args.batch:
                    fps = frames_per_second(network, size, batch, args.frames, device, precision,
                                            per_frame_source=config == "per_frame_source")
                    baseline.setdefault(batch, fps)  # the first configuration listed is the baseline
                    print(f"| {preset} | {size} | {device.type} | {config} | {batch} | {fps:.3g} | "
                          f"**{fps / baseline[batch]:.2f}** |", flush=True)
                del network
                if device.type == "cuda":
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
