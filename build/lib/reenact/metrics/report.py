"""Presenting results: a text table, an atomically written metrics.json, and an optional W&B table."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_COLUMN_FORMATS = {
    "psnr": "{:.2f}",
    "ssim": "{:.4f}",
    "akd": "{:.3f}",
    "mkr": "{:.3f}",
    "aed": "{:.4f}",
    "fid": "{:.2f}",
}


def _cell(metric: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return _COLUMN_FORMATS.get(metric, "{:.4f}").format(value)
    return str(value)


def format_table(summary: Mapping[str, Any], metric_names: Sequence[str], max_rows: int = 40) -> str:
    """Per-video rows (at most ``max_rows``) and an OVERALL row; FID (a set metric) on its own line.

    When ``summary["baselines"]["copy_source"]`` exists, its metrics follow as ``copy_<metric>`` columns.
    """
    columns = [n for n in metric_names if n != "fid"]
    copy = (summary.get("baselines") or {}).get("copy_source")
    copy_columns = list(copy["overall"]) if copy else []
    per_video: Mapping[str, Mapping[str, Any]] = summary["per_video"]
    width = max([len("OVERALL"), *(min(len(n), 48) for n in per_video)]) + 2
    header = (
        f"{'video':<{width}}{'frames':>8}"
        + "".join(f"{n:>10}" for n in columns)
        + "".join(f"{'copy_' + n:>11}" for n in copy_columns)
    )

    def cells(values: Mapping[str, Any], copy_values: Mapping[str, Any]) -> str:
        return "".join(f"{_cell(n, values.get(n)):>10}" for n in columns) + "".join(
            f"{_cell(n, copy_values.get(n)):>11}" for n in copy_columns
        )

    lines = [header, "-" * len(header)]
    for index, (name, entry) in enumerate(per_video.items()):
        if index == max_rows:
            lines.append(f"... {len(per_video) - max_rows} more videos (see metrics.json)")
            break
        shown = name if len(name) <= 48 else name[:45] + "..."
        lines.append(f"{shown:<{width}}{entry.get('frames', 0):>8}" + cells(entry, entry.get("copy_source") or {}))
    lines.append("-" * len(header))
    overall = summary["overall"]
    lines.append(
        f"{'OVERALL':<{width}}{summary['counts']['frames']:>8}" + cells(overall, copy["overall"] if copy else {})
    )
    if copy:
        lines.append("copy_*: the copy-source baseline (frame 0 shown for every frame)")
    if "fid" in metric_names:
        lines.append(f"FID over all frames: {_cell('fid', overall.get('fid'))}")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_metrics_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Writes ``payload`` as JSON atomically (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_json_safe(payload), indent=2, allow_nan=False)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def log_to_wandb(
    summary: Mapping[str, Any],
    metric_names: Sequence[str],
    settings: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
) -> str | None:
    """Logs the per-video and overall tables and the overall values as the run summary; returns the run dir.

    ``settings`` are the W&B logger node's fields: project, entity, name, save_dir, offline, group, tags,
    job_type.
    """
    import wandb

    save_dir = settings.get("save_dir")
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=settings.get("project") or "reenact",
        entity=settings.get("entity") or None,
        name=settings.get("name") or None,
        dir=save_dir or None,
        mode="offline" if settings.get("offline") else None,
        group=settings.get("group") or None,
        tags=list(settings.get("tags") or []) or None,
        job_type=settings.get("job_type") or "evaluate",
        config=dict(config or {}),
        reinit="finish_previous",
    )
    try:
        columns = [n for n in metric_names if n != "fid"]
        rows = [
            [name, entry.get("frames"), *(_json_safe(entry.get(n)) for n in columns)]
            for name, entry in summary["per_video"].items()
        ]
        run.log({"eval/per_video": wandb.Table(columns=["video", "frames", *columns], data=rows)})
        overall = {n: _json_safe(v) for n, v in summary["overall"].items()}
        run.log({"eval/overall": wandb.Table(columns=list(overall), data=[list(overall.values())])})
        for name, value in overall.items():
            if value is not None:
                run.summary[f"eval/{name}"] = value
        for baseline, result in (summary.get("baselines") or {}).items():
            for name, value in result["overall"].items():
                if value is not None:
                    run.summary[f"eval/{baseline}_{name}"] = value
        return getattr(run, "dir", None)
    finally:
        run.finish()
