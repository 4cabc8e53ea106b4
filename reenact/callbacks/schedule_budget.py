"""A learning-rate schedule that ends within the run's time cap (``trainer.max_time``).

A schedule is sized in epochs, and an epoch's cost depends on the data and the machine: the 300-epoch cosine of
``make train`` takes 10 minutes on one 2-core VM and 80 on a slower one, and a folder of real clips has more
batches per epoch than the synthetic set. Cut by the cap, such a run stops at a high learning rate, before the late,
low-rate epochs that sharpen the reconstruction.

:class:`FitScheduleToTimeCap` measures the run's own pace over its first epochs (training and validation, as the
cap counts them), then compresses every :class:`~reenact.tasks.schedules.EpochSchedule` so that it ends within the
remaining time (a cosine reaches 0, a multistep's milestones scale by the same ratio) and ends the run there
(``max_epochs``), and says so in one line. A constant rate has nothing to fit: the line only says where the cap
will stop the run. ``mode: warn`` only says where the cap will cut the schedule.

A shared machine's pace changes: a run measured while a neighbour was busy would otherwise keep a schedule sized
for that pace and end long before the cap. So the pace is measured again over the epochs since the last decision
when the run passes each fraction of the cap in ``refit_at``; where the predicted length differs from the current
one by more than ``refit_tolerance``, the rest of the schedule is refitted from the next epoch on (the rate there is
kept and the remaining curve is stretched or compressed onto the new end), never beyond the configured length.

Every decision is saved in the checkpoint, so a resumed run follows the same curve (and resumes the time already
spent, as Lightning's ``Timer`` does). Two fresh runs of one config may decide differently, since the pace is
measured: each decision line gives the fitted length, and ``model.scheduler.epochs=N trainer.max_epochs=N``
reproduces a run that was fitted once without a cap.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
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
        refit_at: the fractions of the cap at which the pace is measured again and the rest of the schedule
            refitted where it changed (``[]``: decide once).
        refit_tolerance: the relative change of the predicted length up to which no refit is made (a change of one
            epoch never refits).
    """

    def __init__(
        self,
        mode: str = "fit",
        min_epochs: int = 2,
        decide_by: float = 0.2,
        margin: float = 0.05,
        refit_at: Sequence[float] = (0.25, 0.5, 0.75),
        refit_tolerance: float = 0.1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"callbacks.schedule_budget.mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if not (isinstance(min_epochs, int) and min_epochs >= 1):
            raise ValueError(f"callbacks.schedule_budget.min_epochs must be a positive integer, got {min_epochs!r}")
        if not 0.0 < decide_by < 1.0 or not 0.0 <= margin < 0.5:
            raise ValueError("callbacks.schedule_budget: decide_by must lie in (0, 1) and margin in [0, 0.5)")
        refit_at = sorted(float(f) for f in refit_at)
        if any(not 0.0 < f < 1.0 for f in refit_at) or refit_tolerance < 0.0:
            raise ValueError(
                f"callbacks.schedule_budget: refit_at must list fractions of the cap in (0, 1) and refit_tolerance "
                f"must be >= 0, got {refit_at} and {refit_tolerance}"
            )
        self.mode = mode
        self.min_epochs = min_epochs
        self.decide_by = decide_by
        self.margin = margin
        self.refit_at = refit_at
        self.refit_tolerance = refit_tolerance
        # the decisions (saved in checkpoints): the run's epochs after fitting, the planned length it replaced, and
        # the refits as (first refitted epoch, new length)
        self.fitted_epochs: int | None = None
        self.planned_epochs: int | None = None
        self.refits: list[tuple[int, int]] = []
        self.decided = False
        self._train_seconds: list[float] = []  # per training epoch, validation excluded
        self._val_seconds: list[float] = []
        self._window = (0, 0)  # where the measurements since the last decision start in the two lists
        self._next_refit = 0  # index into refit_at
        self._epoch_start = 0.0
        self._val_start = 0.0
        self._val_in_epoch = 0.0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "decided": self.decided,
            "fitted_epochs": self.fitted_epochs,
            "planned_epochs": self.planned_epochs,
            "refits": [list(r) for r in self.refits],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.decided = bool(state_dict.get("decided", False))
        self.fitted_epochs = state_dict.get("fitted_epochs")
        self.planned_epochs = state_dict.get("planned_epochs")
        self.refits = [(int(epoch), int(total)) for epoch, total in state_dict.get("refits", [])]

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
        """Compress the schedules to ``fitted_epochs``, refit them as ``refits`` says, and end the run where the
        last decision ends the schedule (decisions made now or restored from a checkpoint)."""
        max_epochs = trainer.fit_loop.max_epochs if trainer.fit_loop.max_epochs is not None else -1
        schedules = self._schedules(pl_module)
        if self.fitted_epochs is not None and any([s.fit_to(self.fitted_epochs, max_epochs) for s in schedules]):
            trainer.fit_loop.max_epochs = self.fitted_epochs
        for epoch, total in self.refits:
            if any([s.refit_from(epoch, total, max_epochs) for s in schedules]):
                trainer.fit_loop.max_epochs = total

    def _current_length(self) -> int | None:
        """The run's length as last decided (None: the configured length, never fitted)."""
        return self.refits[-1][1] if self.refits else self.fitted_epochs

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.mode == "off" or self._timer(trainer) is None:
            return
        if self.decided:
            timer = self._timer(trainer)
            assert timer is not None
            elapsed = timer.time_elapsed() / float(timer._duration)
            self._next_refit = sum(1 for f in self.refit_at if f <= elapsed)  # a resumed run refits only ahead
            if self._current_length() is not None and self.mode == "fit":
                self._apply(trainer, pl_module)
                log.info("schedule fitted to the time cap: %d epochs (from the checkpoint)", self._current_length())
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
        if self.mode == "off" or timer is None:
            return
        self._train_seconds.append(time.monotonic() - self._epoch_start - self._val_in_epoch)
        epochs_done = trainer.current_epoch + 1
        elapsed, cap = timer.time_elapsed(), float(timer._duration)
        if self.decided:
            if self.mode == "fit":
                self._maybe_refit(trainer, pl_module, epochs_done, elapsed, cap)
            return
        if len(self._train_seconds) < self.min_epochs or (not self._val_seconds and elapsed < self.decide_by * cap):
            return
        steady = self._train_seconds[1:] if len(self._train_seconds) > 1 else self._train_seconds
        total = self._predict_total(trainer, epochs_done, elapsed, cap, steady, self._val_seconds)
        total = int(trainer.strategy.broadcast(total, src=0))  # every rank compresses its schedule identically
        self.decided = True
        self._window = (len(self._train_seconds), len(self._val_seconds))
        self._next_refit = sum(1 for f in self.refit_at if f * cap <= elapsed)
        planned = self._planned_length(trainer, pl_module)
        self.planned_epochs = planned
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
        self.fitted_epochs = total
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

    def _maybe_refit(
        self, trainer: Trainer, pl_module: LightningModule, epochs_done: int, elapsed: float, cap: float
    ) -> None:
        """At the next fraction of the cap in ``refit_at``: measure the pace since the last decision and refit the
        rest of the schedule from the next epoch on where its predicted length changed by more than the
        tolerance."""
        if self._next_refit >= len(self.refit_at) or elapsed < self.refit_at[self._next_refit] * cap:
            return
        recent = self._train_seconds[self._window[0]:]
        if len(recent) < self.min_epochs:
            return  # too few epochs since the last decision (or since a resume) to measure a pace
        self._next_refit = sum(1 for f in self.refit_at if f * cap <= elapsed)
        recent_val = self._val_seconds[self._window[1]:] or self._val_seconds
        total = self._predict_total(trainer, epochs_done, elapsed, cap, recent, recent_val)
        total = int(trainer.strategy.broadcast(total, src=0))
        planned = self.planned_epochs
        if planned is None or planned < 0:
            return
        current = self._current_length()
        current = planned if current is None else current
        total = min(total, planned)  # never longer than the configured schedule
        if total <= epochs_done or abs(total - current) <= max(1.0, self.refit_tolerance * current):
            return
        max_epochs = trainer.fit_loop.max_epochs if trainer.fit_loop.max_epochs is not None else -1
        if not any([s.refit_from(epochs_done, total, max_epochs) for s in self._schedules(pl_module)]):
            return
        self.refits.append((epochs_done, total))
        self._window = (len(self._train_seconds), len(self._val_seconds))
        trainer.fit_loop.max_epochs = total
        log.info(
            "training epochs now take about %.1f s (the last %d, at %s of trainer.max_time %s): the rest of the "
            "learning-rate schedule is refitted to end at epoch %d (was %d)",
            sum(recent) / len(recent), len(recent), _clock(elapsed), _clock(cap), total, current,
        )

    def _predict_total(
        self,
        trainer: Trainer,
        epochs_done: int,
        elapsed: float,
        cap: float,
        train_seconds: list[float],
        val_seconds: list[float],
    ) -> int:
        """The number of epochs (done and to come) that end, with their validations, within the cap, at the pace
        of the given training epochs and validations."""
        train_epoch = sum(train_seconds) / len(train_seconds)
        val_every = trainer.check_val_every_n_epoch or 1
        if trainer.limit_val_batches == 0:
            val_cost = 0.0
        elif val_seconds:
            val_cost = max(val_seconds)
        else:  # not seen yet: assume a validation costs a training epoch
            val_cost = train_epoch
        per_epoch = train_epoch + val_cost / val_every
        # the last epoch is validated (the schedule's end, or the entry point's final validation)
        budget = cap * (1.0 - self.margin) - elapsed - val_cost
        return epochs_done + max(0, math.floor(budget / per_epoch))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
