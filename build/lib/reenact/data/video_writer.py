"""Atomic video writing on PyAV: short-GOP H.264 mp4 (with the audio of another file) and frame folders.

Every file is written under a hidden temporary name in the destination folder and renamed when complete, so a
crash never leaves a half-written clip under its final name. Reading is in :mod:`reenact.data.video`.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from reenact.data.video_errors import video_error

log = logging.getLogger(__name__)


def _temporary_sibling(path: Path) -> Path:
    # A leading dot keeps half-written outputs out of dataset listings.
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"


def _check_frame(frame: np.ndarray, shape: tuple[int, ...] | None, path: Path) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames for {path} must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    if shape is not None and frame.shape != shape:
        raise ValueError(f"frame of shape {frame.shape} differs from the first frame {shape} in {path}")
    if shape is None and (frame.shape[0] % 2 or frame.shape[1] % 2):
        raise ValueError(f"H.264 yuv420p needs an even frame size, got {frame.shape[1]}x{frame.shape[0]} for {path}")
    return np.ascontiguousarray(frame)


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    keyframe_interval: int = 8,
    crf: int = 18,
    audio_source: str | Path | None = None,
    audio_start_s: float = 0.0,
    preset: str = "veryfast",
) -> int:
    """Write H.264 (libx264, yuv420p) mp4 atomically; returns the number of frames written.

    keyframe_interval: GOP length; a random read decodes at most this many frames.
    audio_source: a video/audio file whose first audio stream is cut at `audio_start_s` to the video's
    length and encoded as AAC into the output.
    """
    path = Path(path)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps} for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path)
    rate = Fraction(fps).limit_denominator(1001)
    written = 0
    audio = None
    try:
        with av.open(str(temporary), mode="w", format="mp4") as output:
            stream = output.add_stream("libx264", rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = keyframe_interval
            stream.options = {"crf": str(crf), "preset": preset, "tune": "fastdecode", "bf": "0"}
            audio = _add_audio_stream(output, Path(audio_source), path) if audio_source is not None else None
            shape = None
            for frame in frames:
                frame = _check_frame(frame, shape, path)
                if shape is None:
                    shape = frame.shape
                    stream.height, stream.width = shape[0], shape[1]
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    output.mux(packet)
                written += 1
            if written == 0:
                raise ValueError(f"no frames given to write {path}")
            for packet in stream.encode():
                output.mux(packet)
            if audio is not None:
                _copy_audio(output, audio[0], audio[1], audio_start_s, written / float(rate))
        os.replace(temporary, path)
    finally:
        if audio is not None:
            audio[0].close()
        if temporary.exists():
            temporary.unlink()
    return written


def _add_audio_stream(
    output: av.container.OutputContainer, source: Path, target: Path
) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream] | None:
    """Open `source` and add a matching AAC stream to `output` (streams must exist before muxing starts)."""
    try:
        inp = av.open(str(source), mode="r")
    except Exception as exc:
        raise video_error(source, exc) from exc
    if not inp.streams.audio:
        inp.close()
        log.warning("audio source %s has no audio stream; writing %s without audio", source, target)
        return None
    audio_out = output.add_stream("aac", rate=int(inp.streams.audio[0].codec_context.sample_rate))
    audio_out.layout = inp.streams.audio[0].codec_context.layout.name
    return inp, audio_out


def _copy_audio(
    output: av.container.OutputContainer,
    inp: av.container.InputContainer,
    audio_out: av.audio.stream.AudioStream,
    start_s: float,
    duration_s: float,
) -> None:
    """Encode the input's first audio stream from `start_s` for `duration_s`, cut to the sample."""
    audio_in = inp.streams.audio[0]
    rate, layout = audio_out.codec_context.sample_rate, audio_out.codec_context.layout.name
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    first, end = round(start_s * rate), round((start_s + duration_s) * rate)
    if start_s > 0:
        inp.seek(int(start_s / audio_in.time_base), backward=True, any_frame=False, stream=audio_in)
    written = 0
    for decoded in inp.decode(audio_in):
        if decoded.pts is None:
            continue
        begin = round(float(decoded.pts * audio_in.time_base) * rate)
        if begin >= end:
            break
        for chunk in resampler.resample(decoded):
            samples = chunk.to_ndarray()  # (channels, n) planar float
            lo, hi = max(first - begin, 0), min(end - begin, samples.shape[1])
            begin += samples.shape[1]
            if hi <= lo:
                continue
            piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, lo:hi]), format="fltp", layout=layout)
            piece.sample_rate, piece.pts, piece.time_base = rate, written, Fraction(1, rate)
            written += hi - lo
            for packet in audio_out.encode(piece):
                output.mux(packet)
    for packet in audio_out.encode():
        output.mux(packet)


def write_frame_folder(path: str | Path, frames: Iterable[np.ndarray]) -> int:
    """Write numbered PNG frames (0000000.png, ...) into folder `path` atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path)
    written = 0
    try:
        temporary.mkdir()
        shape = None
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frames for {path} must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
            if shape is not None and frame.shape != shape:
                raise ValueError(f"frame of shape {frame.shape} differs from the first frame {shape} in {path}")
            shape = frame.shape
            Image.fromarray(frame).save(temporary / f"{written:07d}.png", compress_level=1)
            written += 1
        if written == 0:
            raise ValueError(f"no frames given to write {path}")
        if path.exists():
            # Swap in two renames so a reader never sees a folder with a mix of old and new frames.
            previous = _temporary_sibling(path)
            os.replace(path, previous)
            os.replace(temporary, path)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(temporary, path)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return written
