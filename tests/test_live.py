"""Live driving (python -m reenact.live): a real clip played at real-time pace, frames dropped when behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reenact.animation.errors import AnimationInputError
from reenact.cli.live import FrameReader, run
from reenact.data.video import probe_video
from reenact.utils.hydra_utils import compose_config
from tests.test_animate import fomm_ckpt  # noqa: F401  (the session's tiny trained FOMM checkpoint)


def live(ckpt: Path, source: Path, driving: Path | str, *overrides: str) -> object:
    cfg = compose_config("live", [f"ckpt_path={ckpt}", f"source={source}", f"driving={driving}", "device=cpu",
                                  "paths.output_dir=/tmp", *overrides])
    return run(cfg)


def test_a_video_file_played_in_real_time_is_animated_and_written_in_real_time(
        fomm_ckpt: Path, faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    driving = faces_dir / "d0.mp4"  # 78 frames at 25 fps: 3.1 s
    info = probe_video(driving)
    output = tmp_path / "live.mp4"
    started = time.perf_counter()
    report = live(fomm_ckpt, faces_dir / "s0.jpg", driving, f"output={output}", "smooth=true")
    elapsed = time.perf_counter() - started
    assert elapsed > info.num_frames / info.fps * 0.9  # paced: not faster than the clip plays
    assert report.read == info.num_frames
    assert 1 <= report.animated <= report.read and report.dropped == report.read - report.animated
    assert report.fps > 0 and report.percentile(95) >= report.percentile(50) > 0
    written = probe_video(output)  # frames dropped live are repeated: the file plays as long as the clip
    assert written.num_frames == info.num_frames and written.fps == pytest.approx(info.fps, rel=1e-3)
    out = capsys.readouterr().out
    assert "frames/s" in out and "latency p50" in out and f"wrote {output}" in out


def test_as_fast_as_possible_drops_nothing(fomm_ckpt: Path, faces_dir: Path) -> None:  # noqa: F811
    report = live(fomm_ckpt, faces_dir / "s0.jpg", faces_dir / "d0.mp4", "realtime=false", "max_seconds=600",
                  "crop.driving=false")
    assert report.animated == report.read == probe_video(faces_dir / "d0.mp4").num_frames


def test_reader_keeps_only_the_newest_frame_when_the_consumer_is_slow(faces_dir: Path) -> None:
    reader = FrameReader(str(faces_dir / "d0.mp4"), realtime=True).start()
    taken = []
    while (arrival := reader.take()) is not None:
        taken.append(arrival.index)
        time.sleep(0.2)  # 5 frames of 25 fps
    reader.stop()
    assert reader.count == 78
    assert taken == sorted(taken) and len(set(taken)) == len(taken)
    assert 5 < len(taken) < 40 and taken[-1] >= 70  # most frames dropped, the end still reached


def test_bad_driving_sources_are_one_line(fomm_ckpt: Path, faces_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(AnimationInputError, match="camera 57"):
        live(fomm_ckpt, faces_dir / "s0.jpg", 57)
    with pytest.raises(AnimationInputError, match="driving video not found"):
        live(fomm_ckpt, faces_dir / "s0.jpg", tmp_path / "missing.mp4")
    with pytest.raises(AnimationInputError, match="window=true"):
        live(fomm_ckpt, faces_dir / "s0.jpg", faces_dir / "d0.mp4", "window=true")


# ----------------------------------------------------------------------------- parts of long videos
def test_start_end_and_max_frames_animate_a_part_with_its_audio(fomm_ckpt: Path, faces_dir: Path,  # noqa: F811
                                                               tmp_path: Path) -> None:
    import av

    from tests.test_animate import animate

    driving = faces_dir / "d11.mp4"  # 225 frames at 25 fps, with audio
    output = tmp_path / "part.mp4"
    result = animate(fomm_ckpt, faces_dir / "s0.jpg", driving, output, "start=2", "end=3.2", "crop.detect_every=10")
    assert result[0].num_frames == 30 and probe_video(output).num_frames == 30
    with av.open(str(output)) as container:  # the audio of the same second, cut to the video's length
        audio = container.streams.audio[0]
        assert float(audio.duration * audio.time_base) == pytest.approx(1.2, abs=0.1)
    result = animate(fomm_ckpt, faces_dir / "s0.jpg", driving, output, "start=8", "max_frames=5", "smooth=2")
    assert result[0].num_frames == 5
    for bad, message in ((["start=9.5"], "past the driving video's end"), (["start=3", "end=2"], "not after"),
                         (["start=-1"], "start=-1"), (["smooth=loud"], "smooth=")):
        with pytest.raises(AnimationInputError, match=message):
            animate(fomm_ckpt, faces_dir / "s0.jpg", driving, output, *bad)
