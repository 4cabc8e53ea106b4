"""Per-epoch learning-rate schedules for the task's ``_partial_`` scheduler nodes.

    scheduler: {_target_: reenact.tasks.schedules.EpochSchedule, _partial_: true, kind: cosine, epochs: 300}

Any ``torch.optim.lr_scheduler`` class works as a scheduler node (``model.scheduler='{_target_:
torch.optim.lr_scheduler.ExponentialLR, _partial_: true, gamma: 0.99}'``); :class:`EpochSchedule` adds what the
recipes here need: the learning rate is a closed-form function of the epoch (so a resumed run follows the
uninterrupted run's curve exactly), and a cosine may end the run when it reaches 0.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import torch

SCHEDULE_KINDS = ("constant", "multistep", "cosine")


class EpochSchedule(torch.optim.lr_scheduler.LambdaLR):
    """lr(epoch) = base_lr · factor(epoch), stepped once per epoch.

    - ``constant``: factor 1;
    - ``multistep``: ``gamma`` to the power of the number of ``milestones`` passed (the original FOMM recipe);
    - ``cosine``: one half cosine from 1 to 0 over ``epochs``, then 0; with ``stop_at_end`` the run ends with it,
      since more epochs at a learning rate of 0 change nothing.

    ``epochs`` is not part of the saved state: a run resumed with a longer ``epochs`` stretches its curve.

    A curve fitted to a time cap (:meth:`fit_to`) may be refitted later from a given epoch on (:meth:`refit_from`):
    the rate keeps its value at that epoch and the rest of the curve is stretched or compressed linearly onto the
    new end. Fits and refits are decisions of :class:`~reenact.callbacks.schedule_budget.FitScheduleToTimeCap`,
    which saves them in its own state and makes them again when a run resumes.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str = "constant",
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        epochs: int | None = None,
        stop_at_end: bool = False,
        last_epoch: int = -1,
    ) -> None:
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"scheduler.kind: unknown schedule {kind!r} (expected one of {', '.join(SCHEDULE_KINDS)})")
        if kind == "cosine" and not (isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1):
            raise ValueError(f"scheduler.epochs must be a positive integer for a cosine schedule, got {epochs!r}")
        self.kind = kind
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.epochs = epochs
        self.stop_at_end = stop_at_end
        # the configured curve, kept so that fitting it to a shorter run is idempotent (a resumed run refits)
        self.planned_epochs = epochs
        self.planned_milestones = list(self.milestones)
        # where the fitted curve ends (in curve epochs), and the refits: (run epoch, curve epoch there, new end)
        self.curve_end: int | None = None
        self.refits: list[tuple[int, float, int]] = []
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    def curve_epoch(self, epoch: int) -> float:
        """Where on the fitted curve the run's ``epoch`` lies: ``epoch`` itself until the first refit, then the
        linear map of the last refit made at or before ``epoch``."""
        for start, start_curve, end in reversed(self.refits):
            if epoch >= start:
                assert self.curve_end is not None
                return start_curve + (epoch - start) * (self.curve_end - start_curve) / (end - start)
        return float(epoch)

    def factor(self, epoch: int) -> float:
        position = self.curve_epoch(epoch)
        if self.kind == "multistep":
            # the tolerance keeps a milestone reached exactly by the linear map from being missed by rounding
            return self.gamma ** bisect.bisect_right(self.milestones, position + 1e-9)
        if self.kind == "cosine":
            total = self.epochs
            return 0.5 * (1.0 + math.cos(math.pi * min(position, total) / total))
        return 1.0

    @property
    def end_epoch(self) -> int | None:
        """The run epoch at which a fitted curve is done (None before any fit)."""
        if self.refits:
            return self.refits[-1][2]
        return self.curve_end

    def apply(self, epoch: int) -> None:
        """Set every group's learning rate to the curve's value at ``epoch`` (called at each epoch start, which
        makes a resumed run, whose optimiser state holds the old rates, follow the current curve)."""
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.factor(epoch)

    def planned_length(self, max_epochs: int) -> int:
        """The epoch at which the configured curve is done: a cosine's ``epochs`` (at most ``max_epochs``), the
        run's ``max_epochs`` otherwise (a multistep's milestones are placed within it)."""
        if self.kind == "cosine":
            return min(int(self.planned_epochs), max_epochs) if max_epochs > 0 else int(self.planned_epochs)
        return max_epochs

    def fit_to(self, total_epochs: int, max_epochs: int) -> bool:
        """Compress the configured curve so that it is done after ``total_epochs`` instead of
        :meth:`planned_length`: a cosine reaches 0 there, a multistep's milestones scale by the same ratio.
        Returns False for a constant rate, which has no length to fit."""
        if self.kind == "constant":
            return False
        planned = self.planned_length(max_epochs)
        if self.kind == "cosine":
            self.epochs = total_epochs
        else:
            self.milestones = sorted(max(1, round(m * total_epochs / planned)) for m in self.planned_milestones)
        self.curve_end = total_epochs
        self.refits = []
        return True

    def refit_from(self, epoch: int, total_epochs: int, max_epochs: int) -> bool:
        """From ``epoch`` on, run the rest of the curve so that it is done after ``total_epochs``: the rate at
        ``epoch`` is kept and the remaining curve is stretched (a faster pace than measured before) or compressed
        (a slower one) linearly. A curve not fitted yet is first taken as configured (its planned length).
        Returns False for a constant rate."""
        if self.kind == "constant":
            return False
        if total_epochs <= epoch:
            raise ValueError(f"refit_from: the new end ({total_epochs}) must come after epoch {epoch}")
        if self.curve_end is None:
            self.curve_end = self.planned_length(max_epochs)
        self.refits = [r for r in self.refits if r[0] < epoch]
        self.refits.append((epoch, self.curve_epoch(epoch), total_epochs))
        return True

    def ends_training(self, epoch: int) -> bool:
        """True after the last epoch of a cosine with ``stop_at_end``."""
        end = self.end_epoch if self.end_epoch is not None else self.epochs
        return self.kind == "cosine" and self.stop_at_end and epoch + 1 >= end

    def state_dict(self) -> dict[str, Any]:
        # the curve's shape comes from the config of the run that loads the state, not from the checkpoint
        state = super().state_dict()
        for key in ("kind", "milestones", "gamma", "epochs", "stop_at_end", "planned_epochs", "planned_milestones",
                    "curve_end", "refits"):
            state.pop(key, None)
        return state
