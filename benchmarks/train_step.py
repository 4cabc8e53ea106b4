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
should run on the machine at hand, the rule of ``reenact/utils/speed.py`` that ``trainer=cpu`` and animation follow:
per CPU kind the fastest row measured on that kind (AVX2: fp32 channels-first + fused Adam; AVX-512 without bf16:
fp32 channels-last + fused Adam; AVX512-BF16 / AMX: bf16 channels-first, plain Adam), on a GPU bf16 + channels-last +
fused Adam.

A guard stops a configuration that runs more than ``--guard-factor`` times slower than the fp32 row of the same model
and batch: each configuration's process reports every step; a timed step longer than N x the fp32 median step, or a
start-up and warm-up (from ``trainer.fit`` to the end of the second step) longer than N x fp32's, ends it, and its row
says ``stopped: > N x fp32``; the other rows still run (issue 33: one configuration hung, and the whole table with
it). ``compile`` is exempt from the warm-up part (its first step compiles). ``--time-limit`` caps each
configuration's process in seconds as well.

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
import os
import platform
import queue
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

# the reenact of this checkout, installed or not (a script's own folder comes first on sys.path, not the checkout)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> (Lightning precision, Hydra overrides)
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
    "recommended": ("rule", []),  # reenact.utils.speed.recommended for the device, see config_settings
}
WARMUP_STEPS = 2  # untimed steps before the timed ones
GUARD_SLACK_S = 1.0
# every configuration starts from the plain step: channels-first, eager, whatever the preset sets
PLAIN = ["model.channels_last=false", "model.nnpack=false", "model.compile=false"]
# FOMM with correlation refinement at 256x256: four stride-2 stages give the 16x16 feature fields
FOMM_REFINED_256 = "fomm_vox256 model/refinement=correlation model.network.refinement.extractor.num_down_blocks=4"


def config_settings(config: str, device: str) -> tuple[str, list[str]]:
    """A configuration's Lightning precision and Hydra overrides on ``device``; ``recommended`` asks the rule."""
    if config == "recommended":
        from reenact.utils.speed import recommended

        settings = recommended(device)
        return settings.precision, settings.train_overrides()[1:]  # the precision goes to the Trainer itself
    return CONFIGS[config]


# test hook: "CONFIG=SECONDS" makes CONFIG's timed steps SECONDS longer, so the guard can be tested at tiny sizes
SLOW_STEP_ENV = "REENACT_BENCH_SLOW_STEP"


def slow_step_seconds(config: str) -> float:
    name, _, seconds = os.environ.get(SLOW_STEP_ENV, "").partition("=")
    return float(seconds) if name == config and seconds else 0.0


def synthetic_batches(batch: int, size: int, steps: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"source": torch.rand(batch, 3, size, size, generator=generator),
             "driving": torch.rand(batch, 3, size, size, generator=generator)} for _ in range(steps)]


def measure(model: str, config: str, batch: int, size: int, steps: int, device: str) -> dict[str, Any]:
    """Time ``steps`` training steps (after two warm-up steps) of one model in one configuration, in this process.

    Prints ``{"fit": true}`` before ``trainer.fit`` and ``{"step": i, "seconds": s}`` after each step (the guard of
    :func:`run_guarded` reads them); returns the median timed step, the first step, the peak memory and precision.
    """
    from hydra.utils import instantiate
    from lightning.pytorch import Callback, Trainer
    from omegaconf import open_dict

    from reenact.utils.hydra_utils import compose_config

    delay = slow_step_seconds(config)

    class StepTimer(Callback):
        """Times each step and reports its end on stdout, for the parent's guard."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            if device == "cuda":
                torch.cuda.synchronize()
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            if delay and batch_idx >= WARMUP_STEPS:
                time.sleep(delay)
            if device == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._start)
            print(json.dumps({"step": batch_idx, "seconds": self.times[-1]}), flush=True)

    precision, overrides = config_settings(config, device)
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
    loader = torch.utils.data.DataLoader(synthetic_batches(batch, size, steps + WARMUP_STEPS), batch_size=None)
    print(json.dumps({"fit": True}), flush=True)
    trainer.fit(task, train_dataloaders=loader)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS, MiB
    return {"median": statistics.median(timer.times[WARMUP_STEPS:]), "first": timer.times[0], "peak": peak,
            "precision": precision}


def run_guarded(command: list[str], total_steps: int, step_limit: float | None = None,
                warmup_limit: float | None = None, time_limit: float | None = None) -> dict[str, Any]:
    """Run one measuring process (:func:`measure`'s protocol on stdout) under the guard; returns its result.

    ``warmup_limit``: seconds from its ``fit`` line to the end of the warm-up steps; ``step_limit``: seconds for each
    of the timed steps after that, up to ``total_steps``; ``time_limit``: seconds for the whole process. The process
    is killed when one is passed and the result is ``{"stopped": "factor" | "time"}``; otherwise the process's
    result with its phase times added: ``warmup`` (seconds from ``fit`` to the end of the warm-up) and ``wall``.
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        # its own process group, so that a stop also ends the workers it started (compile's, a data loader's)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        result: dict[str, Any] | None = None
        fit_at: float | None = None
        warmup = None
        steps_done = 0
        deadline, reason = (started + time_limit, "time") if time_limit else (None, "")
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return {"stopped": reason}
            if line is None:
                break
            now = time.perf_counter()
            try:
                message = json.loads(line) if line.startswith("{") else {}
            except ValueError:  # a library's own line that happens to start with a brace
                message = {}
            if "fit" in message:
                fit_at = now
            elif "step" in message:
                steps_done += 1
                if steps_done == WARMUP_STEPS and fit_at is not None:
                    warmup = now - fit_at
            elif "median" in message:
                result = message
            # the next deadline: the tightest of the whole-process cap and the current phase's limit
            phase = None
            if fit_at is not None and steps_done < WARMUP_STEPS and warmup_limit is not None:
                phase = (fit_at + warmup_limit, "factor")
            elif WARMUP_STEPS <= steps_done < total_steps and step_limit is not None:
                phase = (now + step_limit, "factor")
            candidates = [c for c in (phase, (started + time_limit, "time") if time_limit else None) if c]
            deadline, reason = min(candidates) if candidates else (None, "")
        process.wait()
        if process.returncode != 0 or result is None:
            stderr.seek(0)
            tail = (stderr.read().strip().splitlines() or ["no output"])[-1]
            return {"error": tail[:200]}
    return {**result, "warmup": warmup, "wall": time.perf_counter() - started}


def measure_in_subprocess(model: str, config: str, batch: int, size: int, steps: int, device: str,
                          baseline: dict[str, Any] | None = None, guard_factor: float | None = None,
                          time_limit: float | None = None) -> dict[str, Any]:
    """:func:`measure` in its own process, guarded by ``guard_factor`` x the ``baseline`` (fp32) phase times."""
    command = [sys.executable, __file__, "--one", json.dumps([model, config, batch, size, steps, device])]
    step_limit = warmup_limit = None
    if guard_factor and baseline and "median" in baseline:
        # a second of slack: a step's end reaches the guard through a pipe, and tiny steps jitter
        step_limit = guard_factor * baseline["median"] + GUARD_SLACK_S
        if config != "compile" and baseline.get("warmup"):  # compile's first step compiles
            warmup_limit = guard_factor * baseline["warmup"] + GUARD_SLACK_S
    result = run_guarded(command, steps + WARMUP_STEPS, step_limit, warmup_limit, time_limit)
    if result.get("stopped") == "factor":
        return {"stopped": f"> {guard_factor:g} x fp32"}
    if result.get("stopped") == "time":
        return {"stopped": f"> {time_limit:.0f} s time limit"}
    return result


def row(model: str, config: str, batch: int, size: int, result: dict[str, Any], baseline: dict[str, Any]) -> str:
    if "error" in result:
        return f"| {model} | {config} | {batch} | {size} | - | failed: {result['error']} | - | - | - |"
    if "stopped" in result:
        return f"| {model} | {config} | {batch} | {size} | - | stopped: {result['stopped']} | - | - | - |"
    if "skipped" in result:
        return f"| {model} | {config} | {batch} | {size} | - | skipped: {result['skipped']} | - | - | - |"
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
    parser.add_argument("--guard-factor", type=float, default=5.0,
                        help="stop a configuration that runs more than this many times slower than fp32 (0: off)")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds for each configuration's process")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, printed as JSON
    return parser


def device_line(device: str) -> str:
    """The device the table was measured on, with the CPU kind of the speed rule."""
    from reenact.utils.speed import recommended

    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    settings = recommended(device)
    return (f"device: {device} ({name}; kind {settings.kind}, recommended: "
            f"{' '.join(settings.train_overrides())}), torch {torch.__version__}")


def table_header(device: str) -> list[str]:
    memory = "peak GPU MiB" if device == "cuda" else "peak RSS MiB"
    return [f"| model | config | batch | size | precision | median step s | ratio to fp32 | {memory} (x fp32) "
            "| compile |", "|---|---|---|---|---|---|---|---|---|"]


def table_rows(models: list[str], configs: list[str], batches: list[int], size: int, steps: int, device: str,
               guard_factor: float | None = 5.0, time_limit: float | None = None,
               deadline: float | None = None) -> Iterator[str]:
    """The table's rows, fp32 first for each model and batch; ``deadline`` (``time.perf_counter()``) ends the
    table early: each later process gets the time left, and the rows that no time is left for say so."""
    configs = [config for config in configs if config != "fp32"]
    for model in models:
        for batch in batches:
            baseline: dict[str, Any] = {}
            for config in ["fp32", *configs]:
                limit = time_limit
                if deadline is not None:
                    left = deadline - time.perf_counter()
                    limit = left if limit is None else min(limit, left)
                if limit is not None and limit <= 1:
                    result: dict[str, Any] = {"skipped": "no time left"}
                else:
                    result = measure_in_subprocess(model, config, batch, size, steps, device, baseline,
                                                   guard_factor, limit)
                if config == "fp32":
                    baseline = result
                yield row(model, config, batch, size, result, baseline)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return 0
    print(device_line(args.device))
    for line in table_header(args.device):
        print(line)
    for line in table_rows(args.model, args.configs, args.batch, args.size, args.steps, args.device,
                           args.guard_factor or None, args.time_limit):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
