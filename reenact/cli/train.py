"""Training entry point: ``python train.py [group=option ...] [key=value ...]`` (console script ``reenact-train``).

    python train.py                                   # FOMM (small) on the built-in synthetic data, CPU
    python train.py model=liveportrait_small          # the 3D warping family
    python train.py experiment=vox256_fomm            # the original vox-256 recipe (GPU)
    python train.py trainer=ddp trainer.devices=4     # DDP on 4 GPUs
    python train.py ckpt_path=logs/train/runs/<run>   # resume an interrupted run from its last checkpoint
    python train.py -m hparams_search=optuna          # Optuna sweep

``run(cfg)`` holds the logic so tests can call it without Hydra's ``main``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from reenact.cli import check_override_syntax, user_errors
from reenact.families.base import parameters_may_go_unused
from reenact.utils.config_check import ConfigError, check_instantiable, resolve_or_fail
from reenact.utils.hydra_utils import CONFIG_PATH, VERSION_BASE, instantiate_collection, to_plain
from reenact.utils.messages import first_line

log = logging.getLogger("reenact.train")


def resolve_ckpt_path(ckpt_path: str | None) -> str | None:
    """A run directory or a checkpoint file; a directory resolves to its ``checkpoints/last.ckpt``.

    The checkpoint is read once here with the same data-only reader as inference
    (:func:`reenact.checkpoints.read_checkpoint`), so an empty, truncated, code-holding or diverged (NaN/inf) file
    stops with a one-line ConfigError before any model is built, instead of a traceback from ``trainer.fit``.
    """
    if ckpt_path is None:
        return None
    from reenact.checkpoints import CheckpointError, read_checkpoint, resolve_checkpoint_path

    path = Path(ckpt_path)
    if not path.exists():
        raise ConfigError(f"ckpt_path: no checkpoint at {path}")
    try:
        path = resolve_checkpoint_path(path)
        read_checkpoint(path)
    except CheckpointError as exc:
        raise ConfigError(f"ckpt_path: {exc}") from None
    return str(path)


def validate(cfg: DictConfig) -> None:
    resolve_or_fail(cfg)
    for key in cfg.get("required_keys") or []:
        if OmegaConf.select(cfg, key) is None:
            raise ConfigError(f"{key}: required by this experiment; pass {key}=...")
    for group in ("data", "model", "trainer", "callbacks", "logger"):
        if group in cfg and cfg[group] is not None:
            check_instantiable(cfg[group], group)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def run(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train (and validate) one configuration; returns (final metrics, the objects built)."""
    validate(cfg)
    import lightning.pytorch as pl

    pl.seed_everything(cfg.seed, workers=True)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"))
    datamodule = instantiate(cfg.data)
    # the configs go into every checkpoint, so load_pretrained rebuilds the network without the Hydra tree; passed
    # to the built partial so that Hydra does not instantiate the _target_ nodes inside them
    build_task = instantiate(cfg.model, _partial_=True)
    try:
        task = build_task(model_config=to_plain(cfg.model), data_config=to_plain(cfg.data))
    except (ValueError, TypeError) as exc:  # the task's own checks of its arguments (Hydra wraps the rest)
        raise ConfigError(f"model: {first_line(exc)}") from None
    callbacks = instantiate_collection(cfg.get("callbacks"))
    from reenact.callbacks.precise_bn import PreciseBatchNorm

    if task.precise_bn_batches:  # part of the model preset's recipe (model.precise_bn_batches)
        callbacks.append(PreciseBatchNorm(task.precise_bn_batches))
    loggers = instantiate_collection(cfg.get("logger"))
    if not loggers:
        from lightning.pytorch.callbacks import LearningRateMonitor

        # It refuses to run without a logger, and logger=none is a legitimate choice (sweeps, debugging).
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer_cfg = cfg.trainer
    if trainer_cfg.get("strategy") == "ddp" and parameters_may_go_unused(
            task.network, task.groups.options, has_discriminator=task.discriminator is not None):
        # Some parameters get no gradient in some steps (the discriminator's in the generator pass, a group that
        # is frozen or starts late, a network the family uses in one stage only): DDP must look for them.
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"strategy": "ddp_find_unused_parameters_true"})
    if trainer_cfg.get("sync_batchnorm") and trainer_cfg.get("accelerator") == "cpu":
        log.warning("SyncBatchNorm needs GPUs; training on CPU with per-process BatchNorm statistics")
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"sync_batchnorm": False})
    trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)
    for logger in trainer.loggers:
        logger.log_hyperparams(to_plain(cfg))
    log.info("output directory: %s", cfg.paths.output_dir)

    if cfg.get("train", True):
        from reenact.utils.finite import require_finite
        from reenact.utils.interruption import report_interruption
        from reenact.utils.rank_watchdog import watch_ranks

        # SIGTERM or Ctrl-C: one line says how to resume (from the last epoch-end last.ckpt), exit code 143 or 130.
        # A DDP rank that dies stops the others with one line (RankDiedError) instead of a hang.
        resume = f"; resume with ckpt_path={cfg.paths.output_dir}"
        with report_interruption(trainer, cfg.paths.output_dir), watch_ranks(trainer, resume):
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            # The checkpoint callbacks check before each save; this also covers runs without them
            # (callbacks=none) and divergence after the last save.
            require_finite(task.state_dict(), f"the weights at the end of training (epoch {trainer.current_epoch})")
            # a run that stopped between validation epochs (time cap, fitted schedule) or before the first one
            stale = trainer.global_step > 0 and task.validated_at_step != trainer.global_step
            if stale and trainer.limit_val_batches != 0 and not trainer.interrupted:
                log.info("validating the final weights: training stopped between validation epochs")
                trainer.validate(task, datamodule=datamodule, verbose=False)
                if any(isinstance(callback, PreciseBatchNorm) for callback in trainer.callbacks):
                    # that validation recomputed the BatchNorm statistics: last.ckpt must hold the weights it measured
                    trainer.save_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if "val/l1" in metrics and metrics.get("val/l1_copy_source"):
        metrics["val/l1_ratio_to_copy_source"] = metrics["val/l1"] / metrics["val/l1_copy_source"]
    if trainer.is_global_zero:
        summary = {
            "metrics": metrics,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "model": cfg.model.network._target_,
            "family": cfg.model.family,
            "best_checkpoint": getattr(trainer.checkpoint_callback, "best_model_path", None) or None,
            "last_checkpoint": next((str(p) for p in [Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"]
                                     if p.is_file()), None),
        }
        write_json_atomic(Path(cfg.paths.output_dir) / "metrics.json", summary)
        log.info("final metrics: %s", json.dumps(metrics, sort_keys=True))
    return metrics, {"trainer": trainer, "task": task, "datamodule": datamodule}


def _one_line(exc: BaseException) -> str:
    """The innermost cause's first line; Hydra wraps constructor errors in InstantiationException."""
    where = getattr(exc, "full_key", None)
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0] if text else ''}"
    return f"{where}: {message}" if where else message


def precheck_overrides(argv: list[str]) -> None:
    """Compose once before Hydra does, so a bad override is reported in one line instead of Hydra's block.

    A sweep (``-m``, or a config such as ``hparams_search=optuna`` that sets multirun mode) is checked through
    its first job: ``a=1,2`` composes as ``a=1``, so ``-m model=nope`` names ``nope`` before any launcher
    starts. Each value the user sets is then checked against the constructor it configures. Hydra's own
    overrides (``hydra.*``, ``hydra/launcher=...``) and another config (``--config-name``, ``--config-dir``) are
    left to Hydra, as are ``--help``-style flags.
    """
    from hydra._internal.utils import get_args_parser
    from hydra.types import RunMode

    from reenact.utils.config_check import check_key
    from reenact.utils.hydra_utils import (
        compose_config,
        composition_error_line,
        first_sweep_combination,
        value_override_keys,
    )

    if "--version" in argv:  # argparse would print it here, and Hydra again
        return
    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        args, _ = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):  # Hydra parses the command line again and reports it
        return
    if (args.help or args.hydra_help or args.shell_completion or args.experimental_rerun or args.config_name
            or args.config_path or args.config_dir):
        return
    overrides = [a for a in args.overrides if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        first, sweeps = first_sweep_combination(overrides)
        cfg = compose_config("train", first, return_hydra_config=True)
        if sweeps and not args.multirun and cfg.hydra.mode != RunMode.MULTIRUN:
            compose_config("train", overrides)  # a sweep outside multirun: Hydra's "Ambiguous value" error
    except Exception as exc:  # Hydra's override and composition errors
        with user_errors(first_line):
            raise ConfigError(composition_error_line(exc)) from None
    # The values the user typed, against the class each configures, so an error names the key as typed (not a
    # key that interpolates it, such as model.scheduler.epochs for trainer.max_epochs) and no run folder is made.
    for key in value_override_keys(first):
        try:
            with user_errors(_one_line):
                check_key(cfg, key)
        except Exception:  # a value that only resolves inside the run (${hydra:...}): validate() checks it there
            continue


def cli() -> None:
    from reenact.utils.run_lock import claim_run_dir_from_argv

    check_override_syntax(sys.argv[1:])
    precheck_overrides(sys.argv[1:])
    with user_errors(_one_line):  # RunDirInUseError
        # before Hydra writes its config and log into an explicit hydra.run.dir: a live run there keeps it
        claim_run_dir_from_argv(sys.argv[1:])
    main()


@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from reenact.callbacks.checkpointing import DISK_FULL_ERRNOS, DiskFullError, disk_full_error
    from reenact.utils.hydra_utils import refuse_reused_run_dir, remove_unused_run_dir
    from reenact.utils.rank_watchdog import RankDiedError, claim_report
    from reenact.utils.run_lock import LOCK_NAME, claim_run_dir, holds_run_dir, remove_stale_temporaries

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    # What Hydra writes into every run folder before the run starts: its config folder and the job's log.
    log_file = OmegaConf.select(hydra_cfg, "job_logging.handlers.file.filename")
    hydra_files = {str(name) for name in (hydra_cfg.output_subdir, log_file and Path(str(log_file)).name, LOCK_NAME)
                   if name}
    try:
        # A failed start leaves no empty folder behind (only a folder this process created is removed); a full disk
        # says how to resume.
        with user_errors(lambda exc: _one_line(exc) + (f" and resume with ckpt_path={output_dir}"
                                                       if isinstance(exc, DiskFullError) else ""),
                         on_error=lambda: remove_unused_run_dir(output_dir, hydra_files)):
            try:
                # one live run per folder (a default folder is new, but a sweep job's or an explicit one may be shared)
                claim_run_dir(output_dir)
                # left by a kill during a write; with the folder's lock held no live process writes here (other ranks
                # skip)
                for stale in remove_stale_temporaries(output_dir) if holds_run_dir(output_dir) else []:
                    log.info("removed %s, a partial checkpoint write of an earlier process", stale)
                refuse_reused_run_dir(output_dir, cfg.get("ckpt_path"), bool(cfg.get("overwrite", False)))
                metrics, _ = run(cfg)
            except RankDiedError as exc:  # not the user's doing: exit status 1, one line from one rank
                if claim_report():
                    print(f"error: {_one_line(exc)}", file=sys.stderr, flush=True)
                sys.exit(1)
            except OSError as exc:
                if isinstance(exc, DiskFullError) or exc.errno not in DISK_FULL_ERRNOS:
                    raise
                raise disk_full_error(exc, exc.filename or output_dir) from None
    finally:
        if "wandb" in sys.modules:
            import wandb

            wandb.finish()
    metric_name = cfg.get("optimized_metric")
    value = metrics.get(metric_name) if metric_name else None
    if value is not None and not torch.isfinite(torch.tensor(value)):
        return float("inf")
    return value


if __name__ == "__main__":
    cli()
