"""The three evaluation protocols, each feeding a :class:`~reenact.metrics.suite.MetricSuite`.

- ``score_directories``: existing prediction videos against ground-truth videos matched by name, so
  results of any codebase are scored the same way.
- ``score_reconstruction``: FOMM's reconstruction protocol (reconstruction.py): for each test video,
  frame 0 is the source and every frame (frame 0 included) is driven from it; the prediction is compared
  with the driving frame itself.
- ``score_cross_identity``: animation with relative motion; each driving video drives frame 0 of a video
  of another identity. AKD/MKR compare with the driving frames (pose following), AED with the source
  image (identity keeping). There is no pixel ground truth, so pixel metrics do not apply.

``model`` is what :func:`reenact.api.load_pretrained` returns: ``reconstruct(source, driving) -> dict``
with "prediction" (B, 3, H, W) in [0, 1], and ``animate(source_image, driving_frames, relative=True)``.
Datasets yield {"video": (T, 3, S, S) float32 in [0, 1], "name": str}.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from reenact.metrics.baselines import CopySourceBaseline
from reenact.metrics.sources import EvaluationInputError, load_video, match_videos, video_name
from reenact.metrics.suite import MetricSuite

log = logging.getLogger(__name__)


class VideoItems(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


def score_directories(
    suite: MetricSuite,
    pred_dir: str | Path,
    gt_dir: str | Path,
    max_frames: int | None = None,
    max_videos: int | None = None,
) -> dict[str, Any]:
    """Scores every prediction that has a ground-truth counterpart; returns what could not be matched and
    ``unreadable`` ({name: reason}): pairs skipped because either video cannot be decoded. One broken file
    does not cost the other videos their scores; only when no pair can be read at all is that an error."""
    matched = match_videos(pred_dir, gt_dir)
    for name in matched.missing_ground_truth:
        log.warning("no ground truth for prediction %s in %s: skipped", name, gt_dir)
    if matched.missing_prediction:
        log.warning("%d ground-truth videos have no prediction in %s", len(matched.missing_prediction), pred_dir)
    truncated = []
    unreadable: dict[str, str] = {}
    for name, pred_path, gt_path in matched.pairs[:max_videos]:
        try:
            prediction, target = load_video(pred_path, max_frames), load_video(gt_path, max_frames)
        except EvaluationInputError as exc:
            unreadable[name] = str(exc)
            continue
        if len(prediction) != len(target):
            # codebases differ by a frame or two at the end (codec padding); score the common part
            log.warning(
                "%s: %d predicted vs %d ground-truth frames; scoring the first %d",
                name,
                len(prediction),
                len(target),
                min(len(prediction), len(target)),
            )
            truncated.append(name)
            count = min(len(prediction), len(target))
            prediction, target = prediction[:count], target[:count]
        _score(suite, name, prediction, target)
        if name in truncated:
            suite.per_video[name]["frames_truncated"] = True
    if unreadable and not suite.per_video:
        raise EvaluationInputError(
            f"none of the {len(unreadable)} matched videos could be read; first: {next(iter(unreadable.values()))}"
        )
    return {
        "missing_ground_truth": matched.missing_ground_truth,
        "missing_prediction": matched.missing_prediction,
        "frames_truncated": truncated,
        "unreadable": unreadable,
    }


@torch.no_grad()
def score_reconstruction(
    suite: MetricSuite,
    model: Any,
    dataset: VideoItems,
    batch_size: int = 16,
    save_dir: str | Path | None = None,
    save_format: str = "mp4",
    fps: float = 25.0,
    baseline: CopySourceBaseline | None = None,
) -> dict[str, Any]:
    """Reconstruct every test video from its first frame and score it against itself; ``baseline`` also
    scores showing that first frame for every frame (the copy-source baseline) on the same videos."""
    if len(dataset) == 0:
        raise EvaluationInputError("the test set holds no videos")
    for index in range(len(dataset)):
        item = dataset[index]
        video, name = item["video"], str(item["name"])  # (T, 3, S, S)
        source = video[:1]  # (1, 3, S, S): FOMM uses frame 0 as the source
        chunks = []
        for start in range(0, video.shape[0], batch_size):
            driving = video[start : start + batch_size]  # (n, 3, S, S)
            output = model.reconstruct(source.expand(driving.shape[0], -1, -1, -1), driving)
            chunks.append(output["prediction"].detach().float().clamp(0.0, 1.0).cpu())
        prediction = torch.cat(chunks)  # (T, 3, S, S)
        _score(suite, name, prediction, video)
        if baseline is not None:
            baseline.score_video(name, video)
        if save_dir is not None:
            save_prediction(prediction, Path(save_dir), name, save_format, fps)
    return {}


@torch.no_grad()
def score_cross_identity(
    suite: MetricSuite,
    model: Any,
    sources: VideoItems,
    drivings: VideoItems,
    pairs: Sequence[tuple[str, str]] | None = None,
    max_pairs: int | None = None,
    relative: bool = True,
    save_dir: str | Path | None = None,
    save_format: str = "mp4",
    fps: float = 25.0,
) -> dict[str, Any]:
    """Drive frame 0 of a source video of another identity with each driving video.

    ``sources`` only needs frame 0 of each video (build it with max_frames=1). Without ``pairs`` each
    driving video gets the next source of another identity (:func:`default_source`); with ``pairs``
    (source, driving) names, pairs whose videos are absent are listed, not fatal.
    """
    source_images = {str(item["name"]): item["video"][0] for item in _items(sources)}  # name -> (3, S, S)
    if not source_images or len(drivings) == 0:
        raise EvaluationInputError("cross-identity evaluation needs source and driving videos; found none")
    wanted: dict[str, list[str]] = {}
    for source_name, driving_name in pairs or ():
        wanted.setdefault(driving_name, []).append(source_name)
    missing = [f"{s} -> {d}" for d, names in wanted.items() for s in names if s not in source_images]
    scored = 0
    for index in range(len(drivings)):
        if max_pairs is not None and scored >= max_pairs:
            break
        item = drivings[index]
        driving_name, driving = str(item["name"]), item["video"]  # (T, 3, S, S)
        if pairs is None:
            source_names = [default_source(list(source_images), driving_name, index)]
        else:
            source_names = [s for s in wanted.pop(driving_name, []) if s in source_images]
        for source_name in source_names[: None if max_pairs is None else max_pairs - scored]:
            source = source_images[source_name]  # (3, S, S)
            prediction = model.animate(source, driving, relative=relative).detach().float().clamp(0.0, 1.0).cpu()
            name = f"{video_name(Path(source_name))}__{video_name(Path(driving_name))}"
            _score(suite, name, prediction, driving, identity_reference=source[None])
            suite.per_video[name].update(source=source_name, driving=driving_name)
            scored += 1
            if save_dir is not None:
                save_prediction(prediction, Path(save_dir), name, save_format, fps)
    missing += [f"{s} -> {d}" for d, names in wanted.items() for s in names if s in source_images]
    for pair in missing:
        log.warning("cross pair %s: source or driving video not found; skipped", pair)
    if scored == 0:
        raise EvaluationInputError("no cross-identity pair could be scored (check the pairs file names)")
    return {"pairs": scored, "missing_pairs": missing}


def default_source(source_names: Sequence[str], driving_name: str, index: int) -> str:
    """For driving video ``index``, the next source (cyclically from index + 1) of another identity.

    The identity is the name's part before the first "#" (VoxCeleb's ``id#video#start#end``); names
    without "#" count as their own identity. Falls back to any other video when all share one identity.
    """

    def identity(name: str) -> str:
        return name.split("#", 1)[0]

    order = [source_names[(index + 1 + k) % len(source_names)] for k in range(len(source_names))]
    other = [s for s in order if identity(s) != identity(driving_name)] or [s for s in order if s != driving_name]
    if not other:
        raise EvaluationInputError(f"no source video other than {driving_name!r} for a cross-identity pair")
    return other[0]


def read_pairs_csv(path: str | Path) -> list[tuple[str, str]]:
    """(source, driving) names from a CSV with columns ``source`` and ``driving``."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"pairs file not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"source", "driving"} <= set(reader.fieldnames):
            raise EvaluationInputError(f"{path} needs the columns 'source' and 'driving', got {reader.fieldnames}")
        return [(row["source"], row["driving"]) for row in reader]


def save_prediction(prediction: torch.Tensor, folder: Path, name: str, save_format: str, fps: float) -> Path:
    """Writes (T, 3, H, W) frames as ``<name>.mp4`` (H.264, to watch) or a lossless ``<name>.png`` strip."""
    frames = (prediction.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    folder.mkdir(parents=True, exist_ok=True)
    stem = video_name(Path(name))
    if save_format == "mp4":
        from reenact.data.video_writer import write_video

        path = folder / f"{stem}.mp4"
        write_video(path, frames, fps)
    elif save_format == "png":
        from PIL import Image

        path = folder / f"{stem}.png"
        Image.fromarray(np.concatenate(list(frames), axis=1)).save(path)  # (H, T * W, 3), as FOMM writes
    else:
        raise ValueError(f"save_format must be 'mp4' or 'png', got {save_format!r}")
    return path


def _items(dataset: VideoItems) -> list[dict[str, Any]]:
    return [dataset[i] for i in range(len(dataset))]


def _score(suite: MetricSuite, name: str, prediction: Any, target: Any, identity_reference: Any = None) -> None:
    try:
        suite.score_video(name, prediction, target, identity_reference)
    except ValueError as exc:  # shape/length mismatches of the inputs, reported as bad input
        raise EvaluationInputError(f"{name}: {exc}") from None
