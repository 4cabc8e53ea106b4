"""Staged optimisation per optimiser group (``model.groups.<name>``): frozen groups, groups that start late,
per-group gradient clipping with its norm type, and one-line errors for groups the model does not have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback

from reenact.cli.train import _one_line, run
from reenact.errors import USER_ERRORS
from reenact.utils.hydra_utils import compose_config
from tests.helpers.configs import train_config

Snapshot = dict[str, list[torch.Tensor]]
COMMON = [
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=0",
    "callbacks.reconstruction_visualizer.every_n_epochs=100",
    "+callbacks.parameter_snapshots={_target_: tests.test_staged_optimisation.ParameterSnapshots}",
]


class ParameterSnapshots(Callback):
    """Copies of every optimiser group's parameters when training starts and after each training epoch."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def _take(self, pl_module: Any) -> None:
        groups = pl_module.network.optimizer_groups()
        self.snapshots.append({name: [p.detach().clone() for p in params] for name, params in groups.items()})

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._take(pl_module)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._take(pl_module)


class KeepTaskState(Callback):
    """The network's state dicts when training starts."""

    seen: dict[str, Any] = {}

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        network = pl_module.network
        KeepTaskState.seen["state"] = {k: v.clone() for k, v in network.kp_detector.state_dict().items()}
        KeepTaskState.seen["generator"] = {k: v.clone() for k, v in network.generator.state_dict().items()}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def snapshots(objects: dict[str, Any]) -> list[Snapshot]:
    return next(c for c in objects["trainer"].callbacks if isinstance(c, ParameterSnapshots)).snapshots


def changed(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_a_frozen_group_keeps_its_parameters_and_statistics_and_needs_no_rate(tmp_path: Path,
                                                                             cache_dir: Path) -> None:
    """A frozen group (a second stage with the rest fixed) keeps its weights and its BatchNorm running statistics,
    through training steps and PreciseBN, while the others train; it needs no learning rate."""
    overrides = [*COMMON, "trainer.max_epochs=2", "trainer.limit_val_batches=1", "model.precise_bn_batches=2",
                 "++model.groups.kp_detector.frozen=true", "~model.lr.kp_detector",
                 "+callbacks.keep_task={_target_: tests.test_staged_optimisation.KeepTaskState}"]
    KeepTaskState.seen.clear()
    _, objects = run(train_config(tmp_path, cache_dir, overrides))
    assert objects["trainer"].global_step > 0
    start, _, end = snapshots(objects)
    assert not changed(start["kp_detector"], end["kp_detector"])
    assert changed(start["generator"], end["generator"])
    before, network = KeepTaskState.seen["state"], objects["task"].network
    statistics = [k for k in before if "running_" in k]
    assert statistics, "the FOMM keypoint detector has BatchNorm statistics"
    after = network.kp_detector.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running statistics, bit for bit
    generator_bn = [k for k, v in network.generator.state_dict().items() if "running_mean" in k]
    assert generator_bn and any(not torch.equal(KeepTaskState.seen["generator"][k], network.generator.state_dict()[k])
                                for k in generator_bn), "the trained group's statistics do move"
    task = objects["task"]
    assert task.frozen_modules == [network.kp_detector]
    task.train()  # as Lightning does after each validation: the frozen detector stays in eval mode
    assert not any(m.training for m in network.kp_detector.modules()) and network.generator.training


def test_a_group_with_a_later_start_epoch_waits_for_it(tmp_path: Path, cache_dir: Path) -> None:
    _, objects = run(train_config(tmp_path, cache_dir, [*COMMON, "trainer.max_epochs=2",
                                                        "++model.groups.generator.start_epoch=1"]))
    start, after_first, after_second = snapshots(objects)
    assert not changed(start["generator"], after_first["generator"])  # epoch 0: not stepped
    assert changed(start["kp_detector"], after_first["kp_detector"])  # while the other group trains
    assert changed(after_first["generator"], after_second["generator"])  # epoch 1: it trains


def test_group_gradient_clipping_bounds_the_norm_of_the_type_asked_for(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = 0.01
    original_clip = torch.nn.utils.clip_grad_norm_
    clipped: list[tuple[frozenset[int], float, float, float]] = []  # (parameters, max_norm, norm type, norm before)

    def recording_clip(parameters: Any, max_norm: float, norm_type: float = 2.0, **kwargs: Any) -> torch.Tensor:
        parameters = list(parameters)
        total = original_clip(parameters, max_norm, norm_type=norm_type, **kwargs)
        clipped.append((frozenset(id(p) for p in parameters), float(max_norm), float(norm_type), float(total)))
        return total

    original_step = torch.optim.Adam.step
    stepped: list[tuple[frozenset[int], float]] = []  # (parameters, L1 norm of the gradients stepped with)

    def recording_step(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        params = [p for group in self.param_groups for p in group["params"]]
        l1 = sum(float(p.grad.double().abs().sum()) for p in params if p.grad is not None)
        stepped.append((frozenset(id(p) for p in params), l1))
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    _, objects = run(train_config(tmp_path, cache_dir, [*COMMON, "trainer.max_epochs=1",
                                                        f"++model.groups.generator.grad_clip={clip}",
                                                        "++model.groups.generator.grad_clip_norm_type=1.0"]))
    groups = {name: frozenset(id(p) for p in params)
              for name, params in objects["task"].network.optimizer_groups().items()}
    steps = objects["trainer"].fit_loop.epoch_loop.batch_progress.total.completed
    assert steps == 2
    # only the generator's gradients are clipped, once per step, with its own bound and norm type
    assert [(ids == groups["generator"], max_norm, norm_type) for ids, max_norm, norm_type, _ in clipped] == [
        (True, clip, 1.0)] * steps
    assert max(before for *_, before in clipped) > clip  # the bound was binding
    generator_steps = [l1 for ids, l1 in stepped if ids == groups["generator"]]
    detector_steps = [l1 for ids, l1 in stepped if ids == groups["kp_detector"]]
    assert len(generator_steps) == len(detector_steps) == steps
    # the L1 norm (norm_type 1) of what the optimiser stepped with is within the bound; an L2 clip would leave it
    # above, since the L1 norm of a vector is at least its L2 norm
    assert all(l1 <= clip * (1 + 1e-4) for l1 in generator_steps), generator_steps
    assert max(detector_steps) > clip  # the group without a clip is left as it is


def test_groups_naming_a_group_the_model_lacks_is_a_one_line_error() -> None:
    cfg = compose_config("train", ["++model.groups.nope.frozen=true", "paths.root_dir=/tmp", "paths.output_dir=/tmp"])
    with pytest.raises(USER_ERRORS, match=r"model.groups names \['nope'\], which are not optimiser groups") as error:
        instantiate(cfg.model)
    assert "\n" not in _one_line(error.value) and "model.groups names ['nope']" in _one_line(error.value)
    cfg = compose_config("train", ["++model.groups.generator.start_epochs=1", "paths.root_dir=/tmp",
                                   "paths.output_dir=/tmp"])
    with pytest.raises(USER_ERRORS, match=r"model.groups.generator: unknown option\(s\) \['start_epochs'\]") as error:
        instantiate(cfg.model)
    assert "\n" not in _one_line(error.value)


def test_group_errors_stop_a_training_run_as_user_errors(tmp_path: Path, cache_dir: Path) -> None:
    # what the CLI reports in one line (USER_ERRORS), through the entry point that builds the task
    with pytest.raises(USER_ERRORS, match=r"model.groups names \['nope'\]") as error:
        run(train_config(tmp_path, cache_dir, ["++model.groups.nope.frozen=true"]))
    assert "\n" not in _one_line(error.value)


def test_set_progress_sees_the_step_and_epoch_also_after_a_resume(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reenact.families.fomm.model import FirstOrderMotionModel

    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(FirstOrderMotionModel, "set_progress", lambda self, step, epoch: seen.append((step, epoch)))
    # a late group: the optimiser steps per batch vary (1, then 2), the training step does not
    common = [*COMMON, "++model.groups.generator.start_epoch=1"]
    first = tmp_path / "first"
    run(train_config(first, cache_dir, [*common, "trainer.max_epochs=2"]))
    assert seen == [(0, 0), (1, 0), (2, 1), (3, 1)]
    seen.clear()
    run(train_config(tmp_path / "resumed", cache_dir, [*common, "trainer.max_epochs=3", f"ckpt_path={first}"]))
    assert seen == [(4, 2), (5, 2)]


def test_a_waiting_groups_schedule_follows_the_epochs_without_pytorchs_order_warning() -> None:
    import warnings

    from reenact.tasks.optimisation import step_schedules

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)  # its group has not started
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step_schedules([scheduler], epoch=0)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert optimizer.param_groups[0]["lr"] == 0.5  # the schedule moved on all the same
