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
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    def factor(self, epoch: int) -> float:
        if self.kind == "multistep":
            return self.gamma ** bisect.bisect_right(self.milestones, epoch)
        if self.kind == "cosine":
            total = self.epochs
            return 0.5 * (1.0 + math.cos(math.pi * min(epoch, total) / total))
        return 1.0

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
        return True

    def ends_training(self, epoch: int) -> bool:
        """True after the last epoch of a cosine with ``stop_at_end``."""
        return self.kind == "cosine" and self.stop_at_end and epoch + 1 >= self.epochs

    def state_dict(self) -> dict[str, Any]:
        # the curve's shape comes from the config of the run that loads the state, not from the checkpoint
        state = super().state_dict()
        for key in ("kind", "milestones", "gamma", "epochs", "stop_at_end", "planned_epochs", "planned_milestones"):
            state.pop(key, None)
        return state
