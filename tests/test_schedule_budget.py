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
from reenact.cli.train import run
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
        # the run ended with its fitted schedule (refitted at most by the epochs that the first, conservative
        # prediction left over), at a learning rate of 0, before the cap stopped it
        length = callback.refits[-1][1] if callback.refits else callback.fitted_epochs
        assert trainer.current_epoch == length <= callback.fitted_epochs + 2
        assert final_rate(output_dir) == pytest.approx(0.0, abs=1e-12)
        assert seconds <= CAP_SECONDS
        assert budget_state(output_dir)["fitted_epochs"] == callback.fitted_epochs  # a resumed run reuses it
        epochs[batches] = length
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
    with pytest.raises(ValueError, match="refit_at must list fractions of the cap"):
        FitScheduleToTimeCap(refit_at=[0.5, 1.5])


class SlowStartClock(Callback):
    """A machine busy at the start: the first epochs' batches take four times as long as the later ones."""

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        CLOCK.now += SLOW_BATCH_SECONDS if trainer.current_epoch < SLOW_EPOCHS else BATCH_SECONDS / 2

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        CLOCK.now += VALIDATION_SECONDS


SLOW_BATCH_SECONDS = 2.0
SLOW_EPOCHS = 3


class RecordRates(Callback):
    """Keeps the learning rate of every training epoch (read by the test below)."""

    rates: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        RecordRates.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_a_pace_that_changes_refits_the_rest_of_the_schedule_without_a_jump(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(lightning_timer, "time", CLOCK)
    monkeypatch.setattr(schedule_budget, "time", CLOCK)
    RecordRates.rates = []
    cap = 40
    overrides = [
        "data.frame_size=32", "trainer.max_epochs=300", "trainer.limit_train_batches=1",
        "trainer.check_val_every_n_epoch=2", "trainer.limit_val_batches=1", "data.val_max_frames=4",
        f"trainer.max_time=00:00:00:{cap:02d}", "model.scheduler.kind=cosine",
        "callbacks.reconstruction_visualizer.every_n_epochs=1000",
        f"+callbacks.fake_clock._target_={__name__}.SlowStartClock",
        f"+callbacks.record_rates._target_={__name__}.RecordRates",
    ]
    start = CLOCK.now
    with caplog.at_level("INFO", logger="reenact.callbacks.schedule_budget"):
        _, objects = run(train_config(tmp_path, cache_dir, overrides))
    seconds = CLOCK.now - start
    trainer = objects["trainer"]
    callback = next(c for c in trainer.callbacks if isinstance(c, FitScheduleToTimeCap))
    # the slow start sized the first fit; the faster pace measured later lengthened the rest of the schedule
    assert callback.fitted_epochs is not None and callback.refits
    assert callback.refits[-1][1] > callback.fitted_epochs
    assert any("schedule is refitted to end at epoch" in r.getMessage() for r in caplog.records)
    # it still ends at a rate of 0 inside the cap, with the refitted length, and used most of the cap
    assert trainer.current_epoch == callback.refits[-1][1]
    assert final_rate(tmp_path) == pytest.approx(0.0, abs=1e-12)
    assert 0.75 * cap <= seconds <= cap
    # the rate never jumps up: each refit keeps the rate it had reached and stretches the rest of the cosine
    rates = RecordRates.rates
    assert all(later <= earlier + 1e-12 for earlier, later in zip(rates, rates[1:], strict=False))
    # a resumed run makes the same decisions again from the checkpoint
    assert budget_state(tmp_path)["refits"] == [list(r) for r in callback.refits]


def test_refitting_keeps_the_rate_reached_and_reaches_the_end_at_the_new_length() -> None:
    def schedule(**kwargs) -> EpochSchedule:  # noqa: ANN003
        return EpochSchedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), **kwargs)

    cosine = schedule(kind="cosine", epochs=300, stop_at_end=True)
    cosine.fit_to(40, 300)
    before = [cosine.factor(e) for e in range(41)]
    cosine.refit_from(10, 100, 300)
    assert [cosine.factor(e) for e in range(11)] == before[:11]  # the epochs run so far keep their rates
    assert cosine.factor(100) == pytest.approx(0.0, abs=1e-12) and cosine.factor(99) > 0.0
    assert cosine.ends_training(99) and not cosine.ends_training(98)
    # halfway through the stretched rest, the curve is halfway between where it was and its end
    assert cosine.curve_epoch(55) == pytest.approx(10 + (40 - 10) / 2)
    cosine.refit_from(50, 70, 300)  # a second refit, now compressing
    assert cosine.factor(70) == pytest.approx(0.0, abs=1e-12) and cosine.end_epoch == 70
    assert cosine.curve_epoch(50) == pytest.approx(10 + (50 - 10) * 30 / 90)

    multistep = schedule(kind="multistep", milestones=[60, 90], gamma=0.1)
    multistep.fit_to(50, 100)  # milestones at 30 and 45
    multistep.refit_from(20, 100, 100)  # from epoch 20, the remaining 30 fitted epochs take 80
    assert multistep.factor(19) == 1.0
    # fitted epoch 30 now falls at 20 + 10 * 80 / 30 = 46.7, fitted 45 at 20 + 25 * 80 / 30 = 86.7
    assert multistep.factor(46) == 1.0 and multistep.factor(47) == pytest.approx(0.1)
    assert multistep.factor(86) == pytest.approx(0.1) and multistep.factor(87) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="must come after epoch"):
        multistep.refit_from(30, 30, 100)
    assert not schedule(kind="constant").refit_from(5, 10, 100)
