"""Median time of one full training step (all optimisers) and peak memory, per preset and precision.

    python benchmarks/train_step.py --model fomm fomm_vox256 --batch 2 --size 256 --steps 5
    python benchmarks/train_step.py --model fomm_vox256 --device cuda --precision 32-true bf16-mixed
    python benchmarks/train_step.py --model correlation "fomm_vox256 model/refinement=correlation \
        model.network.refinement.extractor.num_down_blocks=4" --batch 2 --size 256

A model is a preset name, optionally followed by Hydra overrides for it alone (one quoted argument): the default
list covers FOMM, the correlation family and FOMM with correlation refinement at 256x256.

The step is the task's own ``training_step`` (generator forward/backward incl. equivariance double-backward,
per-network Adam steps, discriminator step when the preset has a GAN), run through a real Lightning Trainer
with the logger off, so the figure is what training pays per batch. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time

import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback, Trainer
from omegaconf import open_dict

from reenact.utils.hydra_utils import compose_config


class StepTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)


def synthetic_batches(batch: int, size: int, steps: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"source": torch.rand(batch, 3, size, size, generator=generator),
             "driving": torch.rand(batch, 3, size, size, generator=generator)} for _ in range(steps)]


# FOMM with correlation refinement at 256x256: four stride-2 stages give the 16x16 feature fields
FOMM_REFINED_256 = "fomm_vox256 model/refinement=correlation model.network.refinement.extractor.num_down_blocks=4"


def measure(model: str, batch: int, size: int, steps: int, device: str, precision: str,
            extra: list[str]) -> tuple[float, float]:
    preset, *own = model.split()
    cfg = compose_config("train", [f"model={preset}", *own, "paths.root_dir=/tmp", "paths.output_dir=/tmp/bench",
                                   *extra])
    with open_dict(cfg.model):
        # random VGG weights for the perceptual term (model.objective.terms.perceptual.vgg_pretrained=false) in
        # every preset that lists it: the cost is the same, and nothing downloads
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
    median = statistics.median(timer.times[2:]) if len(timer.times) > 2 else statistics.median(timer.times)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS, MiB
    return median, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["fomm", "fomm_vox256", "correlation", FOMM_REFINED_256])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (2 warm-up steps are added)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--override", nargs="*", default=[],
                        help="extra Hydra overrides, e.g. '+model.objective.terms.generator_gan="
                             "{_target_: reenact.losses.adversarial.GeneratorAdversarial, weight: 1.0}'")
    args = parser.parse_args(argv)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(f"device: {args.device} ({device_name}), threads {torch.get_num_threads()}, torch {torch.__version__}")
    memory = "peak GPU MiB" if args.device == "cuda" else "peak RSS MiB (process)"
    print(f"| model | batch | size | precision | median step s | {memory} |")
    print("|---|---|---|---|---|---|")
    for model in args.model:
        for precision in args.precision:
            seconds, peak = measure(model, args.batch, args.size, args.steps, args.device, precision, args.override)
            print(f"| {model} | {args.batch} | {args.size} | {precision} | {seconds:.3f} | {peak:,.0f} |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
