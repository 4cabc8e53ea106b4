"""One full training step, fp32 eager beside each faster configuration, with the ratio and peak memory.

    python benchmarks/train_step.py --model fomm_vox256 --batch 2 --size 256
    python benchmarks/train_step.py --model fomm_vox256 liveportrait --configs fp32 channels_last fused_adam recommended
    python benchmarks/train_step.py --model fomm_vox256 liveportrait --device cuda --batch 8 32 \
        --configs fp32 bf16 channels_last bf16_channels_last compile
    python benchmarks/train_step.py --model correlation "fomm_vox256 model/refinement=correlation \
        model.network.refinement.extractor.num_down_blocks=4"

A model is a preset name, optionally followed by Hydra overrides for it alone (one quoted argument). A configuration
is one lever or a combination (``--configs``, see ``CONFIGS``); ``fp32`` (eager, channels-first, the preset's
optimiser) is always measured first and is the baseline of the ``ratio`` column: step time / fp32 step time of the
same model and batch, measured in the same run, so a ratio of 0.40 is 2.5x faster. ``recommended`` is what a user
should run on the machine at hand: bf16 autocast only where the CPU has bfloat16 arithmetic (AVX512-BF16 / AMX) or
on a GPU, channels-last only on a GPU or an AVX-512 CPU (oneDNN's channels-last convolutions at 256x256 took 0.85x
the channels-first step on an AVX-512 Xeon and 1.2-1.5x on an AVX2-only EPYC, experiments/2026-12-01_performance.md),
fused Adam.

The step is the task's own ``training_step`` (generator forward/backward incl. the equivariance transform's double
backward, per-network Adam steps, discriminator step when the preset has a GAN), run through a real Lightning
Trainer with the logger off, so the figure is what training pays per batch. Each configuration runs in its own
process, so the memory column is that configuration's own peak (CPU: the process's peak RSS; GPU: peak allocated).
With ``compile`` the first step (compilation included) is reported too, and after how many steps compiling pays off.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

# name -> (precision, Hydra overrides); "bf16" / "32" precisions are resolved per device by precision_for
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "fp32": ("32-true", []),
    "bf16": ("bf16-mixed", []),
    "channels_last": ("32-true", ["model.channels_last=true"]),
    "fused_adam": ("32-true", ["+model.optimizer.fused=true"]),
    "compile": ("32-true", ["model.compile=true"]),
    "bf16_channels_last": ("bf16-mixed", ["model.channels_last=true"]),
    "channels_last_fused_adam": ("32-true", ["model.channels_last=true", "+model.optimizer.fused=true"]),
    "nnpack": ("32-true", ["model.channels_last=false", "model.nnpack=true"]),
    "nnpack_fused_adam": ("32-true", ["model.channels_last=false", "model.nnpack=true", "+model.optimizer.fused=true"]),
    "recommended": ("native", ["model.channels_last=native", "+model.optimizer.fused=true"]),
}
# every configuration starts from the plain step: channels-first, eager, whatever the preset sets
PLAIN = ["model.channels_last=false", "model.nnpack=false", "model.compile=false"]
# FOMM with correlation refinement at 256x256: four stride-2 stages give the 16x16 feature fields
FOMM_REFINED_256 = "fomm_vox256 model/refinement=correlation model.network.refinement.extractor.num_down_blocks=4"


def precision_for(precision: str, device: str) -> str:
    if precision != "native":
        return precision
    if device == "cuda":
        return "bf16-mixed"
    from reenact.utils.hydra_utils import native_cpu_precision

    return native_cpu_precision()


def resolve_native(overrides: list[str], device: str) -> list[str]:
    """``model.channels_last=native``: true on a GPU or a CPU with AVX-512, false elsewhere (see the docstring)."""
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    channels_last = "true" if device == "cuda" or avx512 else "false"
    return [o.replace("model.channels_last=native", f"model.channels_last={channels_last}") for o in overrides]


def synthetic_batches(batch: int, size: int, steps: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"source": torch.rand(batch, 3, size, size, generator=generator),
             "driving": torch.rand(batch, 3, size, size, generator=generator)} for _ in range(steps)]


def measure(model: str, config: str, batch: int, size: int, steps: int, device: str) -> dict[str, Any]:
    """Time ``steps`` training steps (after two warm-up steps) of one model in one configuration, in this process."""
    from hydra.utils import instantiate
    from lightning.pytorch import Callback, Trainer
    from omegaconf import open_dict

    from reenact.utils.hydra_utils import compose_config

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            if device == "cuda":
                torch.cuda.synchronize()
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            if device == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._start)

    precision, overrides = CONFIGS[config]
    precision = precision_for(precision, device)
    overrides = resolve_native(overrides, device)
    preset, *own = model.split()
    cfg = compose_config("train", [f"model={preset}", *own, *PLAIN, *overrides, "paths.root_dir=/tmp",
                                   "paths.output_dir=/tmp/bench"])
    with open_dict(cfg.model):
        # random VGG weights for the perceptual term in every preset that lists it: the cost is the same, and
        # nothing downloads
        for term in (cfg.model.objective.terms or {}).values():
            if term is not None and "vgg_pretrained" in term:
                term.vgg_pretrained = False
    task = instantiate(cfg.model)
    timer = StepTimer()
    trainer = Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
                      max_steps=-1, max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    loader = torch.utils.data.DataLoader(synthetic_batches(batch, size, steps + 2), batch_size=None)
    trainer.fit(task, train_dataloaders=loader)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS, MiB
    return {"median": statistics.median(timer.times[2:]), "first": timer.times[0], "peak": peak,
            "precision": precision}


def measure_in_subprocess(model: str, config: str, batch: int, size: int, steps: int, device: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", json.dumps([model, config, batch, size, steps, device])]
    result = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:200]}
    return json.loads(lines[-1])


def row(model: str, config: str, batch: int, size: int, result: dict[str, Any], baseline: dict[str, Any]) -> str:
    if "error" in result:
        return f"| {model} | {config} | {batch} | {size} | - | failed: {result['error']} | - | - | - |"
    ratio = result["median"] / baseline["median"] if "median" in baseline else float("nan")
    memory = result["peak"] / baseline["peak"] if "peak" in baseline else float("nan")
    payoff = "-"
    if config == "compile" and "first" in baseline:
        saved = baseline["median"] - result["median"]
        cold = result["first"] - baseline["first"]
        payoff = f"{cold:.0f} s cold, " + (f"pays off after {cold / saved:.0f} steps" if saved > 0 else "never")
    return (f"| {model} | {config} | {batch} | {size} | {result['precision']} | {result['median']:.3f} | "
            f"**{ratio:.2f}** | {result['peak']:,.0f} ({memory:.2f}x) | {payoff} |")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["fomm_vox256", "liveportrait"])
    parser.add_argument("--configs", nargs="+", default=["channels_last", "fused_adam", "bf16", "recommended"],
                        choices=list(CONFIGS), help="measured after the fp32 eager baseline, which always runs")
    parser.add_argument("--batch", nargs="+", type=int, default=[2])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (2 warm-up steps are added)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, printed as JSON
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return 0
    if args.device == "cuda":
        device_name = torch.cuda.get_device_name()
    else:
        from reenact.utils.hydra_utils import cpu_computes_bf16

        device_name = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                       f"bf16 arithmetic: {'yes' if cpu_computes_bf16() else 'no'}")
    print(f"device: {args.device} ({device_name}), torch {torch.__version__}")
    memory = "peak GPU MiB" if args.device == "cuda" else "peak RSS MiB"
    print(f"| model | config | batch | size | precision | median step s | ratio to fp32 | {memory} (x fp32) "
          "| compile |")
    print("|---|---|---|---|---|---|---|---|---|")
    configs = [config for config in args.configs if config != "fp32"]
    for model in args.model:
        for batch in args.batch:
            baseline = measure_in_subprocess(model, "fp32", batch, args.size, args.steps, args.device)
            print(row(model, "fp32", batch, args.size, baseline, baseline), flush=True)
            for config in configs:
                result = measure_in_subprocess(model, config, batch, args.size, args.steps, args.device)
                print(row(model, config, batch, args.size, result, baseline), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
