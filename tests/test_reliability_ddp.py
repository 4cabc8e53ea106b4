"""A dead DDP rank (issue 28): two gloo processes on the CPU, one killed with SIGKILL mid-epoch. The survivor stops
within a minute with one line naming the dead rank, and the run resumes from its last epoch-end checkpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.configs import TINY_DATA, TINY_TRAINER

REPO = Path(__file__).resolve().parents[1]
DDP = ["trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"]
TINY_RUN = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=1",
            "trainer.max_time=null"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _args(cache_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*TINY_DATA, *TINY_TRAINER, *TINY_RUN, *DDP, "logger=none", f"paths.cache_dir={cache_dir}",
            f"hydra.run.dir={run_dir}", *extra]


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _train_until_epoch_1(cache_dir: Path, run_dir: Path, cwd: Path) -> tuple[subprocess.Popen[str], int]:
    """Start the two-rank run; return it and rank 1's pid once epoch 0's checkpoint is written (epoch 1 running)."""
    process = _start(_args(cache_dir, run_dir, "trainer.max_epochs=1000"), cwd)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert last.is_file(), process.stderr.read()[-3000:] if process.poll() is not None else "no checkpoint"
    ranks = [pid for pid in _children(process.pid) if "train.py" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(ranks) == 1, ranks
    time.sleep(0.3)  # into epoch 1
    return process, ranks[0]


def test_a_killed_rank_stops_the_other_with_one_line_and_the_run_resumes(tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "R"
    process, rank_1 = _train_until_epoch_1(cache_dir, run_dir, tmp_path)
    try:
        os.kill(rank_1, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = process.communicate(timeout=120)
        stopped_after = time.monotonic() - killed
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    assert process.returncode not in (0, None), stderr[-3000:]
    assert stopped_after < 60, f"the surviving rank took {stopped_after:.0f} s"
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: RankDiedError: rank 1 (pid {rank_1}) killed by SIGKILL; rank 0 stopped the run; "
                      f"resume with ckpt_path={run_dir}"], stderr[-3000:]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")

    resumed = _start(_args(cache_dir, run_dir, f"trainer.max_epochs={saved['epoch'] + 2}", f"ckpt_path={run_dir}"),
                     tmp_path)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert final["epoch"] == saved["epoch"] + 1 and final["global_step"] > saved["global_step"]


def test_a_killed_rank_0_stops_rank_1_with_one_line(tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "R"
    process, rank_1 = _train_until_epoch_1(cache_dir, run_dir, tmp_path)
    try:
        os.kill(process.pid, signal.SIGKILL)
        killed = time.monotonic()
        # rank 1 shares rank 0's stderr: the pipe ends when rank 1 does
        stderr = process.stderr.read()
        while _alive(rank_1) and time.monotonic() - killed < 90:
            time.sleep(0.1)
        stopped_after = time.monotonic() - killed
    finally:
        for pid in (process.pid, rank_1):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait()

    assert stopped_after < 60, f"rank 1 took {stopped_after:.0f} s"
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.fullmatch(
        rf"error: RankDiedError: rank 0 \(pid {process.pid}\) died; rank 1 stopped the run; resume with "
        rf"ckpt_path={re.escape(str(run_dir))}", errors[0]), stderr[-3000:]


def test_a_rank_whose_main_thread_never_fails_is_ended_by_its_watchdog() -> None:
    """A survivor that is not in a collective (so nothing fails) still stops, with the same line, after the grace."""
    script = (
        "import subprocess, sys, time\n"
        "from reenact.utils.rank_watchdog import _Watchdog\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "_Watchdog(0, [child], None, poll=0.1, grace=1.0, hint='; resume with ckpt_path=R').start()\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        child = int(process.stdout.readline())
        os.kill(child, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert time.monotonic() - killed < 15
    assert stderr.strip().splitlines() == [
        f"error: RankDiedError: rank 1 (pid {child}) killed by SIGKILL; rank 0 stopped the run; "
        "resume with ckpt_path=R"]
