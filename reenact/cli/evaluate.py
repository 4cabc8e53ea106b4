"""Evaluation entry point: ``python -m reenact.evaluate [key=value ...]`` (config: ``conf/evaluate.yaml``).

    python -m reenact.evaluate pred_dir=OUT gt_dir=DATA/test metrics.landmark_backend=dlib
    python -m reenact.evaluate ckpt_path=logs/train/runs/<run> data=voxceleb data.root=DATA save_videos=true
    python -m reenact.evaluate mode=cross ckpt_path=<run> data=voxceleb data.root=DATA logger=wandb

Every run prints a table and writes ``metrics.json`` (overall and per-video values, frame counts, the
metric backends and their versions) into its output directory. Reconstruction runs also report the
copy-source baseline (frame 0 shown for every frame): ``baselines.copy_source`` and, per video,
``copy_source``. Bad input (a missing folder, no videos, an unreadable checkpoint, an unavailable metric
backend) is reported as one line with exit code 2. A prediction or ground-truth video that cannot be decoded
is skipped, counted (``counts.unreadable_videos``), listed with its reason (``inputs.unreadable``) and logged in
one line; the other videos keep their scores.
``evaluate(cfg)`` holds the logic so tests can call it without Hydra's ``main``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from reenact.cli import user_errors, with_override_check
from reenact.metrics.sources import EvaluationInputError
from reenact.utils.config_check import check_instantiable
from reenact.utils.hydra_utils import CONFIG_PATH, VERSION_BASE
from reenact.utils.messages import first_line, one_line

log = logging.getLogger("reenact.evaluate")

MODES = ("auto", "directories", "reconstruction", "cross")
CROSS_METRICS = ("akd", "mkr", "aed", "fid")  # no pixel ground truth exists for another identity


def resolve_mode(cfg: DictConfig) -> str:
    mode = cfg.get("mode", "auto")
    if mode not in MODES:
        raise EvaluationInputError(f"mode={mode!r}; choose one of {', '.join(MODES)}")
    if mode == "auto":
        if cfg.get("pred_dir") is not None or cfg.get("gt_dir") is not None:
            mode = "directories"
        elif cfg.get("ckpt_path") is not None:
            mode = "reconstruction"
        else:
            raise EvaluationInputError("nothing to evaluate: give pred_dir=DIR gt_dir=DIR, or ckpt_path=CKPT")
    if mode == "directories":
        for key in ("pred_dir", "gt_dir"):
            if cfg.get(key) is None:
                raise EvaluationInputError(f"{key} is required to score existing videos (pred_dir=DIR gt_dir=DIR)")
            if not Path(cfg[key]).is_dir():
                raise EvaluationInputError(f"{key}: no such directory: {cfg[key]}")
    else:
        if cfg.get("ckpt_path") is None:
            raise EvaluationInputError(f"mode={mode} needs ckpt_path=CKPT (a checkpoint file or a run directory)")
        if cfg.get("save_videos") and cfg.get("save_format") not in ("mp4", "png"):
            raise EvaluationInputError(f"save_format={cfg.get('save_format')!r}; choose mp4 or png")
    return mode


def build_suite(cfg: DictConfig, mode: str) -> Any:
    """The configured MetricSuite; in cross mode only the metrics that need no pixel ground truth."""
    from hydra.utils import instantiate

    names = list(cfg.metrics.names)
    if mode == "cross":
        dropped = [n for n in names if n not in CROSS_METRICS]
        if dropped:
            log.info("cross-identity mode has no pixel ground truth: not computing %s", ", ".join(dropped))
        names = [n for n in names if n in CROSS_METRICS]
        if not names:
            raise EvaluationInputError(
                f"cross mode computes only {', '.join(CROSS_METRICS)}; "
                f"metrics.names={list(cfg.metrics.names)} leaves nothing"
            )
    check_instantiable(cfg.metrics, "metrics")  # typos and wrongly typed values, before anything loads
    try:
        return instantiate(cfg.metrics, names=names)
    except Exception as exc:  # an unavailable backend (package, weights) or a wrong setting
        raise EvaluationInputError(f"metrics: {one_line(exc, with_type=True)}") from None


def resolve_test_folder(cfg: DictConfig) -> Path:
    """The test videos: ``data.root/<split>`` (or ``data.root`` itself), or the generated synthetic set."""
    data = cfg.get("data")
    root = None if data is None or OmegaConf.is_missing(data, "root") else data.get("root")
    if root is None and data is not None and data.get("synthetic") is not None:
        from reenact.data.synthetic import ensure_synthetic_dataset

        settings = OmegaConf.to_container(data.synthetic, resolve=True)
        root = ensure_synthetic_dataset(settings.pop("cache_dir"), **settings)
    if root is None:
        raise EvaluationInputError(
            "data.root is required for reconstruction/cross evaluation (e.g. data=voxceleb data.root=/path/to/vox)"
        )
    root = Path(root)
    folder = root / cfg.split if cfg.get("split") and (root / cfg.split).is_dir() else root
    if not folder.is_dir():
        raise EvaluationInputError(f"data.root: no such directory: {folder}")
    return folder


def _video_dataset(folder: Path, frame_size: int, max_frames: int | None, max_videos: int | None) -> Any:
    from reenact.data.datasets import VideoDataset

    dataset = VideoDataset(folder, frame_size, max_frames, max_videos)
    if len(dataset) == 0:
        raise EvaluationInputError(f"no videos found in {folder}")
    return dataset


def run_protocol(cfg: DictConfig, mode: str, suite: Any) -> dict[str, Any]:
    """Runs the protocol for ``mode`` into ``suite``; returns what it reports about its inputs."""
    from reenact.metrics import protocols

    max_frames, max_videos = cfg.get("max_frames"), cfg.get("max_videos")
    if mode == "directories":
        extra = protocols.score_directories(suite, cfg.pred_dir, cfg.gt_dir, max_frames, max_videos)
        return {"pred_dir": str(cfg.pred_dir), "gt_dir": str(cfg.gt_dir), **extra}
    from reenact.api import load_pretrained

    model = load_pretrained(cfg.ckpt_path, cfg.device)
    folder = resolve_test_folder(cfg)
    save_dir = Path(cfg.output_dir) / "videos" if cfg.get("save_videos") else None
    drivings = _video_dataset(folder, model.frame_size, max_frames, max_videos if mode != "cross" else None)
    inputs = {"ckpt_path": str(cfg.ckpt_path), "test_folder": str(folder), "frame_size": model.frame_size}
    if mode == "reconstruction":
        from reenact.metrics.baselines import COPY_SOURCE, CopySourceBaseline

        baseline = CopySourceBaseline(suite) if cfg.get("copy_source_baseline", True) else None
        protocols.score_reconstruction(
            suite, model, drivings, cfg.batch_size, save_dir, cfg.save_format, cfg.save_fps, baseline
        )
        if baseline is not None and baseline.names:
            inputs["baselines"] = {COPY_SOURCE: baseline.summary()}
        return inputs
    source_folder = Path(cfg.cross.source_root) if cfg.cross.get("source_root") else folder
    sources = _video_dataset(source_folder, model.frame_size, 1, None)  # frame 0 of each source video
    pairs = protocols.read_pairs_csv(cfg.cross.pairs_csv) if cfg.cross.get("pairs_csv") else None
    extra = protocols.score_cross_identity(
        suite,
        model,
        sources,
        drivings,
        pairs,
        max_videos,
        cfg.cross.relative,
        save_dir,
        cfg.save_format,
        cfg.save_fps,
    )
    return {**inputs, "source_folder": str(source_folder), "relative": bool(cfg.cross.relative), **extra}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Runs one evaluation; writes ``metrics.json`` (and W&B tables); returns the written payload."""
    from reenact.metrics.report import format_table, log_to_wandb, write_metrics_json

    mode = resolve_mode(cfg)
    suite = build_suite(cfg, mode)
    inputs = run_protocol(cfg, mode, suite)
    summary = suite.summary()
    if "baselines" in inputs:
        summary["baselines"] = inputs.pop("baselines")
    if "unreadable" in inputs:  # directories mode: the other videos' scores stand, the skipped ones are counted
        summary["counts"]["unreadable_videos"] = len(inputs["unreadable"])
    unreadable = inputs.get("unreadable") or {}
    if unreadable:
        log.warning(
            "skipped %d unreadable video(s), scored the other %d (see inputs.unreadable in metrics.json): %s",
            len(unreadable), len(suite.per_video), "; ".join(list(unreadable.values())[:3])
            + (" ..." if len(unreadable) > 3 else ""),
        )
    output_dir = Path(cfg.output_dir)
    payload = {
        "protocol": mode,
        **summary,
        "inputs": inputs,
        "environment": _environment(cfg),
        "config": _plain_config(cfg),
    }
    path = write_metrics_json(output_dir / "metrics.json", payload)
    print(format_table(summary, suite.names, cfg.get("table_rows", 40)))
    for key in ("missing_ground_truth", "missing_prediction", "missing_pairs"):
        if inputs.get(key):
            print(
                f"{key.replace('_', ' ')} ({len(inputs[key])}): {', '.join(inputs[key][:20])}"
                + (" ..." if len(inputs[key]) > 20 else "")
            )
    print(f"metrics written to {path}")
    for settings in _wandb_settings(cfg):
        log_to_wandb(summary, suite.names, settings, payload["config"])
    return payload


def _wandb_settings(cfg: DictConfig) -> list[dict[str, Any]]:
    """The W&B logger nodes of ``cfg.logger`` (``logger=wandb``); other loggers have nothing to add here."""
    loggers = cfg.get("logger") or {}
    found = []
    for name, node in loggers.items():
        if isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("WandbLogger"):
            found.append(OmegaConf.to_container(node, resolve=True))
        elif isinstance(node, DictConfig):
            log.info("logger %s is not used by evaluation (metrics.json holds the results)", name)
    return found


def _environment(cfg: DictConfig) -> dict[str, Any]:
    import torch

    from reenact.metrics.backends import package_version

    return {
        "reenact": package_version("reenact"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(cfg.device),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _plain_config(cfg: DictConfig) -> dict[str, Any]:
    container = {k: v for k, v in cfg.items() if k != "hydra"}
    try:
        return OmegaConf.to_container(OmegaConf.create(container), resolve=True, throw_on_missing=False)
    except Exception:  # an interpolation that needs Hydra's runtime (e.g. when composed in a test)
        return OmegaConf.to_container(OmegaConf.create(container), resolve=False)


@with_override_check
@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors(describe_error):
        evaluate(cfg)


def describe_error(exc: BaseException) -> str:
    """An input problem as written; another error (a backend, a config value) with its class name."""
    return first_line(exc) if isinstance(exc, EvaluationInputError) else one_line(exc, with_type=True)


if __name__ == "__main__":
    main()
