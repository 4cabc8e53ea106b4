"""``python -m reenact.prepare {voxceleb,talkinghead,folder} ...``: cut face clips for training.

See ``data/README.md`` for the datasets, exact commands and the output layout. ``run(args)`` is the
testable entry point (returns a :class:`PrepareReport`); ``main()`` prints the report and returns the
exit code: 0 when the run went through (even if some videos were missing or broken: they are listed),
2 on a usage error that stops anything from being processed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from reenact.cli import user_errors
from reenact.face.detection import DETECTOR_NAMES
from reenact.face.landmarks import LANDMARK_BACKENDS
from reenact.face.optional import require_face_alignment
from reenact.prepare.clips import OutputOptions, clip_path, is_complete, safe_id
from reenact.prepare.outdir import output_folder
from reenact.prepare.report import Failure, PrepareReport, PrepareUsageError
from reenact.prepare.sources import (
    RAW_SUFFIXES,
    ClipRow,
    find_raw_video,
    read_talkinghead_tubes,
    read_vox_metadata,
)
from reenact.prepare.tasks import (
    NO_FACE,
    FolderSettings,
    FolderVideoTask,
    ListedVideoTask,
    execute,
    finished_folder_task,
    run_folder_task,
    run_listed_task,
)
from reenact.prepare.tubes import TubeRules
from reenact.utils.messages import first_line


def _even_size(text: str) -> int:
    value = int(text)
    if value < 16 or value % 2:
        raise argparse.ArgumentTypeError(f"--size must be an even number >= 16 (H.264 needs even sizes), got {value}")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="output root; clips go to OUT_DIR/{train,test}/")
    parser.add_argument("--size", type=_even_size, default=256, help="output side in pixels (256 or 512; default 256)")
    parser.add_argument("--format", dest="fmt", choices=("mp4", "png"), default="mp4",
                        help="mp4: H.264 with 8-frame GOP; png: a frame folder named like the clip")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--landmarks", action="store_true", help="also write {clip}.landmarks.npy (T,68,2)")
    parser.add_argument("--pose", action="store_true", help="also write {clip}.pose.npy (T,3) yaw/pitch/roll")
    parser.add_argument("--landmark-backend", choices=LANDMARK_BACKENDS, default="dlib")
    parser.add_argument("--device", default="cpu", help="torch device for the detectors (cpu, cuda)")
    parser.add_argument("--limit", type=int, default=None, help="process only the first N listed clips/videos")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reenact.prepare",
        description="Cut face clips for training from VoxCeleb, TalkingHead-1KH or any folder of videos.",
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    vox = sub.add_parser("voxceleb", help="crop VoxCeleb clips listed in vox-metadata.csv")
    vox.add_argument("--metadata", type=Path, required=True, help="vox-metadata.csv")
    vox.add_argument("--raw", type=Path, required=True, help="folder of downloaded videos {video_id}.mp4")
    _add_output_arguments(vox)
    th = sub.add_parser("talkinghead", help="crop TalkingHead-1KH tubes")
    th.add_argument("--tubes", type=Path, required=True, help="tubes file: video_name,H,W,S,E,L,T,R,B per line")
    th.add_argument("--raw", type=Path, required=True, help="folder of the 1-minute chunks {video_name}.mp4")
    th.add_argument("--split", choices=("auto", "train", "test"), default="auto",
                    help="auto: test when the tubes file name contains 'val' or 'test'")
    _add_output_arguments(th)
    folder = sub.add_parser("folder", help="detect and track faces in any folder of videos")
    folder.add_argument("in_dir", metavar="IN_DIR", type=Path, help="folder of videos (searched recursively)")
    folder.add_argument("--detector", choices=DETECTOR_NAMES, default="mtcnn")
    folder.add_argument("--detect-every", type=int, default=1, help="detect on every n-th frame (default 1)")
    folder.add_argument("--detect-height", type=int, default=360,
                        help="detect on frames scaled to this height (crop_vox: 360); 0 = full size")
    folder.add_argument("--min-score", type=float, default=None, help="detector threshold (default per backend)")
    folder.add_argument("--min-size", type=float, default=256.0, help="smallest face box side in pixels (256)")
    folder.add_argument("--min-frames", type=int, default=64, help="shortest clip (64)")
    folder.add_argument("--max-frames", type=int, default=1024, help="longest clip; longer tubes are cut (1024)")
    folder.add_argument("--iou-threshold", type=float, default=0.25, help="IoU with a tube's first box (0.25)")
    folder.add_argument("--increase", type=float, default=0.1, help="margin added around the face box (0.1)")
    folder.add_argument("--test-fraction", type=float, default=0.0,
                        help="fraction of videos (by a hash of the name) put in test/ (default 0: all train)")
    folder.add_argument("--test-videos", type=_names, default=(), metavar="ID[,ID...]",
                        help="videos (file stems) put in test/, e.g. one person per video held out: d9,d12")
    folder.add_argument("--cropped", action="store_true",
                        help="the videos are face crops already (VoxCeleb as distributed, your own crops): no "
                             "detection; every frame's centre square is resized to --size and re-encoded. "
                             "Without it, a video whose face fills the frame is found and kept as it is")
    _add_output_arguments(folder)
    return parser


def _check_backends(ns: argparse.Namespace) -> None:
    """Fail early, once, when a requested backend cannot run (rather than once per video)."""
    wanted: list[tuple[str, str]] = []
    if ns.landmarks or ns.pose:
        wanted.append(("landmark", ns.landmark_backend))
    if ns.mode == "folder" and not ns.cropped:
        wanted.append(("detector", ns.detector))
    for kind, name in wanted:
        if name == "fan":
            try:
                require_face_alignment(need_landmark_model=kind == "landmark")
            except (ImportError, FileNotFoundError) as exc:
                raise PrepareUsageError(str(exc)) from None
            continue
        package = "facenet_pytorch" if name == "mtcnn" else "dlib"
        if importlib.util.find_spec(package) is None:
            raise PrepareUsageError(f"{kind} backend {name!r} needs {package} (pip install 'reenact[face]')")


def _output_options(ns: argparse.Namespace) -> OutputOptions:
    return OutputOptions(str(ns.out_dir), ns.size, ns.fmt, ns.landmarks, ns.pose, ns.landmark_backend, ns.device)


def _listed_tasks(
    rows: list[ClipRow], raw: Path, options: OutputOptions, report: PrepareReport
) -> list[ListedVideoTask]:
    if not raw.is_dir():
        raise PrepareUsageError(f"raw video folder not found: {raw}")
    per_video: dict[str, list[ClipRow]] = {}
    seen: set[str] = set()
    for row in rows:
        if row.name in seen:
            continue
        seen.add(row.name)
        clip = clip_path(options, row.split, row.name)
        if is_complete(clip, options):
            report.skipped.append(str(clip))
        else:
            per_video.setdefault(row.video_id, []).append(row)
    tasks = []
    for video_id, todo in per_video.items():
        found = find_raw_video(raw, video_id)
        tasks.append(ListedVideoTask(video_id, None if found is None else str(found), tuple(todo), options))
    return tasks


def _input_videos(in_dir: Path, out_dir: Path) -> list[tuple[str, Path]]:
    if not in_dir.is_dir():
        raise PrepareUsageError(f"input folder not found: {in_dir}")
    out_resolved = out_dir.resolve()
    files = sorted(
        p for p in in_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in RAW_SUFFIXES and not p.name.startswith(".")
        and out_resolved not in p.resolve().parents
    )
    if not files:
        raise PrepareUsageError(f"no videos ({', '.join(RAW_SUFFIXES)}) found in {in_dir}")
    stems = [safe_id(p.stem) for p in files]
    videos = []
    for path, stem in zip(files, stems, strict=True):
        # Same stem twice (a/x.mp4, b/x.mp4): use the relative path so ids stay unique.
        video_id = stem if stems.count(stem) == 1 else safe_id(str(path.relative_to(in_dir).with_suffix("")))
        videos.append((video_id, path))
    return videos


def _folder_tasks(ns: argparse.Namespace, options: OutputOptions, report: PrepareReport) -> list[FolderVideoTask]:
    rules = TubeRules(ns.iou_threshold, ns.max_frames, ns.min_frames, ns.min_size, ns.increase)
    if ns.detect_every < 1 or ns.min_frames < 1 or ns.max_frames < ns.min_frames:
        raise PrepareUsageError("need --detect-every >= 1, --min-frames >= 1 and --max-frames >= --min-frames")
    if ns.detect_height and ns.detect_height < 32:
        raise PrepareUsageError(f"--detect-height must be 0 (full size) or at least 32, got {ns.detect_height}")
    if not 0.0 <= ns.test_fraction <= 1.0:
        raise PrepareUsageError(f"--test-fraction must be in [0, 1], got {ns.test_fraction}")
    videos = _input_videos(ns.in_dir, ns.out_dir)
    unknown = sorted(set(ns.test_videos) - {video_id for video_id, _ in videos})
    if unknown:
        raise PrepareUsageError(f"--test-videos: no video {', '.join(unknown)} in {ns.in_dir} "
                                f"(give file names without the extension: {videos[0][0]}, ...)")
    settings = FolderSettings(ns.detector, ns.device, ns.detect_every, ns.detect_height or None, ns.min_score,
                              rules, ns.test_fraction, tuple(sorted(set(ns.test_videos))), ns.cropped)
    tasks = []
    for video_id, path in videos[: ns.limit]:
        task = FolderVideoTask(video_id, str(path), settings, options)
        manifest = finished_folder_task(task)
        if manifest is None:
            tasks.append(task)
            continue
        report.skipped += [str(Path(options.out_dir) / c) for c in manifest["clips"]]
        report.as_is += [str(Path(options.out_dir) / c) for c in manifest.get("as_is", [])]
        if not manifest["clips"]:
            reasons = "; ".join(manifest.get("rejected", [])) or NO_FACE
            report.no_clips.append(Failure(str(path), f"(earlier run) {reasons}"))
    return tasks


def run(args: Sequence[str]) -> PrepareReport:
    """Parse the command line and prepare clips; raises PrepareUsageError on unusable input."""
    started = time.perf_counter()
    ns = build_parser().parse_args(list(args))
    if ns.workers < 1:
        raise PrepareUsageError(f"--workers must be >= 1, got {ns.workers}")
    _check_backends(ns)
    options = _output_options(ns)
    report = PrepareReport()
    if ns.mode == "folder":
        tasks: list = _folder_tasks(ns, options, report)
        function, desc = run_folder_task, "folder"
    else:
        if ns.mode == "voxceleb":
            rows = read_vox_metadata(ns.metadata)
        else:
            rows = read_talkinghead_tubes(ns.tubes, ns.split)
        tasks = _listed_tasks(rows[: ns.limit], ns.raw, options, report)
        function, desc = run_listed_task, ns.mode
    # The inputs are valid: before any decoding or detection, make sure the results can be written at all,
    # and keep the folder free of temporaries left by interrupted runs (and by this one, should it fail).
    with output_folder(ns.out_dir):
        result = execute(tasks, function, ns.workers, desc)
    report.merge(result)
    report.seconds = time.perf_counter() - started
    return report


def main(argv: Sequence[str] | None = None) -> int:
    with user_errors(first_line, exit=False) as reported:  # PrepareUsageError, VideoError, ConfigError...
        report = run(sys.argv[1:] if argv is None else argv)
    if reported.status:
        return reported.status
    print(report.summary())
    return 0
