"""Video I/O: round trips, exact random access, atomic writes, audio, frame folders and broken files."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from reenact.data.video import VideoError, iter_frames, probe_video, read_frames, read_video
from reenact.data.video_writer import write_frame_folder, write_video


def moving_frames(count: int = 24, height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth content with a moving bright square, so every frame differs."""
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(count):
        base = np.stack([x * 3 + t, y * 4, (x + y) * 2], axis=-1) % 256
        frame = base.astype(np.uint8)
        frame[10:22, 2 + 2 * t : 14 + 2 * t] = 250
        frames.append(frame)
    return np.stack(frames)


def decode_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=44100)
        frames = container.decode(container.streams.audio[0])
        chunks = [chunk.to_ndarray()[0] for frame in frames for chunk in resampler.resample(frame)]
    return np.concatenate(chunks)


def test_write_read_round_trip(tmp_path: Path) -> None:
    frames = moving_frames()
    path = tmp_path / "clip.mp4"
    assert write_video(path, iter(frames), fps=12.5) == len(frames)
    info = probe_video(path)
    assert (info.num_frames, info.fps, info.width, info.height, info.has_audio) == (24, 12.5, 64, 48, False)
    decoded = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames).mean() < 3.0
    assert read_video(path, max_frames=5).shape[0] == 5
    assert np.array_equal(np.stack(list(iter_frames(path))), decoded)


@pytest.mark.parametrize("keyframe_interval", [1, 5, 250])
def test_read_frames_equals_full_decode(tmp_path: Path, keyframe_interval: int) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, moving_frames(30), fps=25, keyframe_interval=keyframe_interval)
    full = read_video(path)
    rng = np.random.default_rng(keyframe_interval)
    for _ in range(15):
        indices = rng.integers(0, 30, size=int(rng.integers(1, 6))).tolist()  # any order, repeats
        assert np.array_equal(read_frames(path, indices), full[indices]), indices
    assert np.array_equal(read_frames(path, [29, 0, 29]), full[[29, 0, 29]])
    with pytest.raises(IndexError, match="out of range"):
        read_frames(path, [30])


def test_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"

    def failing():
        yield from moving_frames(6)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        write_video(path, failing(), fps=25)
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a temporary remains
    write_video(path, moving_frames(6), fps=25)
    with pytest.raises(RuntimeError):
        write_video(path, failing(), fps=25)
    assert probe_video(path).num_frames == 6  # the previous complete file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_write_rejects_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", [np.zeros((31, 32, 3), np.uint8)], fps=25)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], fps=25)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "float.mp4", [np.zeros((32, 32, 3), np.float32)], fps=25)
    assert list(tmp_path.iterdir()) == []


def test_frame_count_without_container_count(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"  # Matroska stores no frame count: probe must count by decoding
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in moving_frames(17):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    assert probe_video(path).num_frames == 17
    assert np.array_equal(read_frames(path, [16, 2]), read_video(path)[[16, 2]])


@pytest.mark.real_data
def test_audio_is_kept_and_aligned(tmp_path: Path, faces_dir: Path) -> None:
    frames = read_video(faces_dir / "d3.mp4", max_frames=20)[:, ::4, ::4]
    with_audio = tmp_path / "with.mp4"
    write_video(with_audio, frames, fps=10, audio_source=faces_dir / "d3.mp4", audio_start_s=1.0)
    assert probe_video(with_audio).has_audio and probe_video(with_audio).num_frames == 20
    write_video(tmp_path / "without.mp4", frames, fps=10)
    assert not probe_video(tmp_path / "without.mp4").has_audio
    # d3's track is silent, so check the content with d11 (speech): the output is the source cut at 2 s.
    cut = tmp_path / "cut.mp4"
    write_video(cut, frames, fps=10, audio_source=faces_dir / "d11.mp4", audio_start_s=2.0)
    out, src = decode_audio(cut), decode_audio(faces_dir / "d11.mp4")
    assert abs(len(out) / 44100 - 2.0) < 0.05
    reference = src[2 * 44100 : 2 * 44100 + len(out)]
    assert np.corrcoef(out, reference)[0, 1] > 0.95
    assert abs(np.corrcoef(out, src[2 * 44100 + 2048 : 2 * 44100 + 2048 + len(out)])[0, 1]) < 0.5


@pytest.mark.real_data
def test_real_clips_probe_and_random_access(faces_dir: Path) -> None:
    expected = {"d0.mp4": (78, 25.0, 512, 512, False), "d3.mp4": (354, 30.0, 512, 512, True),
                "d9.mp4": (587, 30.0, 512, 480, True)}
    for name, values in expected.items():
        info = probe_video(faces_dir / name)
        assert (info.num_frames, info.fps, info.width, info.height, info.has_audio) == values
    full = read_video(faces_dir / "d0.mp4")
    assert full.shape == (78, 512, 512, 3)
    assert np.array_equal(read_frames(faces_dir / "d0.mp4", [77, 40, 3, 40]), full[[77, 40, 3, 40]])


def test_frame_folder(tmp_path: Path) -> None:
    frames = moving_frames(9)
    folder = tmp_path / "id01#clip.mp4"
    assert write_frame_folder(folder, frames) == 9
    info = probe_video(folder)
    assert (info.num_frames, info.width, info.height, info.has_audio) == (9, 64, 48, False)
    assert np.array_equal(read_frames(folder, [8, 1, 1]), frames[[8, 1, 1]])  # PNG is lossless
    assert np.array_equal(read_video(folder), frames)
    write_frame_folder(folder, frames[:4])  # overwrite replaces the whole folder
    assert probe_video(folder).num_frames == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id01#clip.mp4"]
    (tmp_path / "empty.mp4").mkdir()
    with pytest.raises(VideoError, match="no .png/.jpg frames"):
        probe_video(tmp_path / "empty.mp4")


def test_broken_files_raise_video_error(tmp_path: Path) -> None:
    good = tmp_path / "good.mp4"
    write_video(good, moving_frames(12), fps=25)
    broken = {
        "empty.mp4": b"",
        "text.mp4": b"this is not a video\n" * 50,
        "truncated.mp4": good.read_bytes()[: good.stat().st_size // 2],
    }
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
        for call in (probe_video, read_video, lambda p: read_frames(p, [0])):
            with pytest.raises(VideoError) as info:
                call(tmp_path / name)
            message = str(info.value)
            assert str(tmp_path / name) in message and "\n" not in message
    with pytest.raises(VideoError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")
