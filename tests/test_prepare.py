"""Preprocessing CLI (python -m reenact.prepare): listings, face tubes, folder/voxceleb/talkinghead runs."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reenact.cli.prepare import main, run
from reenact.data.video import VideoInfo, iter_frames, probe_video, read_frames
from reenact.data.video_writer import write_video
from reenact.face.crop import crop_and_resize
from reenact.face.detection import FaceBox
from reenact.prepare import PrepareUsageError
from reenact.prepare.sources import ClipRow, person_of_chunk, read_talkinghead_tubes, read_vox_metadata, resolve_clip
from reenact.prepare.tubes import TubeRules, select_tubes, track_tubes

VOX_HEADER = "video_id,start,end,bbox,fps,width,height,partition,person_id\n"

# ---------------------------------------------------------------- face tubes (hand-made detections)


def _moving_face(frames: range, x0: float, step: float = 1.0, size: float = 300.0) -> dict[int, FaceBox]:
    return {f: FaceBox(x0 + step * i, 100.0, x0 + step * i + size, 100.0 + size, 0.99) for i, f in enumerate(frames)}


def test_tracking_links_cuts_and_splits_tubes() -> None:
    rules = TubeRules(iou_threshold=0.25, max_frames=100, min_frames=10, min_size=256)
    face_a = _moving_face(range(0, 150), 100.0, step=0.5)  # slow drift: one face for 150 frames
    face_b = _moving_face(range(40, 70), 900.0, step=0.0)  # a second, still face, briefly
    jump = {f: FaceBox(700.0, 100.0, 1000.0, 400.0, 0.99) for f in range(150, 170)}  # cut to a new shot
    detections = [(f, [b for b in (face_a.get(f), face_b.get(f), jump.get(f)) if b]) for f in range(0, 170)]
    tubes = track_tubes(detections, rules)
    spans = sorted((t.start, t.end) for t in tubes)
    assert spans == [(0, 100), (40, 70), (100, 150), (150, 170)]  # 1024-style cut at max_frames=100
    first = next(t for t in tubes if t.start == 0)
    assert first.union.as_tuple() == pytest.approx((100.0, 100.0, 449.5, 400.0))  # union of drifting boxes
    kept, reasons = select_tubes(tubes, 1280, 720, rules)
    assert sorted(k.tube.start for k in kept) == [0, 40, 100, 150] and not any(k.as_is for k in kept)
    small = TubeRules(iou_threshold=0.25, max_frames=100, min_frames=25, min_size=320)
    kept, reasons = select_tubes(tubes, 1280, 720, small)
    assert [k.tube.start for k in kept] == [0, 100]
    # every refusal names the option that would keep the tube
    assert any("20 frames < min_frames 25 (--min-frames 20 keeps it)" in r for r in reasons)
    assert any("face size 300 px < min_size 320 (--min-size 300 keeps it; if the videos are already face crops, "
               "--cropped" in r for r in reasons)


def test_tube_crops_are_square_and_shifted_into_the_frame() -> None:
    rules = TubeRules(min_frames=5, min_size=100)
    near_edge = [(f, [FaceBox(1100.0, 500.0, 1280.0, 700.0, 0.9)]) for f in range(10)]
    (tube, crop, as_is), = select_tubes(track_tubes(near_edge, rules), 1280, 720, rules)[0]
    x0, y0, x1, y1 = crop
    assert x1 - x0 == y1 - y0 == 240 and not as_is  # 1.2 x the 200 px long side
    assert (x1, y1) == (1280, 720) and x0 >= 0 and y0 >= 0


def test_a_face_that_fills_the_frame_is_taken_as_it_is() -> None:
    rules = TubeRules(min_frames=5, min_size=100)
    # with its 10% margin the face is 840 px: no such square in a 720 px high frame, but the frame's largest
    # square (720 px) holds the face itself. The box reaches past the lower edge, as detector boxes do.
    filling = [(f, [FaceBox(300.0 + f, 40.0, 900.0, 760.0, 0.9)]) for f in range(10)]
    (tube, crop, as_is), = select_tubes(track_tubes(filling, rules), 1280, 720, rules)[0]
    assert as_is and crop == (240, 0, 960, 720)  # centred on the face, as high as the frame
    # a face wider than the frame's shorter side fits in no square: refused, naming --cropped
    too_wide = [(f, [FaceBox(0.0, 0.0, 1000.0, 700.0, 0.9)]) for f in range(10)]
    kept, reasons = select_tubes(track_tubes(too_wide, rules), 1280, 720, rules)
    assert kept == [] and "does not fit in any square of the 1280x720 frame" in reasons[0]
    assert "--cropped" in reasons[0]


def test_detection_gaps_end_a_tube() -> None:
    rules = TubeRules(min_frames=1, min_size=1)
    box = FaceBox(0.0, 0.0, 50.0, 50.0)
    detections = [(0, [box]), (4, [box]), (8, []), (12, [box])]  # every 4th frame, a miss at 8
    assert [(t.start, t.end) for t in track_tubes(detections, rules)] == [(0, 5), (12, 13)]


# ---------------------------------------------------------------- listings


def test_vox_metadata_parsing_and_errors(tmp_path: Path) -> None:
    meta = tmp_path / "vox-metadata.csv"
    meta.write_text(VOX_HEADER + "abc,10,74,100-50-300-250,25,1280,720,test,id10270\n")
    (row,) = read_vox_metadata(meta)
    assert row.name == "id10270#abc#000010#000074.mp4" and row.split == "test"
    assert row.box == (100, 50, 300, 250) and row.ref_size == (1280, 720) and row.ref_fps == 25
    meta.write_text("video_id,start,end\nabc,1,2\n")
    with pytest.raises(PrepareUsageError, match="missing column.*bbox") as info:
        read_vox_metadata(meta)
    assert str(meta) in str(info.value) and "\n" not in str(info.value)
    meta.write_text(VOX_HEADER + "abc,10,74,100-50-300,25,1280,720,train,id1\n")
    with pytest.raises(PrepareUsageError, match=r"vox-metadata.csv:2: bad row"):
        read_vox_metadata(meta)


def test_resolve_clip_rescales_box_and_frame_rate() -> None:
    row = ClipRow("p#v#000010#000015.mp4", "train", "v", 10, 15, (100, 50, 300, 250), (1280, 720), 25.0)
    spec = resolve_clip(row, VideoInfo(num_frames=100, fps=30.0, width=640, height=360, has_audio=False))
    assert spec.box == (50, 25, 150, 125)
    assert spec.frame_indices == (12, 13, 14, 15, 16)  # floor(i * 30 / 25) for i in 10..14
    assert spec.fps == 25.0


def test_talkinghead_tubes_parsing(tmp_path: Path) -> None:
    tubes = tmp_path / "train_video_tubes.txt"
    tubes.write_text("--Y9imYnfBw_0003, 1080, 1920, 0, 271, 694, 18, 1018, 342\n")
    (row,) = read_talkinghead_tubes(tubes)
    assert row.name == "--Y9imYnfBw#--Y9imYnfBw_0003#000000#000271.mp4" and row.split == "train"
    assert row.ref_size == (1920, 1080) and row.ref_fps is None and row.box == (694, 18, 1018, 342)
    assert (row.start, row.end) == (0, 272)  # the listed end frame is inclusive
    assert person_of_chunk("plain_name") == "plain_name"


# ---------------------------------------------------------------- end-to-end runs on real clips


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def folder_run(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """d13 (an uncropped 720x1280 selfie video) cut to 100 frames, plus a corrupt file, through `folder`."""
    root = tmp_path_factory.mktemp("folder")
    in_dir, out_dir = root / "in", root / "out"
    in_dir.mkdir()
    write_video(in_dir / "d13.mp4", itertools.islice(iter_frames(faces_dir / "d13.mp4"), 100), 30.0)
    (in_dir / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    args = ["folder", str(in_dir), str(out_dir), "--detect-every", "5", "--min-size", "200",
            "--min-frames", "32", "--landmarks", "--pose"]
    first = run(args)
    return {"args": args, "out": out_dir, "first": first}


def test_folder_mode_writes_a_face_clip(folder_run: dict) -> None:
    report, out_dir = folder_run["first"], folder_run["out"]
    assert len(report.written) == 1, report.summary()
    clip = Path(report.written[0])
    assert clip.name == "d13#d13#000000#000100.mp4" and clip.parent == out_dir / "train"
    info = probe_video(clip)
    assert (info.width, info.height, info.num_frames, info.fps) == (256, 256, 100, 30.0)
    # the crop holds the face: a detector finds one, centred and large, in the written clip
    from reenact.face import build_face_detector

    frame = read_frames(clip, [50])[0]
    (face,) = build_face_detector("dlib").detect(frame)
    cx, cy = face.center
    assert 80 < cx < 176 and 70 < cy < 186 and face.width > 90
    landmarks = np.load(out_dir / "train" / "d13#d13#000000#000100.landmarks.npy")
    pose = np.load(out_dir / "train" / "d13#d13#000000#000100.pose.npy")
    assert landmarks.shape == (100, 68, 2) and landmarks.dtype == np.float32 and pose.shape == (100, 3)
    found = np.isfinite(landmarks[:, 0, 0])
    assert found.mean() > 0.9 and (landmarks[found] >= 0).all() and (landmarks[found] < 256).all()
    assert np.nanmax(np.abs(pose[:, 0])) < 30  # a selfie: no strong head turn
    assert report.detected_frames == 21  # frames 0, 5, ..., 95 and the last frame 99


def test_folder_mode_reports_corrupt_input_and_rerun_is_noop(folder_run: dict) -> None:
    report = folder_run["first"]
    assert [Path(f.item).name for f in report.failed] == ["broken.mp4"]
    assert "unreadable" in report.failed[0].reason and "\n" not in report.failed[0].line()
    before = _mtimes(folder_run["out"])
    again = run(folder_run["args"])
    assert again.written == [] and again.skipped == report.written
    assert [Path(f.item).name for f in again.failed] == ["broken.mp4"]
    assert _mtimes(folder_run["out"]) == before


@pytest.fixture(scope="module")
def vox_setup(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("vox")
    raw = root / "raw"
    (raw / "d3").mkdir(parents=True)
    shutil.copy(faces_dir / "d0.mp4", raw / "d0.mp4")  # 512x512, 78 frames at 25 fps
    shutil.copy(faces_dir / "d3.mp4", raw / "d3" / "download.mp4")  # 30 fps, in a per-id folder
    (raw / "broken.mp4").write_bytes(b"not a video at all")
    meta = root / "vox-metadata.csv"
    meta.write_text(
        VOX_HEADER
        + "d0,0,40,100-60-900-860,25,1024,1024,train,id10001\n"  # box given at 2x the real size
        + "d0,10,74,0-0-1024-1024,25,1024,1024,test,id10002\n"
        + "d3,5,69,50-50-450-450,25,512,512,train,id10003\n"  # 25 fps listing over a 30 fps video
        + "d3,0,400,50-50-450-450,25,512,512,train,id10003\n"  # runs past the end of the video
        + "gone,0,64,0-0-100-100,25,1280,720,train,id10004\n"  # never downloaded
        + "broken,0,64,0-0-100-100,25,1280,720,train,id10005\n"
    )
    return {"root": root, "raw": raw, "meta": meta, "out": root / "out"}


def test_voxceleb_mode_names_counts_failures_and_resume(vox_setup: dict) -> None:
    out = vox_setup["out"]
    args = ["voxceleb", "--metadata", str(vox_setup["meta"]), "--raw", str(vox_setup["raw"]), str(out)]
    report = run(args)
    names = sorted(str(Path(p).relative_to(out)) for p in report.written)
    assert names == ["test/id10002#d0#000010#000074.mp4", "train/id10001#d0#000000#000040.mp4",
                     "train/id10003#d3#000005#000069.mp4"]
    counts = {Path(p).name: probe_video(p).num_frames for p in report.written}
    assert counts == {"id10002#d0#000010#000074.mp4": 64, "id10001#d0#000000#000040.mp4": 40,
                      "id10003#d3#000005#000069.mp4": 64}
    assert probe_video(out / "train" / "id10003#d3#000005#000069.mp4").fps == 25.0
    failed = {Path(f.item).name: f.reason for f in report.failed}
    assert set(failed) == {"gone", "broken.mp4", "id10003#d3#000000#000400.mp4"}
    assert "raw video not found" in failed["gone"] and "unreadable" in failed["broken.mp4"]
    assert "has 354 frames" in failed["id10003#d3#000000#000400.mp4"]
    # the crop is the listed box rescaled to 512x512: frame 0 of clip 1 equals a resize of that region
    from reenact.face import crop_and_resize

    expected = crop_and_resize(read_frames(vox_setup["raw"] / "d0.mp4", [0])[0], (50, 30, 450, 430), 256)
    written = read_frames(out / "train" / "id10001#d0#000000#000040.mp4", [0])[0]
    assert np.abs(written.astype(float) - expected).mean() < 3  # H.264 at crf 18

    before = _mtimes(out)
    again = run(args)
    assert again.written == [] and sorted(again.skipped) == sorted(report.written)
    assert _mtimes(out) == before
    # asking for pose later adds only the side files; the clips are not rewritten
    with_pose = run(args + ["--pose"])
    assert sorted(with_pose.written) == sorted(report.written)
    for clip, mtime in before.items():
        assert Path(clip).stat().st_mtime_ns == mtime
    assert np.load(out / "test" / "id10002#d0#000010#000074.pose.npy").shape == (64, 3)


def test_talkinghead_png_frame_folders_with_two_workers(vox_setup: dict) -> None:
    tubes = vox_setup["root"] / "val_video_tubes.txt"
    tubes.write_text("d0,1024,1024,0,30,100,60,900,860\nd3,512,512,10,20,0,0,512,512\n")
    shutil.copy(vox_setup["raw"] / "d3" / "download.mp4", vox_setup["raw"] / "d3.mp4")
    out = vox_setup["root"] / "th_out"
    report = run(["talkinghead", "--tubes", str(tubes), "--raw", str(vox_setup["raw"]), str(out), "--format", "png",
                  "--size", "128", "--workers", "2"])
    folder = out / "test" / "d0#d0#000000#000030.mp4"
    assert sorted(report.written) == [str(folder), str(out / "test" / "d3#d3#000010#000020.mp4")]
    assert len(list((out / "test" / "d3#d3#000010#000020.mp4").glob("*.png"))) == 11
    frames = sorted(folder.glob("*.png"))
    assert len(frames) == 31 and frames[0].name == "0000000.png"  # frames 0..30 inclusive
    assert read_frames(folder, [30]).shape == (1, 128, 128, 3)


def test_usage_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["voxceleb", "--metadata", str(tmp_path / "nope.csv"), "--raw", str(tmp_path), str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and "metadata file not found" in err
    assert not (tmp_path / "o").exists()  # nothing is created before the input is known to be usable
    (tmp_path / "empty").mkdir()
    assert main(["folder", str(tmp_path / "empty"), str(tmp_path / "o")]) == 2
    assert "no videos" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"")
    assert main(["folder", str(tmp_path / "in"), str(tmp_path / "o"), "--test-videos", "a,b", "--cropped"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--test-videos: no video b in" in err


def test_module_entry_point_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "reenact.prepare", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "voxceleb" in done.stdout and "folder" in done.stdout


# ---------------------------------------------------------------- folder mode on synthetic clips (stubbed detector)


def _pattern_video(path: Path, width: int, height: int, frames: int) -> np.ndarray:
    """A smooth, position-coded picture (red grows to the right, green downwards) that moves a little per frame,
    so a crop's place in the frame can be read off the written clip. Returns the frames."""
    y, x = np.mgrid[0:height, 0:width]
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        video[t, ..., 0] = 255 * x / (width - 1)
        video[t, ..., 1] = 255 * y / (height - 1)
        video[t, ..., 2] = 4 * t
    write_video(path, video, 25.0)
    return video


class _BoxBySize:
    """A stand-in face detector: the face box depends only on the frame size (one size per synthetic video)."""

    def __init__(self, boxes: dict[tuple[int, int], FaceBox]) -> None:
        self.boxes = boxes

    def detect_batch(self, images: list[np.ndarray]) -> list[list[FaceBox]]:
        return [[self.boxes[im.shape[1], im.shape[0]]] for im in images]


def _mean_error(clip: Path, expected: np.ndarray) -> float:
    return float(np.abs(read_frames(clip, [0])[0].astype(float) - expected).mean())


def test_folder_mode_keeps_already_cropped_clips_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in_dir, out = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    cropped = _pattern_video(in_dir / "cropped.mp4", 128, 128, 24)  # a face crop already: the face fills it
    wide = _pattern_video(in_dir / "wide.mp4", 192, 128, 24)  # a scene with a face in it
    _pattern_video(in_dir / "far.mp4", 160, 96, 24)  # a face too small to be worth cropping
    detector = _BoxBySize({(128, 128): FaceBox(20.0, 10.0, 110.0, 135.0, 0.99),  # past the lower edge
                           (192, 128): FaceBox(60.0, 30.0, 120.0, 90.0, 0.99),
                           (160, 96): FaceBox(70.0, 30.0, 90.0, 50.0, 0.99)})
    monkeypatch.setattr("reenact.prepare.tasks.cached_face_detector", lambda *args, **kwargs: detector)
    monkeypatch.setattr("reenact.cli.prepare._check_backends", lambda ns: None)  # no face package needed
    args = ["folder", str(in_dir), str(out), "--min-size", "48", "--min-frames", "16", "--detect-every", "4",
            "--size", "32", "--test-videos", "wide"]
    report = run(args)
    as_is = out / "train" / "cropped#cropped#000000#000024.mp4"
    cut = out / "test" / "wide#wide#000000#000024.mp4"
    assert sorted(report.written) == sorted([str(as_is), str(cut)]) and report.as_is == [str(as_is)]
    summary = report.summary()
    assert "taken as they are" in summary and f"as is: {as_is}" in summary and str(cut) not in summary.split("\n")[2:]
    # the whole 128x128 frame, resized; the other clip is the usual 72 px square around its 60 px face
    assert _mean_error(as_is, crop_and_resize(cropped[0], (0, 0, 128, 128), 32)) < 4
    assert _mean_error(cut, crop_and_resize(wide[0], (54, 24, 126, 96), 32)) < 4
    (far,) = report.no_clips
    assert Path(far.item).name == "far.mp4" and "face size 20 px < min_size 48" in far.reason
    assert "--min-size 20 keeps it" in far.reason and "--cropped" in far.reason
    # a second run writes nothing and still says which clips were taken as they are
    again = run(args)
    assert again.written == [] and again.as_is == [str(as_is)] and "(earlier run)" in again.no_clips[0].reason


def test_cropped_mode_resizes_every_frame_without_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in_dir, out = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    video = _pattern_video(in_dir / "vox.mp4", 128, 96, 40)
    _pattern_video(in_dir / "short.mp4", 128, 96, 10)
    _pattern_video(in_dir / "id10001#abc#000010#000042.mp4", 64, 64, 16)  # VoxCeleb naming: the person comes first

    def no_detector(*args: object, **kwargs: object) -> None:
        raise AssertionError("--cropped must not detect faces")

    monkeypatch.setattr("reenact.prepare.tasks.cached_face_detector", no_detector)
    report = run(["folder", str(in_dir), str(out), "--cropped", "--size", "32", "--max-frames", "24",
                  "--min-frames", "12"])
    first, second = out / "train" / "vox#vox#000000#000024.mp4", out / "train" / "vox#vox#000024#000040.mp4"
    named = out / "train" / "id10001#id10001_abc_000010_000042#000000#000016.mp4"
    assert sorted(report.written) == sorted(report.as_is) == sorted([str(first), str(second), str(named)])
    assert report.detected_frames == 0 and report.failed == []
    assert [probe_video(c).num_frames for c in (first, second)] == [24, 16]
    assert probe_video(first).width == 32 and probe_video(first).fps == 25.0
    assert _mean_error(first, crop_and_resize(video[0], (16, 0, 112, 96), 32)) < 4  # the centre square
    (short,) = report.no_clips
    assert "10 frame(s) < min_frames 12 (--min-frames 10 keeps it)" in short.reason


def test_folder_mode_keeps_a_real_cropped_clip(faces_dir: Path, tmp_path: Path) -> None:
    """The end of d3, a 512x512 face crop where the face, with crop_vox's margin, is larger than the frame."""
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    write_video(in_dir / "d3.mp4", itertools.islice(iter_frames(faces_dir / "d3.mp4"), 314, 354), 30.0)
    report = run(["folder", str(in_dir), str(tmp_path / "out"), "--detect-every", "8", "--min-frames", "32",
                  "--size", "32"])
    clip = tmp_path / "out" / "train" / "d3#d3#000000#000040.mp4"
    assert report.written == report.as_is == [str(clip)], report.summary()
    assert report.no_clips == [] and probe_video(clip).num_frames == 40
