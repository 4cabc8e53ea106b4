"""Video reading on PyAV: probing, random frame access and streaming decode (writing is in ``video_writer``).

A "video" is either a container file (``.mp4`` and friends) or a *frame folder*: a directory of
numbered ``.png``/``.jpg`` frames, usually named like a clip (``id#clip.mp4/0000000.png``) as FOMM's
video-preprocessing writes them. Every function here accepts both.

Random access (:func:`read_frames`) never decodes a whole video: a per-process cache holds each
file's frame index (presentation timestamps and keyframes, built once by demuxing packets without
decoding), so a request seeks straight to the keyframe before the wanted frame and decodes at most
one GOP forward. :func:`reenact.data.video_writer.write_video` uses a short GOP (8 frames) so that this stays
cheap.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from reenact.data.video_errors import VideoError
from reenact.data.video_errors import video_error as _error

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".gif"})
FRAME_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
FRAME_FOLDER_FPS = 25.0  # frame folders carry no rate; FOMM's preprocessing resamples to 25 fps
# Decoding a handful of frames after a seek: frame threading only adds latency and CPU (its pipeline must
# fill before the first frame comes out) and our clips have no slices, so random access decodes on the
# calling thread. benchmarks/data_throughput.py, 256x256 GOP 8, pairs per CPU-second: NONE 306,
# SLICE 219, FRAME 173, AUTO 168. Whole-video reads stream, where threads do help.
RANDOM_ACCESS_THREAD_TYPE = "NONE"
STREAM_THREAD_TYPE = "AUTO"
_INDEX_CACHE_SIZE = 1024  # about 8 bytes per frame each: ~10 MB per process for 1000-frame clips


_local = threading.local()


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8. One reformatter per thread keeps its colour-conversion context alive: a fresh frame's own
    `to_ndarray` builds a new context every call, which costs more than decoding a 256x256 frame. One scaler
    thread: a threaded context inherited through fork (DataLoader workers) waits forever on the parent's pool."""
    owner, reformatter = getattr(_local, "reformatter", (None, None))
    if owner != os.getpid():
        reformatter = VideoReformatter()
        _local.reformatter = (os.getpid(), reformatter)
    return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def _ffmpeg_reason(error: Exception) -> object:
    """FFmpeg's words for an error, without the errno and C function it adds ("[Errno 1094995529] Invalid data
    found when processing input: 'avcodec_send_packet()'" becomes "Invalid data found when processing input")."""
    if isinstance(error, av.FFmpegError) and error.strerror:
        return error.strerror
    return error


def _decode_error(path: Path, error: Exception) -> VideoError:
    """The VideoError for a file that opened but whose frames FFmpeg cannot decode."""
    return _error(path, f"cannot be decoded: {_ffmpeg_reason(error)}")


@dataclass
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int
    has_audio: bool


def is_frame_folder(path: str | Path) -> bool:
    return Path(path).is_dir()


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: str | Path) -> list[Path]:
    """The frames of a frame folder in numeric order; raises VideoError when there are none."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise _error(folder, "folder holds no .png/.jpg frames")
    return sorted(files, key=lambda p: _natural_key(p.name))


def _load_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise _error(path, exc) from exc


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise _error(path, "no such file")
    if path.stat().st_size == 0:
        raise _error(path, "empty file")
    try:
        container = av.open(str(path), mode="r")
    except Exception as exc:  # PyAV raises many FFmpegError subclasses; all mean "unreadable"
        raise _error(path, _ffmpeg_reason(exc)) from exc
    if not container.streams.video:
        container.close()
        raise _error(path, "no video stream")
    return container


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else FRAME_FOLDER_FPS


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, rate, size and audio presence; decodes the first frame to prove the file is readable.

    The frame count is exact: when the container does not record it, every frame is decoded and counted.
    """
    path = Path(path)
    if path.is_dir():
        files = list_frame_files(path)
        try:
            with Image.open(files[0]) as image:  # reads the header only
                width, height = image.size
        except (OSError, ValueError) as exc:
            raise _error(files[0], exc) from exc
        return VideoInfo(len(files), FRAME_FOLDER_FPS, width, height, False)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except Exception as exc:
            raise _decode_error(path, exc) from exc
        if first is None:
            raise _error(path, "no decodable frames")
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:
            num_frames = _decode_count(container, stream, path)
        return VideoInfo(num_frames, _stream_fps(stream), first.width, first.height, bool(container.streams.audio))
    finally:
        container.close()


def _decode_count(container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path) -> int:
    try:
        container.seek(0, backward=True, any_frame=False, stream=stream)
        return sum(1 for _ in container.decode(stream))
    except Exception as exc:
        raise _decode_error(path, exc) from exc


@dataclass(frozen=True)
class _FrameIndex:
    pts: np.ndarray  # (N,) presentation timestamps in frame order
    key_pts: np.ndarray  # (K,) keyframe presentation timestamps, ascending
    key_dts: np.ndarray  # (K,) decode timestamps of the same keyframes: where a seek lands


_index_cache: OrderedDict[tuple[str, int, int], _FrameIndex | None] = OrderedDict()


def _frame_index(path: Path, container: av.container.InputContainer) -> _FrameIndex | None:
    """Demux (no decode) once per file version; None when timestamps cannot be trusted for seeking."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _index_cache:
        _index_cache.move_to_end(key)
        return _index_cache[key]
    stream = container.streams.video[0]
    pts: list[int] = []
    keys: list[tuple[int, int]] = []
    usable = True
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the end-of-stream flush packet
        if packet.pts is None:
            usable = False
            break
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append((packet.pts, packet.dts if packet.dts is not None else packet.pts))
    index = None
    if usable and pts and keys and len(set(pts)) == len(pts):
        order = np.sort(np.asarray(pts, dtype=np.int64))
        keys.sort()
        index = _FrameIndex(
            pts=order,
            key_pts=np.asarray([k[0] for k in keys], dtype=np.int64),
            key_dts=np.asarray([k[1] for k in keys], dtype=np.int64),
        )
    _index_cache[key] = index
    if len(_index_cache) > _INDEX_CACHE_SIZE:
        _index_cache.popitem(last=False)
    return index


def _read_by_index(
    container: av.container.InputContainer, index: _FrameIndex, wanted: list[int], path: Path
) -> dict[int, np.ndarray]:
    """Decode the sorted unique frame numbers in `wanted`, seeking whenever a keyframe lies ahead."""
    stream = container.streams.video[0]
    found: dict[int, np.ndarray] = {}
    frames: Iterator[av.VideoFrame] | None = None
    last_pts: int | None = None
    for target in wanted:
        target_pts = int(index.pts[target])
        key = int(np.searchsorted(index.key_pts, target_pts, side="right")) - 1
        key = max(key, 0)
        for attempt_key in range(key, -2, -1):  # on overshoot, fall back to earlier keyframes, then 0
            must_seek = frames is None or last_pts is None or last_pts >= target_pts
            must_seek = must_seek or int(index.key_pts[attempt_key]) > last_pts
            if attempt_key != key or must_seek:
                seek_to = int(index.key_dts[attempt_key]) if attempt_key >= 0 else 0
                container.seek(seek_to, backward=True, any_frame=False, stream=stream)
                frames = container.decode(stream)
                last_pts = None
            status = "missing"
            for frame in frames:
                if frame.pts is None:
                    continue
                last_pts = int(frame.pts)
                if last_pts == target_pts:
                    found[target] = _to_rgb(frame)
                    status = "found"
                    break
                if last_pts > target_pts:
                    status = "overshoot"
                    break
            if status == "found":
                break
            if status == "missing":
                raise _error(path, f"frame {target} could not be decoded (file truncated?)")
        else:
            raise _error(path, f"frame {target} could not be reached by seeking")
    return found


def _read_sequential(container: av.container.InputContainer, wanted: list[int]) -> dict[int, np.ndarray]:
    stream = container.streams.video[0]
    stream.thread_type = STREAM_THREAD_TYPE
    targets = set(wanted)
    found: dict[int, np.ndarray] = {}
    for number, frame in enumerate(container.decode(stream)):
        if number in targets:
            found[number] = _to_rgb(frame)
            if len(found) == len(targets):
                break
    return found


def read_frames(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    """Frames `indices` (any order, repeats allowed) as (N, H, W, 3) uint8, decoding as little as possible."""
    path = Path(path)
    requested = [int(i) for i in indices]
    if path.is_dir():
        files = list_frame_files(path)
        _check_range(path, requested, len(files))
        cache = {i: _load_image(files[i]) for i in sorted(set(requested))}
        return _stack(path, [cache[i] for i in requested])
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = RANDOM_ACCESS_THREAD_TYPE
        wanted = sorted(set(requested))
        try:
            index = _frame_index(path, container)
            count = len(index.pts) if index is not None else int(stream.frames or 0)
            if count > 0:
                _check_range(path, requested, count)
            if index is not None:
                found = _read_by_index(container, index, wanted, path)
            else:
                container.seek(0, backward=True, any_frame=False, stream=stream)
                found = _read_sequential(container, wanted)
        except (VideoError, IndexError):
            raise
        except Exception as exc:
            raise _decode_error(path, exc) from exc
        missing = [i for i in wanted if i not in found]
        if missing:
            raise _error(path, f"frames {missing[:5]} could not be decoded")
        return _stack(path, [found[i] for i in requested])
    finally:
        container.close()


def _check_range(path: Path, requested: list[int], count: int) -> None:
    bad = [i for i in requested if i < 0 or i >= count]
    if bad:
        raise IndexError(f"frame index {bad[0]} out of range for {path} with {count} frames")


def _stack(path: Path, frames: list[np.ndarray]) -> np.ndarray:
    if not frames:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    if len({f.shape for f in frames}) > 1:
        raise _error(path, f"frames have different sizes {sorted({f.shape for f in frames})}")
    return np.stack(frames)


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame in order as (H, W, 3) uint8, decoded in a stream (threaded)."""
    path = Path(path)
    if path.is_dir():
        for file in list_frame_files(path):
            yield _load_image(file)
        return
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = STREAM_THREAD_TYPE
        try:
            for frame in container.decode(stream):
                yield _to_rgb(frame)
        except Exception as exc:
            raise _decode_error(path, exc) from exc
    finally:
        container.close()


def read_video(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """The first `max_frames` frames (all when None) as (T, H, W, 3) uint8."""
    frames: list[np.ndarray] = []
    for frame in iter_frames(path):
        if max_frames is not None and len(frames) >= max_frames:
            break
        frames.append(frame)
    if not frames:
        raise _error(path, "no decodable frames")
    return _stack(Path(path), frames)


__all__ = [
    "FRAME_FOLDER_FPS", "VIDEO_SUFFIXES", "VideoError", "VideoInfo", "iter_frames", "probe_video", "read_frames",
    "read_video",
]
