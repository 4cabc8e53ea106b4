"""End-to-end training on the tiny synthetic data: outputs, resume, falling loss, both families, logging."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reenact.callbacks.precise_bn import PreciseBatchNorm, recompute_batchnorm_statistics
from reenact.cli.train import _one_line, run
from reenact.errors import USER_ERRORS
from reenact.utils.config_check import ConfigError
from tests.helpers.configs import CHEAP_RUN, train_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def read_metrics_csv(output_dir: Path) -> list[dict[str, str]]:
    with open(output_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def step_losses(output_dir: Path) -> list[float]:
    return [float(r["train/loss_step"]) for r in read_metrics_csv(output_dir) if r.get("train/loss_step")]


def test_training_writes_checkpoints_metrics_and_grids(tmp_path: Path, cache_dir: Path) -> None:
    metrics, objects = run(train_config(tmp_path, cache_dir))
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert set(summary["metrics"]) >= {"val/l1", "val/l1_copy_source"}
    assert summary["metrics"]["val/l1"] == pytest.approx(metrics["val/l1"])
    assert 0 < metrics["val/l1_copy_source"] < 1
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert any((tmp_path / "checkpoints").glob("best_epoch*.ckpt"))
    assert any((tmp_path / "images").glob("reconstruction_epoch*.png"))
    logged = read_metrics_csv(tmp_path)[0].keys()
    assert {"train/loss_step", "train/reconstruction_l1_step", "train/equivariance_value_step"} <= set(logged)
    # The checkpoint is data only: it loads with weights_only=True and rebuilds the model.
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["reenact"]["family"] == "fomm"
    assert not any(k.startswith("objective.") for k in checkpoint["state_dict"]), "VGG must not bloat checkpoints"


def test_resumed_run_continues_exactly(tmp_path: Path, cache_dir: Path) -> None:
    # With data-loader workers, as users train: the first resumed epoch must draw the resumed epoch's order.
    common = ["trainer.limit_train_batches=3", "callbacks.reconstruction_visualizer.every_n_epochs=100",
              "data.num_workers=2"]
    uninterrupted = tmp_path / "full"
    run(train_config(uninterrupted, cache_dir, [*common, "trainer.max_epochs=2"]))
    first_half = tmp_path / "first"
    run(train_config(first_half, cache_dir, [*common, "trainer.max_epochs=1"]))
    resumed = tmp_path / "resumed"
    _, objects = run(train_config(resumed, cache_dir, [*common, "trainer.max_epochs=2", f"ckpt_path={first_half}"]))

    full_losses = step_losses(uninterrupted)
    assert len(full_losses) == 6
    assert step_losses(first_half) == pytest.approx(full_losses[:3], rel=1e-6)
    assert step_losses(resumed) == pytest.approx(full_losses[3:], rel=1e-5)
    assert objects["trainer"].current_epoch == 2
    final_full = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)
    final_resumed = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert final_full["global_step"] == final_resumed["global_step"]
    for key, value in final_full["state_dict"].items():
        torch.testing.assert_close(final_resumed["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_cosine_schedule_falls_to_zero_over_max_epochs(tmp_path: Path, cache_dir: Path) -> None:
    overrides = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=0", "model.scheduler.kind=cosine",
                 "callbacks.reconstruction_visualizer.every_n_epochs=100"]
    run(train_config(tmp_path / "one", cache_dir, [*overrides, "trainer.max_epochs=3"]))
    state = torch.load(tmp_path / "one" / "checkpoints" / "last.ckpt", weights_only=True)
    base = [group["initial_lr"] for group in state["optimizer_states"][0]["param_groups"]]
    assert state["lr_schedulers"][0]["last_epoch"] == 3
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert base[0] > 0
    with pytest.raises(USER_ERRORS, match="scheduler.kind: unknown schedule 'linear'") as error:
        run(train_config(tmp_path / "bad", cache_dir, ["model.scheduler.kind=linear"]))
    assert "\n" not in _one_line(error.value)  # reported by the CLI as one line


def test_cosine_schedule_epochs_shortens_the_curve_and_ends_the_run(tmp_path: Path, cache_dir: Path) -> None:
    overrides = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=0", "model.scheduler.kind=cosine",
                 "callbacks.reconstruction_visualizer.every_n_epochs=100", "trainer.max_epochs=5"]
    _, objects = run(train_config(tmp_path / "short", cache_dir, [*overrides, "model.scheduler.epochs=2",
                                                                  "model.scheduler.stop_at_end=true"]))
    assert objects["trainer"].current_epoch == 2  # stopped with the schedule, not at max_epochs
    state = torch.load(tmp_path / "short" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["lr_schedulers"][0]["last_epoch"] == 2
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(USER_ERRORS, match="scheduler.epochs must be a positive integer"):
        run(train_config(tmp_path / "bad", cache_dir, [*overrides, "model.scheduler.epochs=0"]))


def test_final_weights_are_validated_when_training_stops_between_validation_epochs(
    tmp_path: Path, cache_dir: Path
) -> None:
    overrides = ["trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2",
                 "callbacks.reconstruction_visualizer.every_n_epochs=100"]
    metrics, objects = run(train_config(tmp_path, cache_dir, overrides))
    task, trainer = objects["task"], objects["trainer"]
    assert trainer.current_epoch == 3
    assert task.validated_at_step == trainer.global_step > 0  # epoch 2 validated, then the final weights
    assert "val/l1" in metrics
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["metrics"]["val/l1"] == pytest.approx(metrics["val/l1"])


def test_precise_batchnorm_averages_training_batches_and_last_checkpoint_holds_the_validated_statistics(
    tmp_path: Path, cache_dir: Path
) -> None:
    overrides = ["trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2", "model.precise_bn_batches=2",
                 "callbacks.reconstruction_visualizer.every_n_epochs=100"]
    _, objects = run(train_config(tmp_path, cache_dir, overrides))
    task, trainer = objects["task"], objects["trainer"]
    assert any(isinstance(callback, PreciseBatchNorm) for callback in trainer.callbacks)  # the preset switched it on
    # stopped between validation epochs: the final validation recomputed the statistics, and last.ckpt has them
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    buffers = {k: v for k, v in task.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    assert buffers and all(torch.equal(saved[k], v) for k, v in buffers.items())

    norm = next(m for m in task.network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    batch_means: list[torch.Tensor] = []
    hook = norm.register_forward_pre_hook(lambda module, args: batch_means.append(args[0].float().mean((0, 2, 3))))
    task.network.train()
    assert recompute_batchnorm_statistics(trainer, task, 2) == 2
    hook.remove()
    assert task.network.training  # restored
    # FOMM's keypoint detector runs on source and driving: two inputs per batch reach this BatchNorm
    assert len(batch_means) == norm.num_batches_tracked.item() == 4
    torch.testing.assert_close(norm.running_mean, torch.stack(batch_means).mean(0), atol=1e-5, rtol=1e-4)
    with pytest.raises(USER_ERRORS, match="precise_bn_batches"):
        run(train_config(tmp_path / "bad", cache_dir, ["model.precise_bn_batches=-1"]))


def test_loss_falls_when_overfitting_one_batch(tmp_path: Path, cache_dir: Path) -> None:
    run(
        train_config(
            tmp_path,
            cache_dir,
            [
                "trainer.overfit_batches=1",
                "trainer.max_epochs=12",
                "trainer.limit_val_batches=0",
                "data.augment=false",
                "trainer.limit_train_batches=null",
            ],
        )
    )
    losses = step_losses(tmp_path)
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_liveportrait_small_trains_with_pose_supervision(tmp_path: Path, cache_dir: Path) -> None:
    metrics, objects = run(train_config(tmp_path, cache_dir, ["model=liveportrait_small"]))
    logged = set(read_metrics_csv(tmp_path)[0])
    assert {
        "train/head_pose_driving_step",
        "train/keypoint_prior_driving_step",
        "train/deformation_prior_driving_step",
        "train/equivariance_value_step",
    } <= logged
    assert torch.isfinite(torch.tensor(metrics["val/l1"]))
    # the second-stage networks form a frozen group in the first stage
    assert objects["task"].optimizer_names == ["motion_extractor", "generator", "retargeting"]


def test_gan_stage_trains_discriminator_with_bf16(tmp_path: Path, cache_dir: Path) -> None:
    _, objects = run(
        train_config(
            tmp_path,
            cache_dir,
            [
                "+model.objective.terms.generator_gan="
                "{_target_: reenact.losses.adversarial.GeneratorAdversarial, weight: 1.0}",
                "model.discriminator.num_blocks=3",
                "+model.objective.terms.feature_matching="
                "{_target_: reenact.losses.adversarial.FeatureMatching, weight: 1.0, layer_weights: [10, 10, 10]}",
                "model.discriminator.use_kp=true",
                "model.objective.terms.equivariance_jacobian="
                "{_target_: reenact.families.fomm.losses.JacobianEquivariance, weight: 10.0}",
                "trainer.precision=bf16-mixed",
            ],
        )
    )
    assert objects["task"].optimizer_names == ["kp_detector", "generator", "discriminator"]
    logged = set(read_metrics_csv(tmp_path)[0])
    assert {"train/generator_gan_step", "train/feature_matching_step", "train/discriminator_gan_step",
            "train/equivariance_jacobian_step"} <= logged


def test_missing_checkpoint_is_a_config_error(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ConfigError, match="ckpt_path: no checkpoint at"):
        run(train_config(tmp_path, cache_dir, [f"ckpt_path={tmp_path / 'nope.ckpt'}"]))


def _cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


TINY_CLI = [*CHEAP_RUN, "callbacks.reconstruction_visualizer.log_video=false"]


def test_ddp_two_cpu_processes_train_a_group_that_starts_at_epoch_1(tmp_path: Path, cache_dir: Path) -> None:
    # the generator trains from epoch 1 on, clipped by its largest gradient element: DDP learns from the contract's
    # parameters_may_go_unused that some parameters may get no gradient in a step
    result = _cli(
        [
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            f"paths.cache_dir={cache_dir}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *TINY_CLI,
            "trainer.max_epochs=2",
            "trainer.check_val_every_n_epoch=2",
            "++model.groups.generator.start_epoch=1",
            "++model.groups.generator.grad_clip=1.0",
            "++model.groups.generator.grad_clip_norm_type=inf",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "val/l1" in summary["metrics"] and summary["epoch"] == 2
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
