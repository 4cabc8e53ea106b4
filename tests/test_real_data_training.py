"""The real-data path end to end: prepare real talking-head clips, train on them, evaluate and animate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reenact.data.video import probe_video
from reenact.entrypoints.train import run
from reenact.prepare import run as prepare
from tests.helpers.configs import train_config

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
    report = prepare(["voxceleb", "--metadata", str(metadata), "--raw", str(raw), "--size", "64", str(root / "out")])
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
