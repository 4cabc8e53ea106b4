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


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def snapshots(objects: dict[str, Any]) -> list[Snapshot]:
    return next(c for c in objects["trainer"].callbacks if isinstance(c, ParameterSnapshots)).snapshots


def changed(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_a_frozen_group_keeps_its_parameters_while_the_others_train(tmp_path: Path, cache_dir: Path) -> None:
    _, objects = run(train_config(tmp_path, cache_dir, [*COMMON, "trainer.max_epochs=1",
                                                        "++model.groups.kp_detector.frozen=true"]))
    assert objects["trainer"].global_step > 0
    start, end = snapshots(objects)
    assert not changed(start["kp_detector"], end["kp_detector"])
    assert changed(start["generator"], end["generator"])


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


def batchnorm_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.detach().clone() for name, buffer in module.named_buffers()
            if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}


def test_a_frozen_group_keeps_its_batchnorm_statistics_and_needs_no_learning_rate(
    tmp_path: Path, cache_dir: Path
) -> None:
    # a second stage: the keypoint detector fixed (no lr entry for it), with PreciseBN and a validation every epoch
    overrides = [*COMMON[:1], *COMMON[2:], "trainer.max_epochs=2", "trainer.limit_val_batches=1",
                 "model.precise_bn_batches=1", "++model.groups.kp_detector.frozen=true", "~model.lr.kp_detector"]
    cfg = train_config(tmp_path, cache_dir, overrides)
    assert "kp_detector" not in cfg.model.lr
    task = instantiate(cfg.model, _partial_=True)(model_config={}, data_config={})
    before = batchnorm_buffers(task.network.kp_detector)
    assert before and all(not m.training for m in task.network.kp_detector.modules())
    _, objects = run(cfg)
    task = objects["task"]
    assert objects["trainer"].current_epoch == 2 and task.optimizer_names == ["kp_detector", "generator"]
    after = batchnorm_buffers(task.network.kp_detector)
    generator = batchnorm_buffers(task.network.generator)
    # same initial statistics as a fresh task (BatchNorm starts at mean 0, var 1), unchanged by 2 epochs and PreciseBN
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert any(name.endswith("num_batches_tracked") and int(value) > 0 for name, value in generator.items())
    task.train()  # Lightning's train() after each validation: the frozen detector stays in eval mode
    assert all(not m.training for m in task.network.kp_detector.modules()) and task.network.generator.training
    assert task.frozen_modules == [task.network.kp_detector]


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
