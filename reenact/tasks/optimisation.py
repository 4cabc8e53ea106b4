"""Staged optimisation per optimiser group: the settings of each group, building its optimiser and scheduler, and
stepping it.

The family names its groups (``optimizer_groups()``, e.g. keypoint detector and generator), plus ``discriminator``
when one is built. Each group's optimiser and learning-rate scheduler are built from ``_partial_`` nodes
(``model.optimizer``, ``model.scheduler``; ``model.groups.<name>.optimizer`` / ``.scheduler`` replace them for one
group) with the group's rate from ``model.lr.<name>``. ``model.groups.<name>`` also sets

- ``start_epoch``: the group trains from that epoch on (before it, its gradients are discarded);
- ``frozen``: the group never trains. It needs no ``lr``, gets no optimiser, its parameters get no gradient, and every
  maximal sub-module whose parameters all belong to frozen groups stays in eval mode (BatchNorm running statistics do
  not change, dropout is off) -- a second stage that trains one network against fixed others;
- ``grad_clip`` / ``grad_clip_norm_type``: gradient-norm clipping of the group (``inf``: the largest element).

A group the config does not list trains with the defaults (from epoch 0, no clipping). Schedulers step once per
epoch; a closed-form :class:`reenact.tasks.schedules.EpochSchedule` sets the rate from its curve at each epoch start,
so a resumed run follows the uninterrupted run's curve.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from reenact.tasks.schedules import EpochSchedule

DISCRIMINATOR = "discriminator"
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


@dataclass(frozen=True)
class GroupOptions:
    """How one optimiser group trains (see the module docstring)."""

    start_epoch: int = 0
    frozen: bool = False
    grad_clip: float | None = None
    grad_clip_norm_type: float = 2.0
    optimizer: OptimizerFactory | None = None
    scheduler: SchedulerFactory | None = None

    @classmethod
    def from_config(cls, name: str, options: dict[str, Any]) -> GroupOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"model.groups.{name}: unknown option(s) {unknown}; expected some of {sorted(known)}")
        merged = {f.name: f.default for f in fields(cls)} | dict(options)
        if not is_int_at_least(merged.get("start_epoch", 0), 0):
            raise ValueError(f"model.groups.{name}.start_epoch must be a non-negative integer")
        if not isinstance(merged["frozen"], bool):
            raise ValueError(f"model.groups.{name}.frozen must be true or false, got {merged['frozen']!r}")
        clip = merged["grad_clip"]
        if clip is not None and not (isinstance(clip, int | float) and clip > 0):
            raise ValueError(f"model.groups.{name}.grad_clip must be a positive number or null, got {clip!r}")
        return cls(**merged)


class OptimiserGroups:
    """The validated settings of every optimiser group of a task, and what builds and steps their optimisers."""

    def __init__(
        self,
        params: dict[str, list[nn.Parameter]],
        lr: dict[str, float] | None,
        groups: dict[str, dict[str, Any]] | None,
        optimizer: OptimizerFactory | None,
        scheduler: SchedulerFactory | None,
    ) -> None:
        """``params``: every group's parameters (a partition), the family's groups first. A frozen group's
        parameters get ``requires_grad=False`` here: no gradient is ever computed for them."""
        self.params = params
        self.names = list(params)
        self.options = {name: GroupOptions.from_config(name, options)
                        for name, options in _group_configs(groups, self.names).items()}
        self.trained = [name for name in self.names if not self.options[name].frozen]
        lr = dict(lr or {})
        missing = [name for name in self.trained if name not in lr]
        unknown = [name for name in lr if name not in self.names and name != DISCRIMINATOR]
        if missing or unknown:
            raise ValueError(
                f"model.lr must give one learning rate per optimised network {self.trained} (frozen groups need "
                f"none); missing {missing}, unknown {unknown}"
            )
        self.lr = lr
        self.optimizer_factory = optimizer or functools.partial(torch.optim.Adam, betas=(0.5, 0.999))
        self.scheduler_factory = scheduler
        self._check_factories()
        for parameter in self.frozen_parameters():
            parameter.requires_grad_(False)

    def frozen_parameters(self) -> list[nn.Parameter]:
        return [p for name in self.names if self.options[name].frozen for p in self.params[name]]

    def _check_factories(self) -> None:
        """Build every configured optimiser and scheduler once on a throwaway parameter, so that a bad value
        (an unknown schedule kind, a wrong argument) stops the run at start-up, not when fitting begins."""
        for name in self.trained:
            options = self.options[name]
            optimizer = (options.optimizer or self.optimizer_factory)([nn.Parameter(torch.zeros(1))], lr=self.lr[name])
            make_scheduler = options.scheduler or self.scheduler_factory
            if make_scheduler is not None:
                make_scheduler(optimizer)

    def build(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        """One optimiser (and scheduler) per trained group, in the order of :attr:`trained`."""
        optimizers, schedulers = [], []
        for name in self.trained:
            options = self.options[name]
            optimizer = (options.optimizer or self.optimizer_factory)(self.params[name], lr=self.lr[name])
            optimizers.append(optimizer)
            make_scheduler = options.scheduler or self.scheduler_factory
            if make_scheduler is not None:
                schedulers.append(make_scheduler(optimizer))
        if schedulers and len(schedulers) != len(optimizers):
            raise ValueError("model.scheduler: give every optimiser group a scheduler, or none")
        return optimizers, schedulers

    def clip_and_step(self, name: str, optimizer: Any, epoch: int, scaler: Any = None) -> None:
        """Step one group's optimiser unless the group starts later; clip its gradients first. ``scaler``: the fp16
        gradient scaler, whose scaling is undone before clipping so that the true gradients are clipped."""
        options = self.options[name]
        if epoch < options.start_epoch:
            optimizer.zero_grad(set_to_none=True)  # its gradients of this step are discarded, not accumulated
            return
        if options.grad_clip:
            if scaler is not None:
                scaler.unscale_(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer)
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, options.grad_clip, norm_type=options.grad_clip_norm_type)
        optimizer.step()


def frozen_modules(root: nn.Module, frozen: Iterable[nn.Parameter]) -> list[nn.Module]:
    """The maximal sub-modules of ``root`` that hold parameters, all of them in ``frozen`` (a module is listed only
    when its parent is not): what a frozen group keeps in eval mode."""
    frozen_ids = {id(p) for p in frozen}
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        parameters = list(module.parameters())
        if parameters and all(id(p) in frozen_ids for p in parameters):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    for child in root.children():
        visit(child)
    return found


def as_list(schedulers: Any) -> list[Any]:
    """Lightning's ``lr_schedulers()``: None, one scheduler or a list -> a list."""
    return [] if schedulers is None else schedulers if isinstance(schedulers, list) else [schedulers]


def apply_epoch_schedules(schedulers: list[Any], epoch: int) -> None:
    """At an epoch start, closed-form schedules set the rate from their curve (so a resumed run follows the
    uninterrupted run's curve, and one resumed with a longer schedule stretches it)."""
    for scheduler in schedulers:
        if isinstance(scheduler, EpochSchedule):
            scheduler.apply(epoch)


def step_schedules(schedulers: list[Any], epoch: int) -> bool:
    """At an epoch end, step every scheduler; True when a schedule with ``stop_at_end`` ends with this epoch.

    Every schedule follows the epochs, also that of a group which starts later (``start_epoch``) and whose optimiser
    has not stepped yet, so that it starts at its schedule's rate for that epoch; PyTorch's warning about a scheduler
    stepped before its optimiser is therefore silenced here."""
    ends = any(isinstance(s, EpochSchedule) and s.ends_training(epoch) for s in schedulers)
    for scheduler in schedulers:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            scheduler.step()
    return ends


def _group_configs(groups: dict[str, dict[str, Any]] | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """Every optimiser group's options (empty for groups the config does not mention)."""
    groups = dict(groups or {})
    unknown = [name for name in groups if name not in names and name != DISCRIMINATOR]
    if unknown:
        raise ValueError(f"model.groups names {unknown}, which are not optimiser groups of this model {names}")
    return {name: dict(groups.get(name) or {}) for name in names}


def is_int_at_least(value: Any, minimum: int) -> bool:
    """An int (not a bool, which is one in Python) no smaller than ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
