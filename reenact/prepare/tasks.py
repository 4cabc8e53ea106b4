"""Units of work (one raw video each) and the parallel runner.

Each task is a picklable dataclass run by a module-level function, so ``--workers N`` can hand them to
a spawn-started process pool; models are built once per process. Any error inside a task becomes a
one-line :class:`Failure` in the report and never stops the run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from reenact.data.video import VideoError, VideoInfo, probe_video
from reenact.face.crop import IntBox, centre_square
from reenact.prepare.clips import (
    ClipSpec,
    OutputOptions,
    clip_name,
    clip_path,
    complete_side_files,
    extract_clips,
    is_complete,
    safe_id,
)
from reenact.prepare.report import Failure, PrepareReport
from reenact.prepare.sources import ClipError, ClipRow, resolve_clip, split_of_video
from reenact.prepare.tubes import (
    TubeCrop,
    TubeRules,
    cached_face_detector,
    detect_video_faces,
    detection_min_face,
    select_tubes,
    track_tubes,
)
from reenact.utils.messages import first_line

MANIFEST_VERSION = 2  # 2: the manifest lists the clips taken as they are


@dataclass(frozen=True)
class ListedVideoTask:
    """voxceleb / talkinghead: the listed clips of one raw video that still need work."""

    video_id: str
    raw_path: str | None
    rows: tuple[ClipRow, ...]
    options: OutputOptions

    @property
    def label(self) -> str:
        return self.raw_path or self.video_id


@dataclass(frozen=True)
class FolderSettings:
    detector: str = "mtcnn"
    device: str = "cpu"
    detect_every: int = 1
    detect_height: int | None = 360
    min_score: float | None = None
    rules: TubeRules = TubeRules()
    test_fraction: float = 0.0
    test_videos: tuple[str, ...] = ()  # video ids that go to test/ whatever test_fraction says
    cropped: bool = False  # the videos are face crops already: no detection, every frame's centre square


@dataclass(frozen=True)
class FolderVideoTask:
    """folder: detect, track and cut every usable face tube of one video (with ``cropped``: cut the whole
    video, in pieces of at most ``max_frames``)."""

    video_id: str
    path: str
    settings: FolderSettings
    options: OutputOptions

    @property
    def label(self) -> str:
        return self.path

    @property
    def person_id(self) -> str:
        """The file's stem up to its first ``#`` when it has one (a clip already named ``person#video#...``, as
        VoxCeleb's are), else the video id: identity sampling then draws pairs per person, not per clip."""
        stem = Path(self.path).stem
        return safe_id(stem.split("#", 1)[0]) if "#" in stem else self.video_id


def run_listed_task(task: ListedVideoTask) -> PrepareReport:
    report = PrepareReport()
    todo: list[ClipRow] = []
    for row in task.rows:
        clip = clip_path(task.options, row.split, row.name)
        if clip.exists():  # written earlier without the side files now requested
            complete_side_files(clip, task.options)
            report.written.append(str(clip))
        else:
            todo.append(row)
    if not todo:
        return report
    count = f"{len(todo)} clip(s) not written"
    if task.raw_path is None:
        report.failed.append(Failure(task.video_id, f"raw video not found (looked for {task.video_id}.mp4/.mkv/"
                                                    f".webm/.mov/.m4v/.avi and a folder {task.video_id}/); {count}"))
        return report
    try:
        info = probe_video(task.raw_path)
    except VideoError as exc:
        report.failed.append(Failure(task.raw_path, f"{exc}; {count}"))
        return report
    specs: list[ClipSpec] = []
    for row in todo:
        try:
            specs.append(resolve_clip(row, info))
        except ClipError as exc:
            report.failed.append(Failure(str(clip_path(task.options, row.split, row.name)), str(exc)))
    report.merge(extract_clips(Path(task.raw_path), specs, task.options))
    return report


def manifest_path(options: OutputOptions, video_id: str) -> Path:
    return Path(options.out_dir) / ".prepare" / "folder" / f"{video_id}.json"


def _manifest_key(task: FolderVideoTask) -> dict[str, Any]:
    stat = Path(task.path).stat()
    return {
        "version": MANIFEST_VERSION,
        "source": {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "settings": json.loads(json.dumps(asdict(task.settings))),
        "output": {"size": task.options.size, "fmt": task.options.fmt},
    }


def finished_folder_task(task: FolderVideoTask) -> dict[str, Any] | None:
    """The manifest of an earlier identical run whose clips are all complete, else None."""
    path = manifest_path(task.options, task.video_id)
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("key") != _manifest_key(task):
            return None
    except (OSError, ValueError):
        return None
    clips = [Path(task.options.out_dir) / c for c in manifest.get("clips", [])]
    return manifest if all(is_complete(c, task.options) for c in clips) else None


def _write_manifest(task: FolderVideoTask, clips: list[Path], as_is: list[Path], reasons: list[str]) -> None:
    path = manifest_path(task.options, task.video_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    out_dir = Path(task.options.out_dir)
    body = {"key": _manifest_key(task), "clips": [str(c.relative_to(out_dir)) for c in clips],
            "as_is": [str(c.relative_to(out_dir)) for c in as_is], "rejected": reasons}
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(body, indent=1))
    os.replace(temporary, path)


def folder_split(video_id: str, settings: FolderSettings) -> str:
    """``test`` for a video named in ``test_videos``, else the hash rule of ``test_fraction``."""
    return "test" if video_id in settings.test_videos else split_of_video(video_id, settings.test_fraction)


def _whole_video_pieces(info: VideoInfo, rules: TubeRules) -> tuple[list[tuple[int, int, IntBox]], list[str]]:
    """``--cropped``: the video cut into pieces of at most ``max_frames``, each cropped to the centre square;
    a piece shorter than ``min_frames`` (the tail of a long video, or a short video) is refused with its reason."""
    box = centre_square(info.width, info.height)
    pieces: list[tuple[int, int, IntBox]] = []
    reasons: list[str] = []
    for start in range(0, info.num_frames, rules.max_frames):
        end = min(start + rules.max_frames, info.num_frames)
        if end - start < rules.min_frames:
            reasons.append(f"frames {start}-{end}: {end - start} frames < min_frames {rules.min_frames} "
                           f"(--min-frames {end - start} keeps it)")
        else:
            pieces.append((start, end, box))
    return pieces, reasons


def _detected_tubes(
    task: FolderVideoTask, info: VideoInfo, report: PrepareReport
) -> tuple[list[TubeCrop], list[str]]:
    settings = task.settings
    min_face = detection_min_face(settings.rules.min_size, info.height, settings.detect_height)
    detector = cached_face_detector(settings.detector, settings.device, settings.detect_height,
                                    settings.min_score, min_face)
    detections, _, seconds = detect_video_faces(Path(task.path), detector, settings.detect_every)
    report.detected_frames += len(detections)
    report.detection_seconds += seconds
    return select_tubes(track_tubes(detections, settings.rules), info.width, info.height, settings.rules)


# The reason given for a video where no face was found at all, with the options that might still find one.
NO_FACE = ("no face detected (another --detector, --detect-height 0 or a lower --min-score may find it; "
           "if the videos are already face crops, --cropped takes every frame as it is)")


def run_folder_task(task: FolderVideoTask) -> PrepareReport:
    report = PrepareReport()
    settings, options = task.settings, task.options
    try:
        info = probe_video(task.path)
        if info.num_frames < settings.rules.min_frames:
            # no tube can be long enough; say so before the detector runs (a detector may fail on such input)
            kept, reasons = [], [f"the video is too short: {info.num_frames} frame(s) < min_frames "
                                 f"{settings.rules.min_frames} (--min-frames {max(info.num_frames, 1)} keeps it)"]
        elif settings.cropped:
            pieces, reasons = _whole_video_pieces(info, settings.rules)
            kept = [(start, end, box, True) for start, end, box in pieces]
        else:
            tubes, reasons = _detected_tubes(task, info, report)
            kept = [(t.tube.start, t.tube.end, t.box, t.as_is) for t in tubes]
    except VideoError as exc:
        report.failed.append(Failure(task.path, str(exc)))
        return report
    if not kept:
        report.no_clips.append(Failure(task.path, "; ".join(reasons) if reasons else NO_FACE))
    split = folder_split(task.video_id, settings)
    clips: list[Path] = []
    as_is: list[Path] = []
    specs: list[ClipSpec] = []
    for start, end, crop, whole in kept:
        name = clip_name(task.person_id, task.video_id, start, end)
        if any(c.name == name for c in clips):  # two faces over the same frames
            name = clip_name(task.person_id, f"{task.video_id}-face{len(clips)}", start, end)
        clip = clip_path(options, split, name)
        clips.append(clip)
        if whole:
            as_is.append(clip)
            report.as_is.append(str(clip))
        if is_complete(clip, options):
            report.skipped.append(str(clip))
        elif clip.exists():
            complete_side_files(clip, options)
            report.written.append(str(clip))
        else:
            specs.append(ClipSpec(name, split, tuple(range(start, end)), crop, info.fps))
    clip_report = extract_clips(Path(task.path), specs, options)
    report.merge(clip_report)
    if not clip_report.failed:
        _write_manifest(task, clips, as_is, reasons)
    return report


def _guarded(function: Callable[[Any], PrepareReport], task: Any) -> PrepareReport:
    try:
        return function(task)
    except Exception as exc:  # one bad video must not end a long run
        report = PrepareReport()
        report.failed.append(Failure(task.label, f"{type(exc).__name__}: {first_line(exc)}"))
        return report


def _init_worker(threads: int) -> None:
    # Set before torch is imported (lazily, by the detectors) so its thread pool starts at this size.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import cv2

    cv2.setNumThreads(threads)


class _Call:
    """Picklable ``_guarded(function, task)`` for the process pool."""

    def __init__(self, function: Callable[[Any], PrepareReport]) -> None:
        self.function = function

    def __call__(self, task: Any) -> PrepareReport:
        return _guarded(self.function, task)


def execute(
    tasks: Sequence[Any], function: Callable[[Any], PrepareReport], workers: int, desc: str
) -> PrepareReport:
    """Run tasks in-process (workers <= 1) or in a spawn process pool, with a tqdm bar over videos."""
    report = PrepareReport()
    if not tasks:
        return report
    bar = tqdm(total=len(tasks), desc=desc, unit="video", disable=None)
    try:
        if workers <= 1 or len(tasks) == 1:
            for task in tasks:
                report.merge(_guarded(function, task))
                bar.update()
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_init_worker, initargs=(threads,)) as pool:
                for result in pool.imap_unordered(_Call(function), tasks):
                    report.merge(result)
                    bar.update()
    finally:
        bar.close()
    return report
