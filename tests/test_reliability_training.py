"""Training under faults: NaN, divergence, failing checkpoint writes, SIGTERM, resuming with data-loader workers."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import Dataset

from reenact.callbacks.checkpointing import AtomicCheckpointIO
from reenact.cli.train import run
from reenact.data.datamodule import ReenactDataModule
from reenact.data.sampling import EpochSampler
from reenact.errors import USER_ERRORS
from reenact.utils.finite import NonFiniteError, nonfinite_tensors
from tests.helpers.configs import TINY_DATA, TINY_TRAINER, train_config

REPO = Path(__file__).resolve().parents[1]
HERE = "tests.test_reliability_training"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


class PoisonAt(Callback):
    """Fault injection: put NaN/inf into the model at one (epoch, batch), as a diverging optimiser would.

    ``target="weights"`` fills every network parameter before the batch's forward pass (the loss turns NaN);
    ``target="batchnorm"`` sets every BatchNorm running variance to inf after the batch (the training loss, which
    uses batch statistics, stays finite: the silent kind of divergence).
    """

    def __init__(self, epoch: int, batch: int, target: str = "weights") -> None:
        self.epoch, self.batch, self.target = epoch, batch, target

    def _hit(self, trainer: Trainer, batch_idx: int) -> bool:
        return trainer.current_epoch == self.epoch and batch_idx == self.batch

    @torch.no_grad()
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int) -> None:
        if self.target == "weights" and self._hit(trainer, batch_idx):
            for parameter in pl_module.network.parameters():
                parameter.fill_(float("nan"))

    @torch.no_grad()
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        if self.target == "batchnorm" and self._hit(trainer, batch_idx):
            for module in pl_module.network.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.running_var.fill_(float("inf"))


def poison(epoch: int, batch: int, target: str) -> list[str]:
    return [f"+callbacks.poison._target_={HERE}.PoisonAt", f"+callbacks.poison.epoch={epoch}",
            f"+callbacks.poison.batch={batch}", f"+callbacks.poison.target={target}"]


def _cli(args: list[str], cwd: Path, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


# ---------------------------------------------------------------------------------------------- item 3: NaN loss
def test_nan_loss_stops_with_one_line_and_keeps_the_last_finite_checkpoint(tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY_DATA, *TINY_TRAINER, "trainer.max_epochs=2", f"paths.cache_dir={cache_dir}",
            f"hydra.run.dir={run_dir}", "logger=none", *poison(1, 1, "weights")]
    process = _cli(args, tmp_path)
    _, stderr = process.communicate(timeout=600)

    assert process.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.match(r"error: NonFiniteError: non-finite loss at epoch 1 batch 1: \w+=nan",
                                         errors[0]), stderr[-3000:]
    last = _load(run_dir / "checkpoints" / "last.ckpt")
    # the end of epoch 0: 2 batches x 2 optimisers (keypoint detector, generator); epoch 1 batch 0 would add 2
    assert (last["epoch"], last["global_step"]) == (0, 4), "last.ckpt must stay the end of epoch 0"
    assert nonfinite_tensors(last["state_dict"]) == []


# ------------------------------------------------------------------------------------- item 4: silent divergence
def test_nonfinite_batchnorm_statistics_are_never_saved(tmp_path: Path, cache_dir: Path) -> None:
    cfg = train_config(tmp_path, cache_dir, ["trainer.max_epochs=2", "logger=none", *poison(1, 1, "batchnorm")])
    with pytest.raises(NonFiniteError, match=r"non-finite weights at epoch 1 .*running_var.*not saving"):
        run(cfg)
    assert issubclass(NonFiniteError, USER_ERRORS)  # reported by the entry point as one line, exit code 2
    checkpoints = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert tmp_path / "checkpoints" / "last.ckpt" in checkpoints
    for path in checkpoints:
        checkpoint = _load(path)
        assert checkpoint["epoch"] == 0 and nonfinite_tensors(checkpoint["state_dict"]) == [], path


def test_divergence_without_checkpoint_callbacks_fails_at_the_end(tmp_path: Path, cache_dir: Path) -> None:
    # the visualiser is left out too: it checks the weights at each validation (tests/test_reliability_messages.py)
    no_checkpoints = ["~callbacks.model_checkpoint", "~callbacks.last_checkpoint",
                      "+trainer.enable_checkpointing=false", "~callbacks.reconstruction_visualizer"]
    cfg = train_config(tmp_path, cache_dir, [*no_checkpoints, "logger=none", *poison(0, 1, "batchnorm")])
    with pytest.raises(NonFiniteError, match="the weights at the end of training"):
        run(cfg)
    assert not (tmp_path / "metrics.json").exists()


# ------------------------------------------------------------------------------ item 6: atomic checkpoint writes
def test_failed_checkpoint_write_keeps_the_previous_file_and_no_temporary(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    cfg = train_config(tmp_path, cache_dir)
    checkpoint_io = instantiate(cfg.trainer).strategy.checkpoint_io
    assert isinstance(checkpoint_io, AtomicCheckpointIO), "the trainer config must install the atomic writer"

    target = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, target)

    def full_disk(obj: object, f: object) -> None:
        f.write(b"\0" * 4096)  # part of the file reaches the disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        checkpoint_io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, target)
    monkeypatch.undo()

    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"], "no temporary may be left behind"
    assert _load(target)["epoch"] == 0
    assert list(system_tmp.iterdir()) == [], "checkpoint saves must not stage files in the system temp folder"
    with pytest.raises(NonFiniteError, match="refusing to write"):
        checkpoint_io.save_checkpoint({"state_dict": {"w": torch.tensor([float("inf")])}}, target)
    assert _load(target)["epoch"] == 0


# ------------------------------------------------------------------------- item 7: resume with data-loader workers
class _Keys(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, key: int) -> int:
        return key


def test_training_loader_draws_indices_after_set_epoch_with_workers() -> None:
    """Lightning creates the loader's iterator before it calls set_epoch, and keeps it for a resumed epoch."""
    datamodule = ReenactDataModule(root="unused", num_workers=2)
    sampler = EpochSampler(8, seed=3)
    loader = datamodule._loader(_Keys(), 2, False, sampler)
    iterator = iter(loader)
    sampler.set_epoch(1)
    assert next(iterator).tolist() == list(sampler)[:2]


# --------------------------------------------------------------------------------------------- item 9: SIGTERM
def test_sigterm_saves_prints_how_to_resume_and_exits_nonzero(tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    # Workers on (as users train) and many epochs: the signal lands mid-training, in the whole process group.
    args = [*TINY_DATA, *TINY_TRAINER, "data.num_workers=2", "trainer.max_epochs=1000",
            "trainer.check_val_every_n_epoch=1000", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    process = _cli(args, tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert last.is_file(), "the first epoch's checkpoint never appeared"
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted at epoch")]
    assert len(lines) == 1 and lines[0].endswith(f"; resume with ckpt_path={run_dir}"), stderr[-3000:]
    epoch = int(re.match(r"interrupted at epoch (\d+);", lines[0]).group(1))
    saved = _load(last)
    # A signal that lands before the epoch's first step finds nothing new to save: Lightning does not save twice
    # at one global step, so last.ckpt is the previous epoch's end, which resumes at this same epoch.
    assert epoch >= 1 and saved["epoch"] in (epoch - 1, epoch)

    _, objects = run(train_config(tmp_path / "resumed", cache_dir, [f"trainer.max_epochs={epoch + 1}",
                                                                     f"ckpt_path={run_dir}", "logger=none"]))
    assert objects["trainer"].current_epoch == epoch + 1
    assert objects["trainer"].global_step > saved["global_step"]
