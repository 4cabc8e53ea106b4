"""Finding and reading the videos to score: video files, frame folders and FOMM's PNG strips.

A directory is scanned (not recursively) for
- video files (``.mp4``, ``.mov``, ``.mkv``, ``.avi``, ``.webm``, ``.gif``, ...), read with
  :func:`reenact.data.video.read_video`;
- frame folders (a directory of numbered ``.png``/``.jpg`` frames, e.g. FOMM's ``vox-png`` test set);
- single images (``.png``/``.jpg``) holding a *strip* of square frames side by side along the width,
  as FOMM's ``reconstruction.py`` writes them (H x (T * H)).
A video's *name* is its file or folder name without the known video/image suffixes, so
``id#clip#1#2.mp4.png`` (FOMM's output), ``id#clip#1#2.mp4/`` (a frame folder) and ``id#clip#1#2.mp4``
all match each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reenact.errors import ReenactError
from reenact.utils.messages import first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class EvaluationInputError(ReenactError, ValueError):
    """Bad evaluation input (missing folder, no videos, unreadable file); the message is one line."""


def _video_suffixes() -> frozenset[str]:
    from reenact.data.video import VIDEO_SUFFIXES

    return frozenset(VIDEO_SUFFIXES)


def video_name(path: Path) -> str:
    """The matching key: the name without trailing video/image suffixes (``a.mp4.png`` -> ``a``)."""
    known = _video_suffixes() | set(IMAGE_SUFFIXES)
    name = path.name
    while Path(name).suffix.lower() in known and Path(name).stem:
        name = Path(name).stem
    return name


def discover_videos(directory: str | Path) -> dict[str, Path]:
    """{name: path} of every video, frame folder or PNG strip directly inside ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EvaluationInputError(f"not a directory: {directory}")
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue  # hidden files and half-written outputs
        suffix = path.suffix.lower()
        is_video = path.is_file() and (suffix in _video_suffixes() or suffix in IMAGE_SUFFIXES)
        if not (is_video or (path.is_dir() and _holds_frames(path))):
            continue
        name = video_name(path)
        if name in found:
            raise EvaluationInputError(f"two videos named {name!r} in {directory}: {found[name].name}, {path.name}")
        found[name] = path
    return found


def _holds_frames(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") for p in folder.iterdir())


def read_png_strip(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """A strip of square frames laid side by side (H, T * H, 3) -> (T, H, H, 3) uint8."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            strip = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise EvaluationInputError(f"unreadable image {path} ({first_line(exc)})") from None
    height, width = strip.shape[:2]
    if width % height:
        raise EvaluationInputError(
            f"{path} is {width}x{height}: not a strip of square frames (width must be a multiple of height)"
        )
    frames = strip.reshape(height, width // height, height, 3).transpose(1, 0, 2, 3)  # (T, H, H, 3)
    return np.ascontiguousarray(frames[:max_frames] if max_frames is not None else frames)


def load_video(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a video file, frame folder or PNG strip."""
    from reenact.data.video import VideoError, read_video

    path = Path(path)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return read_png_strip(path, max_frames)
    try:
        return read_video(path, max_frames=max_frames)
    except VideoError as exc:
        raise EvaluationInputError(first_line(exc)) from None


@dataclass
class MatchedVideos:
    """Prediction/ground-truth pairs matched by name, plus what could not be matched."""

    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)
    missing_ground_truth: list[str] = field(default_factory=list)  # predictions without a GT video
    missing_prediction: list[str] = field(default_factory=list)  # GT videos without a prediction


def match_videos(pred_dir: str | Path, gt_dir: str | Path) -> MatchedVideos:
    """Pairs videos of the two folders by name; unmatched names are listed, not fatal."""
    predictions, ground_truth = discover_videos(pred_dir), discover_videos(gt_dir)
    if not predictions:
        raise EvaluationInputError(f"no videos found in pred_dir {pred_dir}")
    if not ground_truth:
        raise EvaluationInputError(f"no videos found in gt_dir {gt_dir}")
    matched = MatchedVideos(
        pairs=[(name, predictions[name], ground_truth[name]) for name in predictions if name in ground_truth],
        missing_ground_truth=[name for name in predictions if name not in ground_truth],
        missing_prediction=[name for name in ground_truth if name not in predictions],
    )
    if not matched.pairs:
        raise EvaluationInputError(
            f"no video name in {pred_dir} matches one in {gt_dir} "
            f"(e.g. {next(iter(predictions))!r} vs {next(iter(ground_truth))!r})"
        )
    return matched
