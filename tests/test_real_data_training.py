"""The real-data path end to end: prepare real talking-head clips, train on them, evaluate and animate."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reenact.cli.prepare import run as prepare
from reenact.cli.train import run
from reenact.data.video import probe_video
from tests.helpers.configs import train_config

REPO = Path(__file__).resolve().parents[1]
HEADER = "video_id,start,end,bbox,fps,width,height,partition,person_id\n"


@pytest.fixture(scope="module")
def prepared(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    raw = root / "raw"
    raw.mkdir()
    for name in ("d0", "d11", "d12"):
        shutil.copy(faces_dir / f"{name}.mp4", raw / f"{name}.mp4")
    metadata = root / "vox-metadata.csv"
    metadata.write_text(
        HEADER
        + "d0,0,40,0-0-512-512,25,512,512,train,id00001\n"
        + "d11,0,40,0-0-512-512,25,512,512,train,id00002\n"
        + "d12,0,24,0-0-512-512,25,512,512,test,id00003\n"
    )
    report = prepare(["voxceleb", "--metadata", str(metadata), "--raw", str(raw), "--size", "64", "--landmarks",
                      str(root / "out")])
    assert len(report.written) == 3 and not report.failed
    return root / "out"


def test_prepared_real_clips_train_and_validate(prepared: Path, tmp_path: Path) -> None:
    assert probe_video(prepared / "test" / "id00003#d12#000000#000024.mp4").num_frames == 24
    overrides = ["data=folder", f"data.root={prepared}", "data.frame_size=64", "data.batch_size=2",
                 "data.num_workers=0", "data.val_videos=1", "data.val_max_frames=8"]
    metrics, objects = run(train_config(tmp_path, tmp_path / "cache", overrides, tiny_synthetic=False))
    assert objects["datamodule"].train_set.identities == ["id00001", "id00002"]
    assert 0 < metrics["val/l1_copy_source"] < 1 and metrics["val/l1"] > 0
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["last_checkpoint"].endswith("last.ckpt")


def test_the_real_cpu_recipe_pulls_its_keypoints_onto_the_prepared_landmarks(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``experiment=real_cpu`` (shortened to 16 steps on three short clips) on clips prepared with ``--landmarks`` at
    64x64: the landmark guidance reads the dlib landmarks of both frames, and within a few steps the keypoints move
    toward them."""
    assert np.isfinite(np.load(prepared / "test" / "id00003#d12#000000#000024.landmarks.npy")).all()
    overrides = ["experiment=real_cpu", f"data.root={prepared}", "data.batch_size=4", "data.num_workers=0",
                 "data.num_repeats=8", "data.val_videos=1", "data.val_max_frames=4", "trainer.max_epochs=4",
                 "trainer.limit_train_batches=4", "trainer.check_val_every_n_epoch=4", "trainer.max_time=null"]
    metrics, _ = run(train_config(tmp_path, tmp_path / "cache", overrides, tiny_synthetic=False))
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = [r["train/landmark_driving_step"] for r in csv.DictReader(f)]
    guidance = [float(value) for value in rows if value]
    assert len(guidance) == 16 and all(np.isfinite(guidance))
    assert np.mean(guidance[-4:]) < 0.8 * np.mean(guidance[:4])
    assert np.isfinite(metrics["val/l1"])
    # benchmarks/reconstruction_parts.py reads the guidance from the run and measures the keypoints' distance from the
    # held-out clip's landmarks
    script = REPO / "benchmarks" / "reconstruction_parts.py"
    spec = importlib.util.spec_from_file_location("reconstruction_parts", script)
    parts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parts)
    assert parts.main([str(tmp_path), str(prepared / "test"), "--frames", "8"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| id00003")][0]
    assert 0 < float(row.strip("|").split("|")[-1]) < 64
