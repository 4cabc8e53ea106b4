"""A learning-rate schedule that ends within the run's time cap (``trainer.max_time``).

A schedule is sized in epochs, and an epoch's cost depends on the data and the machine: the 300-epoch cosine of
``make train`` takes 10 minutes on one 2-core VM and 80 on a slower one, and a folder of real clips has more
batches per epoch than the synthetic set. Cut by the cap, such a run stops at a high learning rate, before the late,
low-rate epochs that sharpen the reconstruction.

:class:`FitScheduleToTimeCap` measures the run's own pace over its first epochs (training and validation, as the
cap counts them), then, once, compresses every :class:`~reenact.tasks.schedules.EpochSchedule` so that it ends
within the remaining time (a cosine reaches 0, a multistep's milestones scale by the same ratio) and ends the run
there (``max_epochs``), and says so in one line. A constant rate has nothing to fit: the line only says where the
cap will stop the run. ``mode: warn`` only says where the cap will cut the schedule.

The decision is made once and saved in the checkpoint, so a resumed run follows the same curve (and resumes the
time already spent, as Lightning's ``Timer`` does). Two fresh runs of one config may decide differently, since the
pace is measured: the decision line gives the fitted length, and ``model.scheduler.epochs=N trainer.max_epochs=N``
reproduces it without a cap.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Timer

from reenact.tasks.schedules import EpochSchedule

log = logging.getLogger(__name__)

MODES = ("fit", "warn", "off")


class FitScheduleToTimeCap(Callback):
    """Fit the epoch schedules to ``trainer.max_time`` (see the module docstring).

    Args:
        mode: ``fit`` (compress the schedule and end the run with it), ``warn`` (one line only) or ``off``.
        min_epochs: epochs measured before deciding (the first one carries start-up costs).
        decide_by: the fraction of the cap after which the decision is made even if no validation ran yet
            (validation is then assumed to cost as much as a training epoch).
        margin: the fraction of the cap kept free (timing noise, the final checkpoint).
    """

    def __init__(self, mode: str = "fit", min_epochs: int = 2, decide_by: float = 0.2, margin: float = 0.05) -> None:
        if mode not in MODES:
            raise ValueError(f"callbacks.schedule_budget.mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if not (isinstance(min_epochs, int) and min_epochs >= 1):
            raise ValueError(f"callbacks.schedule_budget.min_epochs must be a positive integer, got {min_epochs!r}")
        if not 0.0 < decide_by < 1.0 or not 0.0 <= margin < 0.5:
            raise ValueError("callbacks.schedule_budget: decide_by must lie in (0, 1) and margin in [0, 0.5)")
        self.mode = mode
        self.min_epochs = min_epochs
        self.decide_by = decide_by
        self.margin = margin
        # the decision (saved in checkpoints): the run's epochs after fitting and the planned length it replaced
        self.fitted_epochs: int | None = None
        self.planned_epochs: int | None = None
        self.decided = False
        self._train_seconds: list[float] = []  # per training epoch, validation excluded
        self._val_seconds: list[float] = []
        self._epoch_start = 0.0
        self._val_start = 0.0
        self._val_in_epoch = 0.0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"decided": self.decided, "fitted_epochs": self.fitted_epochs, "planned_epochs": self.planned_epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.decided = bool(state_dict.get("decided", False))
        self.fitted_epochs = state_dict.get("fitted_epochs")
        self.planned_epochs = state_dict.get("planned_epochs")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _timer(trainer: Trainer) -> Timer | None:
        for callback in trainer.callbacks:
            if isinstance(callback, Timer) and callback._duration is not None:
                return callback
        return None

    @staticmethod
    def _schedules(pl_module: LightningModule) -> list[EpochSchedule]:
        schedulers = pl_module.lr_schedulers()
        if schedulers is None:
            return []
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        return [s for s in schedulers if isinstance(s, EpochSchedule)]

    def _planned_length(self, trainer: Trainer, pl_module: LightningModule) -> int:
        max_epochs = trainer.fit_loop.max_epochs if trainer.fit_loop.max_epochs is not None else -1
        lengths = [s.planned_length(max_epochs) for s in self._schedules(pl_module)]
        return max(lengths) if lengths else max_epochs

    def _apply(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Compress the schedules to ``fitted_epochs`` and end the run there (a decision made now or restored)."""
        assert self.fitted_epochs is not None
        max_epochs = trainer.fit_loop.max_epochs if trainer.fit_loop.max_epochs is not None else -1
        fitted = [s.fit_to(self.fitted_epochs, max_epochs) for s in self._schedules(pl_module)]
        if any(fitted):
            trainer.fit_loop.max_epochs = self.fitted_epochs

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.mode == "off" or self._timer(trainer) is None:
            return
        if self.decided:
            if self.fitted_epochs is not None and self.mode == "fit":
                self._apply(trainer, pl_module)
                log.info("schedule fitted to the time cap: %d epochs (from the checkpoint)", self.fitted_epochs)
            return
        log.info(
            "trainer.max_time is set: the learning-rate schedule is %s after %d+ epochs of measured pace",
            "fitted to it" if self.mode == "fit" else "checked against it",
            self.min_epochs,
        )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = time.monotonic()
        self._val_in_epoch = 0.0

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val_start = time.monotonic()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        seconds = time.monotonic() - self._val_start
        self._val_seconds.append(seconds)
        self._val_in_epoch += seconds

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        timer = self._timer(trainer)
        if self.mode == "off" or timer is None or self.decided:
            return
        self._train_seconds.append(time.monotonic() - self._epoch_start - self._val_in_epoch)
        epochs_done = trainer.current_epoch + 1
        elapsed, cap = timer.time_elapsed(), float(timer._duration)
        if len(self._train_seconds) < self.min_epochs or (not self._val_seconds and elapsed < self.decide_by * cap):
            return
        total = self._predict_total(trainer, epochs_done, elapsed, cap)
        total = int(trainer.strategy.broadcast(total, src=0))  # every rank compresses its schedule identically
        self.decided = True
        planned = self._planned_length(trainer, pl_module)
        if planned < 0 or total >= planned:
            log.info("the time cap leaves room for the whole schedule (%d epochs; about %d fit)", planned, total)
            return
        per_epoch = (cap - elapsed) / max(total - epochs_done, 1)
        if self.mode == "warn":
            log.warning(
                "trainer.max_time %s will cut the learning-rate schedule at about epoch %d of %d (%.1f s per epoch)",
                _clock(cap), total, planned, per_epoch,
            )
            return
        self.fitted_epochs, self.planned_epochs = total, planned
        schedules = self._schedules(pl_module)
        self._apply(trainer, pl_module)
        if any(s.kind != "constant" for s in schedules):
            log.info(
                "trainer.max_time %s at about %.1f s per epoch: learning-rate schedule fitted to %d epochs (of %d), "
                "so that it ends within the cap (reproduce without the cap: model.scheduler.epochs=%d "
                "trainer.max_epochs=%d)",
                _clock(cap), per_epoch, total, planned, total, total,
            )
        else:
            log.info(
                "trainer.max_time %s will stop training at about epoch %d of %d (constant rate: nothing to fit)",
                _clock(cap), total, planned,
            )

    def _predict_total(self, trainer: Trainer, epochs_done: int, elapsed: float, cap: float) -> int:
        """The number of epochs (done and to come) that end, with their validations, within the cap."""
        steady = self._train_seconds[1:] if len(self._train_seconds) > 1 else self._train_seconds
        train_epoch = sum(steady) / len(steady)
        val_every = trainer.check_val_every_n_epoch or 1
        if trainer.limit_val_batches == 0:
            val_cost = 0.0
        elif self._val_seconds:
            val_cost = max(self._val_seconds)
        else:  # not seen yet: assume a validation costs a training epoch
            val_cost = train_epoch
        per_epoch = train_epoch + val_cost / val_every
        # the last epoch is validated (the schedule's end, or the entry point's final validation)
        budget = cap * (1.0 - self.margin) - elapsed - val_cost
        return epochs_done + max(0, math.floor(budget / per_epoch))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
