"""Run-level faults (issue 28): two runs in one folder, interrupts at every point of an epoch, resuming into the
run's own folder, a full disk, and the temporaries a kill leaves behind. Each test starts ``train.py`` as a process,
as users do, at tiny sizes (64 px synthetic clips, 2-3 batches per epoch)."""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from tests.helpers.configs import TINY_DATA, TINY_TRAINER

REPO = Path(__file__).resolve().parents[1]
HERE = "tests.test_reliability_runs"
# the tiny-run flags
TINY_RUN = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=1",
            "trainer.max_time=null"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _args(cache_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*TINY_DATA, *TINY_TRAINER, *TINY_RUN, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}", *extra]


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    process = _start(args, cwd)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def _train_epochs(run_dir: Path) -> list[int]:
    """The epoch of every row of csv/metrics.csv that carries the epoch's training loss."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return [int(float(row["epoch"])) for row in csv.DictReader(file) if row.get("train/loss_epoch")]


# ------------------------------------------------------------------------- item 1: one live run per folder
def test_two_runs_started_together_in_one_folder_one_is_refused(tmp_path: Path, cache_dir: Path) -> None:
    # for i in 1 2; do python train.py hydra.run.dir=R seed=$i trainer.max_epochs=$((i+1)) & done; wait
    run_dir = tmp_path / "R"
    processes = {i: _start(_args(cache_dir, run_dir, f"seed={i}", f"trainer.max_epochs={i + 1}"), tmp_path)
                 for i in (1, 2)}
    done = {i: p.communicate(timeout=300) for i, p in processes.items()}
    codes = {i: p.returncode for i, p in processes.items()}

    assert sorted(codes.values()) == [0, 2], {i: done[i][1][-2000:] for i in done}
    winner = next(i for i, code in codes.items() if code == 0)
    loser = 3 - winner
    errors = _errors(done[loser][1])
    assert len(errors) == 1 and f"{run_dir} is in use by a training run that is still running" in errors[0], \
        done[loser][1][-2000:]
    assert "Traceback" not in done[loser][1]
    # nothing of the refused run is in the folder: its config, its epochs, its checkpoints
    assert f"seed: {winner}" in (run_dir / ".hydra" / "config.yaml").read_text()
    assert _train_epochs(run_dir) == list(range(winner + 1))
    assert _load(run_dir / "checkpoints" / "last.ckpt")["epoch"] == winner


def test_a_live_claim_refuses_at_once_and_a_dead_runs_claim_does_not_block(tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "R"
    run_dir.mkdir()
    holder = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
              "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('held', flush=True); "
              "time.sleep(600)")
    process = subprocess.Popen([sys.executable, "-c", holder, str(run_dir / ".run.lock")], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        started = time.monotonic()
        refused = _train(_args(cache_dir, run_dir), tmp_path)
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert _errors(refused.stderr) == [
            f"error: RunDirInUseError: hydra.run.dir: {run_dir} is in use by a training run that is still running "
            f"(pid {process.pid}); wait for it to end or choose another folder"], refused.stderr[-2000:]
        assert time.monotonic() - started < 60
        assert sorted(p.name for p in run_dir.iterdir()) == [".run.lock"], "a refused run writes nothing"
    finally:
        process.kill()  # kill -9: the lock file stays, its flock dies with the process
        process.wait()
    assert (run_dir / ".run.lock").is_file()
    done = _train(_args(cache_dir, run_dir), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


# -------------------------------------------------------- item 5 and "also seen": resuming into the run's folder
def test_resume_into_its_own_folder_appends_metrics_and_removes_stale_temporaries(
    tmp_path: Path, cache_dir: Path
) -> None:
    run_dir = tmp_path / "R"
    first = _train(_args(cache_dir, run_dir, "trainer.max_epochs=2"), tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert _train_epochs(run_dir) == [0, 1]
    # what a kill -9 during a checkpoint write leaves (reenact.callbacks.checkpointing.atomic_torch_save's name)
    stale = run_dir / "checkpoints" / ".last.ckpt.4242.0123abcd.tmp"
    stale.write_bytes(b"\0" * 1024)

    resumed = _train(_args(cache_dir, run_dir, "trainer.max_epochs=3", f"ckpt_path={run_dir}"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _train_epochs(run_dir) == [0, 1, 2], "the rows of the epochs before the resume must stay"
    assert not stale.exists()
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------- item 4: interrupts anywhere in an epoch
class SigtermAt(Callback):
    """Fault injection: send this process SIGTERM at one point of one epoch, as a scheduler would."""

    def __init__(self, epoch: int, where: str, batch: int = 0) -> None:
        self.epoch, self.where, self.batch = epoch, where, batch

    def _fire(self, trainer: Trainer, where: str, batch_idx: int = 0) -> None:
        if trainer.current_epoch == self.epoch and where == self.where and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fire(trainer, "start")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        self._fire(trainer, "middle", batch_idx)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fire(trainer, "end")


EXACT = ["trainer.max_epochs=3", "trainer.limit_train_batches=3", "data.batch_size=2", "logger=none",
         "trainer.deterministic=true"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, torch.Tensor]:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    done = _train(_args(cache_dir, run_dir, *EXACT), run_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    return _load(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


# The middle case trains with two data-loader workers (the uninterrupted run has none): samples depend only on
# (seed, sample key), not on the worker layout.
@pytest.mark.parametrize(("where", "batch", "workers"), [("start", 0, 0), ("middle", 1, 2), ("end", 0, 0)])
def test_an_interrupt_anywhere_in_an_epoch_resumes_bit_exactly(
    tmp_path: Path, cache_dir: Path, uninterrupted: dict[str, torch.Tensor], where: str, batch: int, workers: int
) -> None:
    run_dir = tmp_path / "R"
    inject = [f"+callbacks.sigterm._target_={HERE}.SigtermAt", "+callbacks.sigterm.epoch=1",
              f"+callbacks.sigterm.where={where}", f"+callbacks.sigterm.batch={batch}", f"data.num_workers={workers}"]
    interrupted = _train(_args(cache_dir, run_dir, *EXACT, *inject), tmp_path)
    assert interrupted.returncode == 128 + signal.SIGTERM, interrupted.stderr[-2000:]
    lines = [line for line in interrupted.stderr.splitlines() if line.startswith("interrupted at epoch")]
    assert len(lines) == 1 and lines[0].endswith(f"resume with ckpt_path={run_dir}"), interrupted.stderr[-2000:]
    assert "was raised with message" not in interrupted.stderr, "Lightning's own line must not precede ours"
    saved = _load(run_dir / "checkpoints" / "last.ckpt")
    # the resume point is always an epoch end: the end of epoch 1 when the signal came at its end, else epoch 0's
    assert saved["epoch"] == (1 if where == "end" else 0)
    assert saved["global_step"] == 2 * 3 * (saved["epoch"] + 1)  # 3 batches x 2 optimisers per epoch

    resumed = _train(_args(cache_dir, run_dir, *EXACT, f"data.num_workers={workers}", f"ckpt_path={run_dir}"),
                     tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = _load(run_dir / "checkpoints" / "last.ckpt")
    assert final["epoch"] == 2
    different = [k for k, v in uninterrupted.items() if not torch.equal(v, final["state_dict"][k])]
    assert different == [], f"{len(different)} tensors differ from the uninterrupted run, e.g. {different[:3]}"


# ------------------------------------------------------------------------------------- item 6: a full disk
class DiskFullAt(Callback):
    """Fault injection: from one epoch's end on, every ``torch.save`` writes 4 KiB and fails with ENOSPC.

    Runs before the checkpoint callbacks' epoch-end save (Lightning calls those last), after the best checkpoint
    of that epoch's validation was written: the state a disk that fills between two writes leaves.
    """

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch != self.epoch:
            return

        def full_disk(obj: object, f: object, *args: object, **kwargs: object) -> None:
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")

        torch.save = full_disk


def test_a_full_disk_is_one_line_and_the_resume_names_the_newest_complete_checkpoint(
    tmp_path: Path, cache_dir: Path
) -> None:
    run_dir = tmp_path / "R"
    inject = [f"+callbacks.disk_full._target_={HERE}.DiskFullAt", "+callbacks.disk_full.epoch=0"]
    full = _train(_args(cache_dir, run_dir, "trainer.max_epochs=3", "logger=none", *inject), tmp_path)
    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    errors = _errors(full.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: DiskFullError: No space left on the disk at /"), errors
    assert f"while writing {run_dir / 'checkpoints' / 'last.ckpt'}" in errors[0]
    assert errors[0].endswith(f"free some space and resume with ckpt_path={run_dir}")
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["best_epoch0000.ckpt"], "no last.ckpt and no temporary may be left"

    resumed = _train(_args(cache_dir, run_dir, "trainer.max_epochs=3", "logger=none", f"ckpt_path={run_dir}"),
                     tmp_path)
    assert resumed.returncode == 2
    best, last = run_dir / "checkpoints" / "best_epoch0000.ckpt", run_dir / "checkpoints" / "last.ckpt"
    assert _errors(resumed.stderr) == [
        f"error: ConfigError: ckpt_path: no last.ckpt in {run_dir} (looked for {last});"
        f" the newest complete checkpoint of the run is {best}: pass ckpt_path={best}"], resumed.stderr[-2000:]
