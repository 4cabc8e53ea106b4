"""The speed rule per device kind (reenact/utils/speed.py) and the readers that must follow it (``trainer=cpu``,
``python -m reenact.animate``, ``benchmarks/train_step.py``'s ``recommended``), the benchmark's guard against a
configuration that hangs, and ``benchmarks/gpu_check.py``'s argument handling and table writing (no GPU needed).

The CPU features are stubbed where torch reads them (``torch.cpu._is_*_supported``, ``get_cpu_capability``), so each
kind is checked on any machine.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch

from reenact.utils import speed
from reenact.utils.hydra_utils import compose_config

REPO = Path(__file__).resolve().parents[1]

# kind -> (get_cpu_capability(), AVX512-BF16, AMX tiles)
CPU_FEATURES = {
    "avx2": ("AVX2", False, False),
    "avx512": ("AVX512", False, False),
    "avx512_bf16": ("AVX512", True, False),
    "amx": ("AVX512", True, True),
}
# kind -> (precision, channels_last, fused Adam): issue 33's table for avx512_bf16, the recorded rules elsewhere
WANT = {
    "avx2": ("32-true", False, True),
    "avx512": ("32-true", True, True),
    "avx512_bf16": ("bf16-mixed", False, False),
    "amx": ("bf16-mixed", False, False),
    "cuda": ("bf16-mixed", True, True),
}


def _stub_cpu(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    capability, bf16, amx = CPU_FEATURES[kind]
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    # oneDNN calls bf16 "supported" on every AVX-512 CPU (emulated there): the rule must not read it
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: capability == "AVX512")


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_step() -> ModuleType:
    return _script("train_step")


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return _script("gpu_check")


# ------------------------------------------------------------------------------------------------ the rule


@pytest.mark.parametrize("kind", list(CPU_FEATURES))
def test_the_rule_per_cpu_kind(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    _stub_cpu(monkeypatch, kind)
    settings = speed.recommended("cpu")
    assert settings.kind == kind
    assert (settings.precision, settings.channels_last, settings.fused_adam) == WANT[kind]
    # a GPU gets its own rule whatever the CPU
    gpu = speed.recommended(torch.device("cuda", 1))
    assert (gpu.kind, gpu.precision, gpu.channels_last, gpu.fused_adam) == ("cuda", *WANT["cuda"])


def test_bf16_never_goes_with_channels_last_on_a_cpu() -> None:
    # issue 33: bf16 + channels-last did not finish 7 steps of fomm_vox256 at 256x256 in 10 minutes on AVX512-BF16
    for kind in speed.CPU_KINDS:
        precision, channels_last, _ = speed.RULES[kind]
        assert not (precision.startswith("bf16") and channels_last), kind


def test_the_rule_gives_the_train_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_cpu(monkeypatch, "avx512_bf16")
    assert speed.recommended().train_overrides() == ["trainer.precision=bf16-mixed", "model.channels_last=false"]
    _stub_cpu(monkeypatch, "avx512")
    assert speed.recommended().train_overrides() == ["trainer.precision=32-true", "model.channels_last=true",
                                                     "+model.optimizer.fused=true"]
    assert speed.recommended().autocast == "fp32" and speed.recommended("cuda").autocast == "bf16"


@pytest.mark.parametrize("kind", list(CPU_FEATURES))
def test_cpu_trainer_precision_follows_the_rule(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    _stub_cpu(monkeypatch, kind)
    cfg = compose_config("train", ["trainer=cpu"])
    assert cfg.trainer.precision == WANT[kind][0]


@pytest.mark.parametrize("kind", list(CPU_FEATURES))
def test_animate_defaults_follow_the_rule(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    from reenact.cli.animate import resolve_speed

    _stub_cpu(monkeypatch, kind)
    base = ["ckpt_path=x.ckpt", "source=a.jpg", "driving=b.mp4", "paths.root_dir=/tmp"]
    cfg = compose_config("animate", [*base, "device=cpu"])
    assert (cfg.precision, cfg.channels_last) == ("auto", "auto")  # the defaults ask the rule
    resolved = resolve_speed(cfg)
    want_precision = "bf16" if WANT[kind][0].startswith("bf16") else "fp32"
    assert (resolved.precision, resolved.channels_last) == (want_precision, WANT[kind][1])
    on_gpu = resolve_speed(compose_config("animate", [*base, "device=cuda"]))
    assert (on_gpu.precision, on_gpu.channels_last) == ("bf16", True)
    # onnxruntime runs fp32 channels-first; a value given on the command line stays
    onnx = resolve_speed(compose_config("animate", [*base, "backend=onnxruntime"]))
    assert (onnx.precision, onnx.channels_last) == ("fp32", False)
    given = resolve_speed(compose_config("animate", [*base, "device=cpu", "precision=fp32", "channels_last=true"]))
    assert (given.precision, given.channels_last) == ("fp32", True)


@pytest.mark.parametrize("kind", [*CPU_FEATURES, "cuda"])
def test_the_benchmark_recommends_the_rule(monkeypatch: pytest.MonkeyPatch, train_step: ModuleType,
                                           kind: str) -> None:
    _stub_cpu(monkeypatch, "avx2" if kind == "cuda" else kind)
    precision, overrides = train_step.config_settings("recommended", "cuda" if kind == "cuda" else "cpu")
    want_precision, channels_last, fused = WANT[kind]
    assert precision == want_precision
    assert f"model.channels_last={str(channels_last).lower()}" in overrides
    assert ("+model.optimizer.fused=true" in overrides) == fused
    # the composed training config takes them
    cfg = compose_config("train", ["model=fomm_vox256", *train_step.PLAIN, *overrides])
    assert cfg.model.channels_last is channels_last


# ------------------------------------------------------------------------------------------------ the guard

# a measuring process as benchmarks/train_step.py --one speaks it: "fit", one line per step, then the result;
# step i sleeps DELAYS[i] seconds
PROTOCOL_CHILD = """
import json, sys, time
delays = json.loads(sys.argv[1])
print(json.dumps({"fit": True}), flush=True)
for i, delay in enumerate(delays):
    time.sleep(delay)
    print(json.dumps({"step": i, "seconds": delay}), flush=True)
print(json.dumps({"median": delays[-1], "first": delays[0], "peak": 1.0, "precision": "32-true"}), flush=True)
"""


def _child(delays: list[float]) -> list[str]:
    return [sys.executable, "-c", PROTOCOL_CHILD, json.dumps(delays)]


def test_the_guard_passes_a_configuration_within_its_limits(train_step: ModuleType) -> None:
    # generous limits: the machine running the tests may be busy
    result = train_step.run_guarded(_child([0.1, 0.1, 0.2, 0.2]), 4, step_limit=15.0, warmup_limit=15.0)
    # warmup is timed by when the parent reads the lines, so only its presence is certain
    assert result["median"] == 0.2 and result["warmup"] > 0 and result["wall"] >= 0.6


@pytest.mark.parametrize("delays, stopped", [([0.1, 60.0, 0.1], "factor"), ([0.1, 0.1, 0.1, 60.0], "factor")])
def test_the_guard_stops_a_slow_warmup_or_a_slow_timed_step(train_step: ModuleType, delays: list[float],
                                                            stopped: str) -> None:
    start = time.perf_counter()
    result = train_step.run_guarded(_child(delays), len(delays), step_limit=1.0, warmup_limit=1.5)
    assert result == {"stopped": stopped}
    assert time.perf_counter() - start < 40  # stopped, not waited for


def test_the_time_limit_stops_a_configuration_without_a_baseline(train_step: ModuleType) -> None:
    start = time.perf_counter()
    assert train_step.run_guarded(_child([60.0]), 1, time_limit=1.0) == {"stopped": "time"}
    assert time.perf_counter() - start < 40


def test_a_failing_configuration_gives_its_last_error_line(train_step: ModuleType) -> None:
    command = [sys.executable, "-c", "import sys; print('first', file=sys.stderr); sys.exit('out of memory')"]
    assert train_step.run_guarded(command, 3, step_limit=1.0) == {"error": "out of memory"}


def test_stopped_and_skipped_rows_keep_the_table_shape(train_step: ModuleType) -> None:
    baseline = {"median": 1.0, "first": 2.0, "peak": 100.0, "precision": "32-true"}
    header = train_step.table_header("cpu")[0]
    for result, text in [({"stopped": "> 5 x fp32"}, "stopped: > 5 x fp32"), ({"skipped": "no time left"}, "skipped"),
                         ({"error": "boom"}, "failed: boom")]:
        line = train_step.row("fomm", "bf16", 2, 64, result, baseline)
        assert text in line and line.count("|") == header.count("|")


@pytest.mark.slow
def test_the_benchmark_stops_a_slow_configuration_and_prints_the_rest(tmp_path: Path) -> None:
    # the real benchmark at a tiny size; the test hook makes channels_last's timed steps 120 s longer
    tiny = ("fomm model.network.kp_detector.block_expansion=4 model.network.generator.block_expansion=4 "
            "model.network.generator.dense_motion.block_expansion=4")
    env = {**__import__("os").environ, "REENACT_BENCH_SLOW_STEP": "channels_last=120"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_step.py"), "--model", tiny,
                             "--batch", "1", "--size", "32", "--steps", "1", "--guard-factor", "3",
                             "--configs", "channels_last", "fused_adam"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| fomm ")]
    assert [line.split("|")[2].strip() for line in rows] == ["fp32", "channels_last", "fused_adam"]
    assert "stopped: > 3 x fp32" in rows[1]
    assert "**" in rows[2] and "stopped" not in rows[2]
    assert time.perf_counter() - start < 120 * 3


# ------------------------------------------------------------------------------------ benchmarks/gpu_check.py


def test_gpu_check_refuses_in_one_line_without_cuda(monkeypatch: pytest.MonkeyPatch, gpu_check: ModuleType,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "report.md"
    assert gpu_check.main(["--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "no CUDA device" in captured.err and not out.exists()
    assert gpu_check.main(["--budget", "0", "--dry-run", "--out", str(out)]) == 2
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "tpu"])


def test_gpu_check_dry_run_writes_every_section(monkeypatch: pytest.MonkeyPatch, gpu_check: ModuleType,
                                                tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.md"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if "skipped: dry run" in line]
    # both models at batch 8 and 32 in every configuration, each row with the header's columns
    assert len(rows) == len(gpu_check.STEP_MODELS) * len(gpu_check.STEP_BATCHES) * len(gpu_check.STEP_CONFIGS)
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert all(row.count("|") == header.count("|") for row in rows)
    assert {"| liveportrait | compile | 32 |", "| fomm_vox256 | bf16 | 8 |"} <= {row[: row.index(" 256 ")]
                                                                              for row in rows}
    for heading in ("## Training step", "## Animation frames/s", "## Training runs"):
        assert heading in text
    assert "trainer=gpu" in text and "trainer.devices=2" in text and "peak GPU MiB" in text


def test_gpu_check_training_commands_compose(gpu_check: ModuleType, tmp_path: Path) -> None:
    for device, tiny in [("cuda", False), ("cpu", True)]:
        plan = gpu_check.plan_for(device, tiny, 2, tmp_path)
        for command in (plan.train_run, plan.ddp):
            if command is None:
                continue
            cfg = compose_config("train", [o for o in command[2:] if not o.startswith("hydra.")])
            assert cfg.trainer.max_steps in (2, 5, 20) and cfg.trainer.limit_val_batches == 0
            assert not cfg.callbacks
    gpu = gpu_check.plan_for("cuda", False, 2, tmp_path)
    assert compose_config("train", [o for o in gpu.train_run[2:] if not o.startswith("hydra.")]).trainer.precision \
        == "bf16-mixed"
    assert gpu_check.plan_for("cuda", False, 1, tmp_path).ddp is None


def test_gpu_check_report_keeps_the_rows_it_has(gpu_check: ModuleType, train_step: ModuleType,
                                                tmp_path: Path) -> None:
    report = gpu_check.Report(tmp_path / "r.md", "GPU check", ["preamble"])
    lines = report.section("Training step", list(train_step.table_header("cuda")))
    baseline = {"median": 0.5, "first": 1.0, "peak": 2048.0, "precision": "32-true"}
    report.add(lines, train_step.row("fomm_vox256", "fp32", 8, 256, baseline, baseline))
    text = (tmp_path / "r.md").read_text()  # written after every row
    assert "| fomm_vox256 | fp32 | 8 | 256 | 32-true | 0.500 | **1.00** | 2,048 (1.00x) | - |" in text
    runs = report.section("Training runs", [])
    report.add(runs, gpu_check.run_row("trainer=gpu", None, "", 12.0, 40.0, 20))
    report.add(runs, gpu_check.run_row("ddp", 1, "x\nRuntimeError: NCCL | error", 3.0, 40.0, 5))
    report.add(runs, gpu_check.run_row("trainer=gpu", 0, "", 31.04, 40.0, 20))
    text = (tmp_path / "r.md").read_text()
    assert "stopped: > 40 s section time" in text and "failed: RuntimeError: NCCL / error" in text
    assert "| trainer=gpu | finished | 31.0 | 20 |" in text
    assert text.index("## Training step") < text.index("## Training runs")
    assert list(tmp_path.iterdir()) == [tmp_path / "r.md"]  # no temporary file left
