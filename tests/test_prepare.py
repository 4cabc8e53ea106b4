"""Preprocessing CLI (python -m reenact.prepare): listings, face tubes, folder/voxceleb/talkinghead runs."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reenact.data.video import VideoInfo, iter_frames, probe_video, read_frames
from reenact.data.video_writer import write_video
from reenact.face.detection import FaceBox
from reenact.prepare import PrepareUsageError, main, run
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
    assert sorted(t.start for t, _ in kept) == [0, 40, 100, 150]
    small = TubeRules(iou_threshold=0.25, max_frames=100, min_frames=25, min_size=320)
    kept, reasons = select_tubes(tubes, 1280, 720, small)
    assert [t.start for t, _ in kept] == [0, 100]
    assert any("20 frames < min_frames 25" in r for r in reasons)
    assert any("face size 300 px < min_size 320" in r for r in reasons)


def test_tube_crops_are_square_and_shifted_into_the_frame() -> None:
    rules = TubeRules(min_frames=5, min_size=100)
    near_edge = [(f, [FaceBox(1100.0, 500.0, 1280.0, 700.0, 0.9)]) for f in range(10)]
    (tube, crop), = select_tubes(track_tubes(near_edge, rules), 1280, 720, rules)[0]
    x0, y0, x1, y1 = crop
    assert x1 - x0 == y1 - y0 == 240  # 1.2 x the 200 px long side
    assert (x1, y1) == (1280, 720) and x0 >= 0 and y0 >= 0
    too_big = [(f, [FaceBox(0.0, 0.0, 700.0, 700.0, 0.9)]) for f in range(10)]
    kept, reasons = select_tubes(track_tubes(too_big, rules), 1280, 720, rules)
    assert kept == [] and "does not fit" in reasons[0]


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


def test_module_entry_point_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "reenact.prepare", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "voxceleb" in done.stdout and "folder" in done.stdout
