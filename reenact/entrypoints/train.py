"""Training entry point: ``python train.py [group=option ...] [key=value ...]``.

    python train.py                                   # FOMM (small) on the built-in synthetic data, CPU
    python train.py model=liveportrait_small          # the 3D warping family
    python train.py experiment=vox256_fomm            # the original vox-256 recipe (GPU)
    python train.py trainer=ddp trainer.devices=4     # DDP on 4 GPUs
    python train.py ckpt_path=logs/train/runs/<run>   # resume an interrupted run from its last checkpoint
    python train.py -m hparams_search=optuna          # Optuna sweep

``run(cfg)`` holds the logic so tests can call it without Hydra's ``main``.
"""

from __future__ import annotations

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

from reenact.utils.config_check import ConfigError, check_instantiable, resolve_or_fail
from reenact.utils.hydra_utils import CONFIG_DIR, VERSION_BASE, instantiate_collection, to_plain

log = logging.getLogger("reenact.train")


def resolve_ckpt_path(ckpt_path: str | None) -> str | None:
    """A run directory or a checkpoint file; a directory resolves to its ``checkpoints/last.ckpt``."""
    if ckpt_path is None:
        return None
    path = Path(ckpt_path)
    if path.is_dir():
        candidate = path / "checkpoints" / "last.ckpt"
        path = candidate if candidate.is_file() else path / "last.ckpt"
    if not path.is_file():
        raise ConfigError(f"ckpt_path: no checkpoint at {path}")
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
    task = instantiate(cfg.model)
    task.model_config = to_plain(cfg.model)
    task.data_config = to_plain(cfg.data)
    callbacks = instantiate_collection(cfg.get("callbacks"))
    loggers = instantiate_collection(cfg.get("logger"))
    if not loggers:
        from lightning.pytorch.callbacks import LearningRateMonitor

        # It refuses to run without a logger, and logger=none is a legitimate choice (sweeps, debugging).
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer_cfg = cfg.trainer
    if task.discriminator is not None and trainer_cfg.get("strategy") == "ddp":
        # The discriminator's parameters get no gradient in the generator pass (they are frozen there).
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"strategy": "ddp_find_unused_parameters_true"})
    if trainer_cfg.get("sync_batchnorm") and trainer_cfg.get("accelerator") == "cpu":
        log.warning("SyncBatchNorm needs GPUs; training on CPU with per-process BatchNorm statistics")
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"sync_batchnorm": False})
    trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)
    for logger in trainer.loggers:
        logger.log_hyperparams(to_plain(cfg))
    log.info("output directory: %s", cfg.paths.output_dir)

    if cfg.get("train", True):
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        stale = task.validated_at_step is not None and task.validated_at_step != trainer.global_step
        if stale and not trainer.interrupted:
            log.info("validating the final weights: training stopped between validation epochs")
            trainer.validate(task, datamodule=datamodule, verbose=False)
            if task.precise_bn_batches:
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

    Skipped for multirun and sweep syntax, which only Hydra's launcher understands.
    """
    if any(a.startswith("-") for a in argv) or any("," in a or "(" in a for a in argv):
        return
    from reenact.utils.hydra_utils import compose_config

    overrides = [a for a in argv if not a.startswith(("hydra.", "hydra/", "+hydra", "~hydra"))]
    try:
        compose_config("train", overrides)
    except Exception as exc:  # Hydra's override and composition errors
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines[1:] if line.startswith("Key ")), "")
        print(f"error: {lines[0] if lines else type(exc).__name__} {detail}".rstrip(), file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    precheck_overrides(sys.argv[1:])
    main()


@hydra.main(version_base=VERSION_BASE, config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from reenact.errors import USER_ERRORS

    try:
        metrics, _ = run(cfg)
    except USER_ERRORS as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(2)
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
