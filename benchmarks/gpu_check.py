"""The GPU rows in one command: training-step and animation tables, a short bf16 training run and a 2-GPU DDP step.

    python benchmarks/gpu_check.py                        # on a CUDA machine: all of it within --budget (480 s)
    python benchmarks/gpu_check.py --dry-run              # any machine: the plan, and the report with no numbers
    python benchmarks/gpu_check.py --device cpu --tiny    # any machine: every section at tiny sizes on the CPU

Sections, each given its share of ``--budget`` seconds (``SHARES``; a section that ends early leaves its time to
the next ones, and without a second GPU the DDP share goes to the others; a process still running at its section's
end is stopped, and its row says so). Not run on a GPU yet: the shares are a plan, and ``compile`` rows may run out
of time (``--budget`` gives them more):

1. training step (``benchmarks/train_step.py``'s rows, guard included): ``fomm_vox256`` and ``liveportrait`` at
   256x256, batch 8 and 32, ``fp32``, ``bf16``, ``channels_last``, ``recommended`` (the rule of
   ``reenact/utils/speed.py`` for a GPU: bf16 + channels-last + fused Adam) and ``compile``, with peak GPU memory;
   each model and batch gets an equal part of the section;
2. animation frames/s (``benchmarks/animate_fps.py``): both presets, batch 1 and 16, ``per_frame_source``, ``fp32``,
   ``channels_last``, ``bf16``, ``bf16_channels_last``;
3. a 20-step ``python train.py trainer=gpu trainer.precision=bf16-mixed model=fomm_vox256`` run on synthetic 256x256
   data (a small set, generated first);
4. a DDP run of ``trainer=ddp`` on 2 GPUs (5 steps), where two GPUs exist.

The report goes to ``experiments/<date>_gpu_check.md`` (``--out``), rewritten after every row, so a run that is
stopped still leaves the rows it measured. Without a CUDA device (and without ``--dry-run`` or ``--device cpu``) it
refuses in one line.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the reenact of this checkout, installed or not
sys.path.insert(0, str(REPO / "benchmarks"))

import train_step  # noqa: E402  (benchmarks/train_step.py: its rows, guard and table header)

# section -> share of the budget
SHARES = {"train_step": 0.62, "animation": 0.16, "train_run": 0.12, "ddp": 0.10}
STEP_MODELS = ["fomm_vox256", "liveportrait"]
STEP_BATCHES = [8, 32]
STEP_CONFIGS = ["fp32", "bf16", "channels_last", "recommended", "compile"]
ANIMATION_PRESETS = ["fomm_vox256", "liveportrait"]
ANIMATION_CONFIGS = ["per_frame_source", "fp32", "channels_last", "bf16", "bf16_channels_last"]
# a small synthetic set at 256x256: generating the default set would take a good part of the budget
SMALL_SYNTHETIC = ["data.synthetic.num_train_identities=4", "data.synthetic.num_test_identities=2",
                   "data.synthetic.clips_per_identity=2", "data.num_workers=2", "data.val_videos=2"]
# --tiny: the same sections at sizes that run on 2 CPU cores in a few minutes
TINY_MODEL = ("fomm model.network.kp_detector.block_expansion=4 model.network.generator.block_expansion=4 "
              "model.network.generator.dense_motion.block_expansion=4")


class Plan:
    """What each section runs; :func:`plan_for` fills it for a GPU or for ``--tiny``."""

    def __init__(self, device: str, step_models: list[str], step_batches: list[int], step_configs: list[str],
                 step_size: int, step_steps: int, animation: list[str], train_run: list[str],
                 ddp: list[str] | None, ddp_reason: str = "") -> None:
        self.device, self.step_models, self.step_batches, self.step_configs = (device, step_models, step_batches,
                                                                               step_configs)
        self.step_size, self.step_steps = step_size, step_steps
        self.animation, self.train_run, self.ddp, self.ddp_reason = animation, train_run, ddp, ddp_reason


def plan_for(device: str, tiny: bool, gpus: int, run_dir: Path) -> Plan:
    python = sys.executable
    if tiny:
        animation = ["--presets", "fomm", "--batch", "1", "--frames", "2", "--configs", "fp32", "channels_last"]
        run = ["model=fomm", "trainer=cpu", "+trainer.max_steps=2", "data.frame_size=64", "data.batch_size=2",
               *SMALL_SYNTHETIC, "trainer.max_time=null"]
        plan = Plan(device, [TINY_MODEL], [1], ["fp32", "bf16", "channels_last", "recommended"], 32, 1,
                    [python, str(REPO / "benchmarks" / "animate_fps.py"), "--device", device, *animation],
                    [python, str(REPO / "train.py"), *run], None, "not run with --tiny")
    else:
        animation = ["--presets", *ANIMATION_PRESETS, "--batch", "1", "16", "--frames", "32",
                     "--configs", *ANIMATION_CONFIGS]
        run = ["model=fomm_vox256", "trainer=gpu", "trainer.precision=bf16-mixed", "+trainer.max_steps=20",
               "data.frame_size=256", *SMALL_SYNTHETIC]
        ddp = ["model=fomm_vox256", "trainer=ddp", "trainer.accelerator=gpu", "trainer.devices=2",
               "trainer.precision=bf16-mixed", "+trainer.max_steps=5", "data.frame_size=256", *SMALL_SYNTHETIC]
        plan = Plan(device, STEP_MODELS, STEP_BATCHES, STEP_CONFIGS, 256, 3,
                    [python, str(REPO / "benchmarks" / "animate_fps.py"), "--device", device, *animation],
                    [python, str(REPO / "train.py"), *run],
                    [python, str(REPO / "train.py"), *ddp] if gpus >= 2 else None,
                    "" if gpus >= 2 else f"not run: {gpus} GPU(s) here")
    # every training run: no validation, no checkpoints or images, its own folder and data cache
    common = ["trainer.limit_val_batches=0", "callbacks=none", "logger=csv", f"paths.cache_dir={run_dir}/cache"]
    plan.train_run += [*common, f"hydra.run.dir={run_dir}/train_run"]
    if plan.ddp:
        plan.ddp += [*common, f"hydra.run.dir={run_dir}/ddp"]
    return plan


def run_capped(command: list[str], seconds: float) -> tuple[int | None, str, str, float]:
    """Run ``command`` for at most ``seconds`` (its whole process group is stopped then).

    Returns the exit code (None when stopped), stdout, stderr and the wall time.
    """
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env=env, start_new_session=True)
    try:
        out, err = process.communicate(timeout=max(1.0, seconds))
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        code = None
    return code, out, err, time.perf_counter() - start


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:200].replace("|", "/")


def run_row(name: str, code: int | None, err: str, wall: float, seconds: float, steps: int) -> str:
    """One row of the training-run table."""
    if code is None:
        return f"| {name} | stopped: > {seconds:.0f} s section time | - | - |"
    if code != 0:
        return f"| {name} | failed: {last_line(err)} | - | - |"
    return f"| {name} | finished | {wall:.1f} | {steps} |"


class Report:
    """The markdown report, rewritten in full (through a temporary file) whenever a row is added."""

    def __init__(self, path: Path, title: str, preamble: list[str]) -> None:
        self.path = path
        self.parts: list[tuple[str, list[str]]] = []
        self.head = [f"# {title}", "", *preamble, ""]

    def section(self, heading: str, lines: list[str]) -> list[str]:
        self.parts.append((heading, lines))
        self.write()
        return lines

    def add(self, lines: list[str], line: str) -> None:
        lines.append(line)
        self.write()

    def text(self) -> str:
        out = list(self.head)
        for heading, lines in self.parts:
            out += [f"## {heading}", "", *lines, ""]
        return "\n".join(out)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, delete=False, suffix=".tmp") as handle:
            handle.write(self.text())
        os.replace(handle.name, self.path)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=REPO).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (for --device cpu: checks the script)")
    parser.add_argument("--dry-run", action="store_true", help="write the report with the plan and no numbers")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all sections together")
    parser.add_argument("--guard-factor", type=float, default=5.0, help="train_step's guard (0: off)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report file (default experiments/<date>_gpu_check.md)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.budget <= 0 or args.guard_factor < 0:
        print("error: --budget must be positive and --guard-factor 0 or more", file=sys.stderr)
        return 2
    if args.device == "cuda" and not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here (torch.cuda.is_available() is false); --dry-run writes the plan, "
              "--device cpu --tiny runs it small on the CPU", file=sys.stderr)
        return 2
    start = time.perf_counter()
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    today = datetime.date.today().isoformat()
    out = args.out or REPO / "experiments" / f"{today}_gpu_check.md"
    if args.dry_run:  # the plan as it would run on a machine with two GPUs
        run_dir, plan = Path("RUN_DIR"), plan_for(args.device, args.tiny, 2, Path("RUN_DIR"))
    else:
        run_dir = Path(tempfile.mkdtemp(prefix="reenact_gpu_check_"))
        plan = plan_for(args.device, args.tiny, gpus, run_dir)
    device_line = "dry run: nothing measured" if args.dry_run else train_step.device_line(args.device)
    report = Report(out, f"GPU check ({today})", [
        f"`python benchmarks/gpu_check.py {' '.join(argv if argv is not None else sys.argv[1:])}` at commit "
        f"{commit()}, budget {args.budget:.0f} s; {device_line}; {gpus} GPU(s)."])
    print(f"writing {out}")

    # the sections that run share the budget (without a second GPU, DDP's share goes to the others)
    names = [name for name in SHARES if name != "ddp" or plan.ddp is not None]

    def section_end(name: str) -> float:
        done = sum(SHARES[n] for n in names[: names.index(name) + 1])
        return start + args.budget * done / sum(SHARES[n] for n in names)

    # 1. training step: each model and batch gets an equal part of what is left of the section; compile, the
    # last configuration of each, gets what its group has left
    lines = report.section(f"Training step ({plan.step_size}x{plan.step_size}, "
                           f"{plan.step_steps} timed step(s) after 2 warm-up steps)",
                           list(train_step.table_header(args.device)))
    groups = [(model, batch) for model in plan.step_models for batch in plan.step_batches]
    for index, (model, batch) in enumerate(groups):
        if args.dry_run:
            for config in plan.step_configs:
                report.add(lines, train_step.row(model.split()[0], config, batch, plan.step_size,
                                                 {"skipped": "dry run"}, {}))
            continue
        left = section_end("train_step") - time.perf_counter()
        deadline = time.perf_counter() + left / (len(groups) - index)
        for line in train_step.table_rows([model], plan.step_configs, [batch], plan.step_size, plan.step_steps,
                                          args.device, args.guard_factor or None, deadline=deadline):
            line = line.replace(f"| {model} |", f"| {model.split()[0]} |", 1)  # the preset, not its overrides
            report.add(lines, line)
            print(line, flush=True)

    # 2. animation frames/s: animate_fps.py's own table
    lines = report.section("Animation frames/s", ["`" + " ".join(Path(c).name if c.startswith("/") else c
                                                                  for c in plan.animation) + "`", ""])
    if args.dry_run:
        report.add(lines, "not run (dry run)")
    else:
        seconds = section_end("animation") - time.perf_counter()
        code, stdout, err, _ = run_capped(plan.animation, seconds)
        for line in stdout.splitlines():
            if line.startswith("|"):
                report.add(lines, line)
            elif line.startswith("torch "):  # the script's device line, a paragraph above its table
                report.add(lines, line + "\n")
        if code is None:
            report.add(lines, f"\nstopped: > {seconds:.0f} s section time (the rows above were measured)")
        elif code != 0:
            report.add(lines, f"\nfailed: {last_line(err)}")

    # 3 and 4. training runs
    lines = report.section("Training runs (synthetic data, no validation)",
                           ["| run | result | wall s (incl. start-up and data generation) | steps |",
                            "|---|---|---|---|"])
    runs = [("train_run", "trainer=gpu bf16-mixed, 1 GPU" if not args.tiny else "trainer=cpu, tiny", plan.train_run,
             20 if not args.tiny else 2), ("ddp", "trainer=ddp bf16-mixed, 2 GPUs", plan.ddp, 5)]
    for name, title, command, steps in runs:
        if command is None:
            report.add(lines, f"| {title} | {plan.ddp_reason} | - | - |")
            continue
        if args.dry_run:
            where = " (where two GPUs exist)" if name == "ddp" else ""
            report.add(lines, f"| {title} | not run (dry run){where}: `{' '.join(command[2:])}` | - | - |")
            continue
        seconds = section_end(name) - time.perf_counter()
        code, _, err, wall = run_capped(command, seconds)
        report.add(lines, run_row(title, code, err, wall, seconds, steps))
    print(report.text())
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
