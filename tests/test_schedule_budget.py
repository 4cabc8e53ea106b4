"""A time-capped run's learning-rate schedule ends within the cap (reenact.callbacks.schedule_budget).

The runs below use a fake clock that advances one second per training batch and half a second per validation, so
that the pace, and so the decision, is the same on every machine; the real-clock behaviour is measured by
``make train`` (experiments/2026-12-01_schedule_budget.md).
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch.callbacks.timer as lightning_timer
import pytest
import torch
from lightning.pytorch import Callback

from reenact.callbacks import schedule_budget
from reenact.callbacks.schedule_budget import FitScheduleToTimeCap
from reenact.entrypoints.train import run
from reenact.tasks.schedules import EpochSchedule
from tests.helpers.configs import train_config

CAP_SECONDS = 12
BATCH_SECONDS = 1.0
VALIDATION_SECONDS = 0.5


class FakeClock:
    """Stands in for the ``time`` module of the timer and of the callback."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


CLOCK = FakeClock()


class AdvanceClock(Callback):
    """Added to the run's callbacks by its config: one batch, one fake second."""

    def on_train_batch_end(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        CLOCK.now += BATCH_SECONDS

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        CLOCK.now += VALIDATION_SECONDS


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def capped_run(output_dir: Path, cache_dir: Path, batches_per_epoch: int, monkeypatch: pytest.MonkeyPatch,
               mode: str = "fit") -> tuple[dict, float]:
    monkeypatch.setattr(lightning_timer, "time", CLOCK)
    monkeypatch.setattr(schedule_budget, "time", CLOCK)
    overrides = [
        "data.frame_size=32", "trainer.max_epochs=300", f"trainer.limit_train_batches={batches_per_epoch}",
        "trainer.check_val_every_n_epoch=2", "trainer.limit_val_batches=1", "data.val_max_frames=4",
        f"trainer.max_time=00:00:00:{CAP_SECONDS:02d}", "model.scheduler.kind=cosine",
        "callbacks.reconstruction_visualizer.every_n_epochs=1000", f"callbacks.schedule_budget.mode={mode}",
        f"+callbacks.fake_clock._target_={__name__}.AdvanceClock",
    ]
    start = CLOCK.now
    _, objects = run(train_config(output_dir, cache_dir, overrides))
    return objects, CLOCK.now - start


def final_rate(output_dir: Path) -> float:
    state = torch.load(output_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return state["optimizer_states"][0]["param_groups"][0]["lr"]


def budget_state(output_dir: Path) -> dict:
    state = torch.load(output_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return next(v for k, v in state["callbacks"].items() if "FitScheduleToTimeCap" in k)


def test_the_schedule_ends_inside_the_cap_with_twice_the_batches_per_epoch(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    epochs = {}
    for batches in (1, 2):
        output_dir = tmp_path / f"batches{batches}"
        objects, seconds = capped_run(output_dir, cache_dir, batches, monkeypatch)
        trainer, callback = objects["trainer"], next(
            c for c in objects["trainer"].callbacks if isinstance(c, FitScheduleToTimeCap))
        assert callback.decided and callback.fitted_epochs is not None and callback.planned_epochs == 300
        # the run ended with its fitted schedule, at a learning rate of 0, before the cap stopped it
        assert trainer.current_epoch == callback.fitted_epochs
        assert final_rate(output_dir) == pytest.approx(0.0, abs=1e-12)
        assert seconds <= CAP_SECONDS
        assert budget_state(output_dir)["fitted_epochs"] == callback.fitted_epochs  # a resumed run reuses it
        epochs[batches] = callback.fitted_epochs
    # twice the batches per epoch: about half the epochs, each schedule still complete
    assert epochs[2] < epochs[1]
    assert 1.5 <= epochs[1] / epochs[2] <= 2.5


def test_warn_mode_only_says_where_the_cap_cuts_the_schedule(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="reenact.callbacks.schedule_budget"):
        objects, _ = capped_run(tmp_path, cache_dir, 2, monkeypatch, mode="warn")
    lines = [r.getMessage() for r in caplog.records if "will cut the learning-rate schedule" in r.getMessage()]
    assert len(lines) == 1 and "of 300" in lines[0]
    assert final_rate(tmp_path) > 0.0  # the cap stopped the run mid-schedule, as it said
    assert objects["trainer"].current_epoch < 300


def test_fitting_compresses_cosine_and_multistep_and_leaves_a_constant_rate() -> None:
    def schedule(**kwargs) -> EpochSchedule:  # noqa: ANN003
        return EpochSchedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), **kwargs)

    cosine = schedule(kind="cosine", epochs=300)
    assert cosine.planned_length(300) == 300 and cosine.planned_length(100) == 100
    assert cosine.fit_to(30, 300)
    assert cosine.factor(30) == pytest.approx(0.0, abs=1e-12) and cosine.factor(15) == pytest.approx(0.5)
    multistep = schedule(kind="multistep", milestones=[60, 90], gamma=0.1)
    assert multistep.fit_to(50, 100) and multistep.milestones == [30, 45]
    assert multistep.fit_to(20, 100) and multistep.milestones == [12, 18]  # always from the configured milestones
    assert not schedule(kind="constant").fit_to(10, 100)
    assert "planned_epochs" not in cosine.state_dict()  # the curve comes from the config, not the checkpoint


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="mode: expected one of fit, warn, off"):
        FitScheduleToTimeCap(mode="stretch")
    with pytest.raises(ValueError, match="min_epochs must be a positive integer"):
        FitScheduleToTimeCap(min_epochs=0)
