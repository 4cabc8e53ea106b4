"""Files in, video out: crop the source image(s) and the driving video, animate, write an mp4.

    from reenact.animation.video_job import AnimationOptions, animate_files
    results = animate_files(model, "portrait.jpg", "talk.mp4", "out.mp4", AnimationOptions(paste_back=True))

The output has the driving video's frame rate and exactly its number of frames (or ``max_frames``), and
carries its audio when it has some. The driving video is decoded in streams: once to find its face crop,
once for its motion (shared by all sources), and once more per source only for the side-by-side
video. A folder of source images gives one video per image; images without a face are skipped there
(with a warning), while a single source without a face stops with :class:`NoFaceError`. A list of images
(``source=[a.jpg,b.jpg]``) is several images of one person for one video, for a family that renders from several
sources: the first is the one the motion is transferred to (and pasted back into); the others lend appearance.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reenact.animation.cropping import (
    IMAGE_SUFFIXES,
    CropSettings,
    build_detector,
    driving_crop_box,
    even_size,
    list_source_images,
    paste_back,
    read_image,
    source_crop_box,
)
from reenact.animation.errors import AnimationInputError, NoFaceError
from reenact.animation.landmarks import LANDMARK_SIZE, crop_landmarks, landmark_detector, normalised
from reenact.animation.outputs import BackgroundWriter, output_paths, side_by_side_frame
from reenact.animation.pipeline import Animator, choose_reference, encode_driving, progress_bar
from reenact.animation.settings import AnimationSettings
from reenact.data.video import VideoError, VideoInfo, iter_frames, probe_video
from reenact.data.video_writer import write_video
from reenact.face import crop_and_resize
from reenact.face.crop import IntBox
from reenact.families.base import PASTE_BACK_OPTION, Motion
from reenact.families.motion import select_motion
from reenact.utils.constellation import closest_constellation
from reenact.utils.messages import first_line
from reenact.utils.visualize import to_uint8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnimationOptions(AnimationSettings):
    """:class:`AnimationSettings` plus what a file-to-file job adds: cropping, paste-back, the side-by-side video,
    the encoder's quality and a time range of the driving video."""

    start: float | None = None  # animate the driving video from this time (seconds)
    end: float | None = None  # ... up to this time (seconds, exclusive)
    paste_back: bool = False  # put the animated crop back into the full source image
    side_by_side: bool = False  # also write <output>_side_by_side.mp4: source | driving | result with keypoints
    crf: int = 18
    crop: CropSettings = field(default_factory=CropSettings)


@dataclass
class AnimationResult:
    source: Path
    output: Path | None
    num_frames: int = 0
    fps: float = 0.0
    source_box: IntBox | None = None
    reference_index: int = 0
    side_by_side: Path | None = None
    skipped: str | None = None  # why a source of a folder was skipped


@dataclass
class DrivingVideo:
    path: Path
    info: VideoInfo
    crop_box: IntBox
    num_frames: int
    first_frame: int = 0  # the index of the first animated frame (start=)
    motion: Motion | None = None  # the family's motion of every driving frame, once computed
    landmarks: np.ndarray | None = None  # (T, 68, 2) on LANDMARK_SIZE crops, NaN where no face was found

    def crops(self, size: int) -> Iterator[np.ndarray]:
        """The cropped frames (size, size, 3) uint8, ``num_frames`` of them."""
        for frame in itertools.islice(driving_frames(self.path), self.first_frame, self.first_frame + self.num_frames):
            yield crop_and_resize(frame, self.crop_box, size)

    def batches(self, size: int, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
        crops = self.crops(size)
        while chunk := list(itertools.islice(crops, batch_size)):
            yield image_tensor(np.stack(chunk), device)


def image_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).movedim(-1, -3).float() / 255.0


def driving_video_error(path: Path, error: VideoError) -> VideoError:
    """A VideoError that says the *driving video* cannot be decoded: of the two inputs, the message must say
    which one is broken, and FFmpeg's reason alone (``Invalid data found ...``) names neither."""
    detail = re.search(r"\((.*)\)$", first_line(error))
    reason = detail.group(1) if detail else first_line(error)
    return VideoError(f"driving video {path} cannot be decoded ({reason.removeprefix('cannot be decoded: ')})")


def driving_frames(path: Path) -> Iterator[np.ndarray]:
    """:func:`iter_frames` of the driving video, a decoding failure part-way reported as the driving video's."""
    try:
        yield from iter_frames(path)
    except VideoError as exc:
        raise driving_video_error(path, exc) from None


def prepare_driving(path: str | Path, options: AnimationOptions) -> DrivingVideo:
    """Probe the driving video and find its fixed face crop (a VideoError naming the driving video when it
    cannot be decoded)."""
    path = Path(path)
    if not path.exists():
        raise AnimationInputError(f"driving video not found: {path}")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        raise AnimationInputError(f"driving {path} is an image, not a video: the driving input must be a video "
                                  f"(or a folder of its frames); a still image goes in source=")
    try:
        info = probe_video(path)
    except VideoError as exc:
        raise driving_video_error(path, exc) from None
    first, last = frame_range(info, options.start, options.end)
    num_frames = last - first if options.max_frames is None else min(last - first, options.max_frames)
    if num_frames < 1:
        raise AnimationInputError(f"driving video {path}: nothing to animate (max_frames={options.max_frames}, "
                                  f"start={options.start}, end={options.end}, {info.num_frames} frames)")
    detector = build_detector(options.crop) if options.crop.driving else None
    frames = (itertools.islice(driving_frames(path), first, first + num_frames) if options.crop.driving
              else iter([_blank(info)]))
    box, found = driving_crop_box(frames, path, options.crop, detector, num_frames)
    if options.crop.driving:
        log.info("driving %s: face found on %d sampled frames, crop box %s", path.name, found, box)
    return DrivingVideo(path, info, box, num_frames, first)


def frame_range(info: VideoInfo, start: float | None, end: float | None) -> tuple[int, int]:
    """The frames [first, last) of the time range start..end seconds (None: the video's beginning / end)."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and not value >= 0:
            raise AnimationInputError(f"{name}={value}; give a time in seconds >= 0 or null")
    first = 0 if start is None else round(float(start) * info.fps)
    last = info.num_frames if end is None else min(info.num_frames, round(float(end) * info.fps))
    if first >= info.num_frames:
        raise AnimationInputError(f"start={start} s is past the driving video's end "
                                  f"({info.num_frames / info.fps:.2f} s)")
    if last <= first:
        raise AnimationInputError(f"end={end} s is not after start={start or 0} s")
    return first, last


def _blank(info: VideoInfo) -> np.ndarray:
    return np.zeros((info.height, info.width, 3), dtype=np.uint8)


def driving_landmarks(driving: DrivingVideo) -> np.ndarray:
    """(T, 68, 2) landmarks of the driving crops at LANDMARK_SIZE (pixels, NaN where none), computed once."""
    from reenact.face import stack_landmarks

    if driving.landmarks is None:
        detector = landmark_detector()
        driving.landmarks = stack_landmarks([detector.detect(crop) for crop in driving.crops(LANDMARK_SIZE)])
    return driving.landmarks


def landmark_reference(source_crop: np.ndarray, source_path: Path, driving: DrivingVideo) -> int:
    """The driving frame whose 68 landmarks, normalised for position and size, are nearest the source's."""
    detector = landmark_detector()
    source_points = detector.detect(source_crop)
    if source_points is None:
        raise AnimationInputError(f"reference_frame=best: no facial landmarks found in source {source_path}; "
                                  f"use best_frame_by=keypoints")
    driving_landmarks(driving)
    if not np.isfinite(driving.landmarks).all(axis=(1, 2)).any():
        raise AnimationInputError(f"reference_frame=best: no facial landmarks found in driving video {driving.path}")
    return closest_constellation(source_points, driving.landmarks)


def prepare_source(path: Path, options: AnimationOptions, detector: Any) -> tuple[Path, np.ndarray, IntBox]:
    """The source image (scaled to ``source_max_dim``) and its face crop box; NoFaceError without a face."""
    image = read_image(path, options.crop.source_max_dim)
    box, _ = source_crop_box(image, path, options.crop, detector)
    return path, image, box


def animate_one(model: Any, source: tuple[Path, np.ndarray, IntBox] | list[tuple[Path, np.ndarray, IntBox]],
                driving: DrivingVideo, output: Path, options: AnimationOptions) -> AnimationResult:
    """Animate one prepared source image (or several of one person, the first being the main one) with the prepared
    driving video; writes ``output``."""
    group = source if isinstance(source, list) else [source]
    source_path, image, box = group[0]
    size = model.frame_size
    source_crop = crop_and_resize(image, box, size)
    crops = np.stack([source_crop, *(crop_and_resize(i, b, size) for _, i, b in group[1:])])  # (S, size, size, 3)
    transfer, transfer_options = model.network.check_transfer(options.transfer, dict(options.transfer_options))
    if PASTE_BACK_OPTION in transfer_options:  # the family's transfer depends on it (see families/base.py)
        transfer_options[PASTE_BACK_OPTION] = options.paste_back
    needs_landmarks = model.network.transfer_needs_landmarks(transfer_options)
    source_landmarks = crop_landmarks([crop_and_resize(image, box, LANDMARK_SIZE)]) if needs_landmarks else None
    animator = Animator(model.network, image_tensor(crops if len(group) > 1 else source_crop, model.device),
                        options.precision, source_landmarks)
    if driving.motion is None:
        with progress_bar(driving.num_frames, f"motion {driving.path.name}", options.progress) as bar:
            driving.motion = encode_driving(
                model.network, driving.batches(size, options.batch_size, model.device), options.precision, bar,
                total=driving.num_frames)
        if options.smooth is not None:  # once per video: every source follows the same steady motion
            from reenact.animation.smoothing import smooth_motion

            driving.motion = smooth_motion(model.network, driving.motion, options.smooth,
                                           options.fps or driving.info.fps)
    motion_all = driving.motion
    if needs_landmarks:
        motion_all = {**driving.motion, "landmarks": normalised(driving_landmarks(driving), LANDMARK_SIZE)}
    if options.reference_frame == "best" and options.best_frame_by == "landmarks":
        reference = landmark_reference(crop_and_resize(image, box, LANDMARK_SIZE), source_path, driving)
    else:
        reference = choose_reference(model.network, animator.source_motion, driving.motion, options.reference_frame)
    writer_kwargs: dict[str, Any] = {"crf": options.crf}
    if driving.info.has_audio:
        writer_kwargs["audio_source"] = driving.path
        if driving.first_frame:
            writer_kwargs["audio_start_s"] = driving.first_frame / driving.info.fps
    side_path = output.with_name(f"{output.stem}_side_by_side.mp4") if options.side_by_side else None
    side_writer = BackgroundWriter(side_path, driving.info.fps, writer_kwargs) if side_path else None

    def points(motion: Motion) -> np.ndarray | None:
        """(B, K, 2) keypoints for the side-by-side panels, or None for a family without keypoints."""
        found = model.network.keypoints_2d(motion)
        return None if found is None else found.float().cpu().numpy()

    def frames() -> Iterator[np.ndarray]:
        driving_crops: Iterable[np.ndarray] = driving.crops(size) if side_writer else itertools.repeat(None)
        source_points = points(animator.source_motion)
        source_kp = None if source_points is None else source_points[0]
        with progress_bar(driving.num_frames, f"animate {source_path.name}", options.progress) as bar:
            offset = 0
            for out in animator.render_batches(motion_all, reference, options.batch_size, transfer,
                                               transfer_options, bar):
                count = out["prediction"].shape[0]
                kp_new = points(out["motion"])
                kp_drv = points(select_motion(driving.motion, slice(offset, offset + count)))
                for i, prediction in enumerate(out["prediction"]):
                    result = to_uint8(prediction)
                    if side_writer is not None:
                        side_writer.put(side_by_side_frame(source_crop, next(driving_crops), result,
                                                      [source_kp, None if kp_drv is None else kp_drv[i],
                                                       None if kp_new is None else kp_new[i]]))
                    yield even_size(paste_back(image, result, box) if options.paste_back else result)
                offset += count

    try:
        written = write_video(output, frames(), driving.info.fps, **writer_kwargs)
    except BaseException:
        if side_writer is not None:
            side_writer.close(abort=True)
        raise
    if side_writer is not None:
        side_writer.close()
    return AnimationResult(source_path, output, written, driving.info.fps, box, reference, side_path)


def animate_files(model: Any, source: str | Path | Sequence[str | Path], driving: str | Path,
                  output: str | Path | None = None, options: AnimationOptions | None = None,
                  default_dir: str | Path = ".") -> list[AnimationResult]:
    """Animate a source image (or every image of a folder) with a driving video; one result per source. A list of
    images is several images of one person: one video, one result."""
    options = options or AnimationOptions()
    if not isinstance(source, str | Path):
        paths = [Path(str(p)) for p in source]
        if len(paths) > 1:
            return [animate_group(model, paths, driving, output, options, default_dir)]
        if not paths:
            raise AnimationInputError("source=[]: give a source image")
        source = paths[0]
    options.check(model.network)  # the transfer mode and options, in one line before any file is read
    sources = list_source_images(source)
    outputs = output_paths(sources, Path(driving), output, Path(default_dir))
    detector = build_detector(options.crop) if options.crop.source else None
    # a single source is checked for a face before the (slower) pass over the driving video
    first = prepare_source(sources[0], options, detector) if len(sources) == 1 else None
    prepared = prepare_driving(driving, options)
    results = []
    for source_path, output_path in zip(sources, outputs, strict=True):
        try:
            source_image = first or prepare_source(source_path, options, detector)
            results.append(animate_one(model, source_image, prepared, output_path, options))
        except NoFaceError as exc:
            if len(sources) == 1:
                raise
            log.warning("skipped %s: %s", source_path.name, exc)
            results.append(AnimationResult(source_path, None, skipped=str(exc)))
    if all(r.skipped for r in results):
        raise NoFaceError(f"no face found in any of the {len(sources)} source images in {source}")
    return results


def animate_group(model: Any, sources: list[Path], driving: str | Path, output: str | Path | None,
                  options: AnimationOptions, default_dir: str | Path) -> AnimationResult:
    """Several images of one person (each needs a face unless crop.allow_no_face) -> one video named after the
    first."""
    model.network.check_sources(len(sources))  # one line, before any file is read, for a one-source family
    for path in sources:
        if path.is_dir():
            raise AnimationInputError(f"source list entry {path} is a folder; list image files")
        list_source_images(path)  # exists
    options.check(model.network)
    output_path = output_paths(sources[:1], Path(driving), output, Path(default_dir))[0]
    detector = build_detector(options.crop) if options.crop.source else None
    prepared = [prepare_source(path, options, detector) for path in sources]
    return animate_one(model, prepared, prepare_driving(driving, options), output_path, options)
