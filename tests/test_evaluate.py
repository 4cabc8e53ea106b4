"""``python -m reenact.evaluate``: the three protocols end to end, metrics.json, bad input, W&B."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reenact.cli.evaluate import evaluate
from reenact.data.video import read_frames
from reenact.data.video_writer import write_video
from reenact.metrics.sources import EvaluationInputError, video_name
from reenact.utils.config_check import ConfigError
from reenact.utils.hydra_utils import compose_config

REPO_ROOT = Path(__file__).resolve().parents[1]


def smooth_frames(seed: int, count: int = 6, size: int = 64) -> np.ndarray:
    """(T, size, size, 3) uint8 gradients that move a little each frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    colour = rng.uniform(0.2, 0.8, size=3)
    frames = [
        np.stack([np.clip(c + 0.3 * np.sin(6 * x + t / 3 + k) * y, 0, 1) for k, c in enumerate(colour)], -1)
        for t in range(count)
    ]
    return (np.stack(frames) * 255).round().astype(np.uint8)


def run_cli(*overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "reenact.evaluate", *overrides],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def config(tmp_path: Path, *overrides: str):
    out = tmp_path / "out"
    return compose_config("evaluate", [f"paths.output_dir={out}", *overrides])


class CopyDriving:
    """Stand-in for reenact.api's model: a perfect reconstruction; animation copies the driving."""

    frame_size = 32

    def reconstruct(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prediction": driving.clone()}

    def animate(self, source_image: torch.Tensor, driving_frames: torch.Tensor, relative: bool = True) -> torch.Tensor:
        return driving_frames.clone()


class CopySource(CopyDriving):
    """Stand-in that ignores the driving frame: its L1 is the source-to-frame difference."""

    def reconstruct(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prediction": source.clone()}


def test_directories_mode_end_to_end(tmp_path: Path) -> None:
    pred_dir, gt_dir, out = tmp_path / "pred", tmp_path / "gt", tmp_path / "out"
    clip_a, clip_b = smooth_frames(0), smooth_frames(1)
    write_video(gt_dir / "clipA.mp4", clip_a, 25)
    write_video(gt_dir / "clipB.mp4", clip_b, 25)
    gt_only = gt_dir / "clipD.mp4"  # a frame folder with no prediction
    gt_only.mkdir()
    Image.fromarray(clip_a[0]).save(gt_only / "0000000.png")
    write_video(pred_dir / "clipA.mp4", clip_a, 25)  # same frames, same encoder: a perfect prediction
    noisy_b = np.clip(clip_b.astype(int) + np.random.default_rng(2).integers(-40, 40, clip_b.shape), 0, 255)
    Image.fromarray(np.concatenate(list(noisy_b.astype(np.uint8)), axis=1)).save(pred_dir / "clipB.mp4.png")
    write_video(pred_dir / "clipC.mp4", clip_b, 25)  # no ground truth

    result = run_cli(
        f"pred_dir={pred_dir}",
        f"gt_dir={gt_dir}",
        f"hydra.run.dir={out}",
        "metrics.names=[l1,lpips,psnr,ssim,akd,mkr]",
        "metrics.landmark_backend=dlib",
        "metrics.lpips_pnet_rand=true",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OVERALL" in result.stdout and "missing ground truth (1): clipC" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "directories"
    assert set(metrics["per_video"]) == {"clipA", "clipB"}
    clip_a_scores = metrics["per_video"]["clipA"]
    assert clip_a_scores["l1"] == 0.0 and clip_a_scores["lpips"] == 0.0 and clip_a_scores["frames"] == 6
    assert clip_a_scores["ssim"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["per_video"]["clipB"]["l1"] > 0.02
    assert clip_a_scores["akd"] is None and clip_a_scores["frames_with_gt_face"] == 0  # no faces: null, no crash
    assert metrics["inputs"]["missing_ground_truth"] == ["clipC"]
    assert metrics["inputs"]["missing_prediction"] == ["clipD"]
    assert metrics["overall"]["l1"] == pytest.approx(metrics["per_video"]["clipB"]["l1"] / 2)
    assert metrics["backends"]["akd"]["landmarks"] == "dlib" and metrics["backends"]["akd"]["version"]
    assert metrics["backends"]["lpips"]["backbone"].startswith("random")
    assert metrics["environment"]["torch"] == torch.__version__


def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = run_cli(f"pred_dir={tmp_path / 'missing'}", f"gt_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'o'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: pred_dir: no such directory: {tmp_path / 'missing'}"]


def test_unreadable_and_empty_inputs_raise_input_errors(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    with pytest.raises(EvaluationInputError, match="no videos found in pred_dir"):
        evaluate(config(tmp_path, f"pred_dir={pred_dir}", f"gt_dir={gt_dir}", "metrics.names=[l1]"))
    (pred_dir / "x.mp4").write_bytes(b"not a video at all")
    (gt_dir / "x.mp4").write_bytes(b"not a video either")
    with pytest.raises(EvaluationInputError, match="x.mp4"):
        evaluate(config(tmp_path, f"pred_dir={pred_dir}", f"gt_dir={gt_dir}", "metrics.names=[l1]"))
    with pytest.raises(EvaluationInputError, match="nothing to evaluate"):
        evaluate(config(tmp_path))
    with pytest.raises(ConfigError, match="metrics.lpips_pnet_rand: expected bool"):
        evaluate(config(tmp_path, f"pred_dir={pred_dir}", f"gt_dir={gt_dir}", "metrics.lpips_pnet_rand=maybe"))


def test_an_unavailable_landmark_backend_is_bad_input(tmp_path: Path) -> None:
    if importlib.util.find_spec("face_alignment") is not None:
        pytest.skip("face-alignment is installed here")
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    write_video(pred_dir / "y.mp4", smooth_frames(0, 2), 25)
    write_video(gt_dir / "y.mp4", smooth_frames(0, 2), 25)
    with pytest.raises(EvaluationInputError, match="metrics: ImportError: backend 'fan' needs"):
        evaluate(config(tmp_path, f"pred_dir={pred_dir}", f"gt_dir={gt_dir}", "metrics.names=[akd]"))


@pytest.fixture()
def test_split(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for seed, name in enumerate(("id0001#000", "id0002#000")):
        write_video(root / "test" / f"{name}.mp4", smooth_frames(seed, count=5, size=32), 25)
    return root


def test_reconstruction_drives_every_frame_from_frame_0(tmp_path: Path, test_split: Path, monkeypatch) -> None:
    from reenact.data.datasets import VideoDataset

    monkeypatch.setattr("reenact.api.load_pretrained", lambda path, device: CopySource())
    payload = evaluate(
        config(
            tmp_path,
            "ckpt_path=stand-in.ckpt",
            f"data.root={test_split}",
            "metrics.names=[l1,psnr]",
            "save_videos=true",
            "save_format=png",
        )
    )
    assert payload["protocol"] == "reconstruction" and payload["counts"]["videos"] == 2
    # a model that shows the source scores exactly the copy-source baseline (computed beside every model)
    assert payload["baselines"]["copy_source"]["overall"] == {"l1": pytest.approx(payload["overall"]["l1"])}
    for item in VideoDataset(test_split / "test", 32):
        video = item["video"]  # (T, 3, 32, 32)
        expected = (video - video[:1]).abs().mean(dim=(1, 2, 3)).mean()
        assert payload["per_video"][item["name"]]["l1"] == pytest.approx(float(expected), abs=1e-6)
    saved = tmp_path / "out" / "videos"
    assert sorted(p.name for p in saved.iterdir()) == ["id0001#000.png", "id0002#000.png"]
    # the lossless strips re-score to the same L1 in directories mode
    rescored = evaluate(
        config(tmp_path / "again", f"pred_dir={saved}", f"gt_dir={test_split / 'test'}", "metrics.names=[l1]")
    )
    assert rescored["overall"]["l1"] == pytest.approx(payload["overall"]["l1"], abs=1e-6)

    monkeypatch.setattr("reenact.api.load_pretrained", lambda path, device: CopyDriving())
    perfect = evaluate(
        config(tmp_path / "perfect", "ckpt_path=stand-in.ckpt", f"data.root={test_split}", "metrics.names=[l1]")
    )
    assert perfect["overall"]["l1"] == 0.0
    assert json.loads((tmp_path / "perfect" / "out" / "metrics.json").read_text())["overall"]["l1"] == 0.0


def test_cross_identity_scores_pose_against_driving_and_identity_against_source(
    tmp_path: Path, faces_dir: Path, monkeypatch
) -> None:
    pytest.importorskip("dlib")
    from reenact.metrics.frames import FrameSequence

    root = tmp_path / "faces"
    for clip, name in (("d0", "idA#x"), ("d3", "idB#y")):
        frames = FrameSequence(read_frames(faces_dir / f"{clip}.mp4", [0, 10, 20, 30]), 128)
        write_video(root / f"{name}.mp4", np.stack(list(frames.uint8_frames())), 25)
    model = CopyDriving()
    model.frame_size = 128
    monkeypatch.setattr("reenact.api.load_pretrained", lambda path, device: model)
    payload = evaluate(
        config(
            tmp_path,
            "mode=cross",
            "ckpt_path=stand-in.ckpt",
            f"data.root={root}",
            "metrics.names=[l1,akd,mkr,aed]",
            "metrics.landmark_backend=dlib",
        )
    )
    assert list(payload["overall"]) == ["akd", "mkr", "aed"]  # no pixel ground truth in cross mode
    assert set(payload["per_video"]) == {"idB#y__idA#x", "idA#x__idB#y"}
    entry = payload["per_video"]["idB#y__idA#x"]
    assert (entry["source"], entry["driving"]) == ("idB#y", "idA#x")
    assert entry["akd"] == 0.0 and entry["mkr"] == 0.0  # the prediction follows the driving pose exactly
    assert entry["aed"] > 0.2  # but carries the driving identity, not the source's


def test_wandb_logger_gets_the_tables(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    write_video(pred_dir / "a.mp4", smooth_frames(0, 3), 25)
    write_video(gt_dir / "a.mp4", smooth_frames(1, 3), 25)
    payload = evaluate(
        config(tmp_path, f"pred_dir={pred_dir}", f"gt_dir={gt_dir}", "metrics.names=[l1]", "logger=wandb")
    )
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert payload["overall"]["l1"] > 0


def test_video_names_match_fomm_outputs_and_frame_folders() -> None:
    assert video_name(Path("id10280#NXjT3732Ekg#001093#001192.mp4.png")) == "id10280#NXjT3732Ekg#001093#001192"
    assert video_name(Path("clip.mp4")) == video_name(Path("clip")) == "clip"


def test_evaluate_a_real_training_checkpoint_on_synthetic_data(tmp_path: Path) -> None:
    """train -> last.ckpt -> ``python -m reenact.evaluate ckpt_path=... data=synthetic``: the same numbers as
    the training run's own validation (same test videos, frames and weights), and the copy-source baseline."""
    from reenact.cli.train import run
    from tests.helpers.configs import TINY_DATA, train_config

    cache, run_dir, out = tmp_path / "cache", tmp_path / "run", tmp_path / "eval"
    # fp32 as evaluate runs: on a CPU with bfloat16, trainer=cpu validates under bf16 autocast (1e-4 apart)
    metrics, _ = run(train_config(run_dir, cache, ["callbacks.reconstruction_visualizer.every_n_epochs=100",
                                                   "trainer.precision=32-true"]))
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()

    synthetic = [o for o in TINY_DATA if o.startswith("data.synthetic.")]  # the same generated test split
    result = run_cli(
        f"ckpt_path={checkpoint}",
        "data=synthetic",
        *synthetic,
        f"paths.cache_dir={cache}",
        f"hydra.run.dir={out}",
        "max_videos=2",  # the training run validated on val_videos=2, val_max_frames=8
        "max_frames=8",
        "metrics.names=[l1,lpips,psnr,ssim]",
        "metrics.lpips_pnet_rand=true",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "copy_l1" in result.stdout and "OVERALL" in result.stdout
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["protocol"] == "reconstruction" and payload["counts"]["videos"] == 2
    assert payload["inputs"]["frame_size"] == 64 and payload["counts"]["frames"] == 16
    per_video = payload["per_video"]
    assert all(entry["frames"] == 8 and entry["l1"] > 0 for entry in per_video.values())
    copy = payload["baselines"]["copy_source"]["overall"]
    assert set(copy) == {"l1", "lpips", "ssim"}  # no PSNR: the copied frame 0 would sit at the 100 dB cap
    assert copy["l1"] == pytest.approx(sum(e["copy_source"]["l1"] for e in per_video.values()) / 2, rel=1e-6)
    # Evaluation reproduces the training run's validation of the same weights on the same videos.
    assert payload["overall"]["l1"] == pytest.approx(metrics["val/l1"], rel=1e-4)
    assert copy["l1"] == pytest.approx(metrics["val/l1_copy_source"], rel=1e-4)
