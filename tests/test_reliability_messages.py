"""Faults that must end in one clear line (issue 28): too many source frames, a diverged model at validation, a
one-frame video for ``prepare``, a still image as the driving video, and unquoted paths with spaces or non-ASCII
letters. The commands are the issue's, with its tiny-run flags."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reenact.utils.hydra_utils import compose_config, to_plain
from reenact.utils.visualize import draw_keypoints
from tests.helpers.configs import TINY_DATA

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=1",
            "trainer.max_time=null"]
MEMORY_CAP = 6 * 2**30  # the old failure grew to 22.6 GB: keep a regression from taking the machine down


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _cli(args: list[str], cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, text=True, capture_output=True,
                          timeout=timeout, preexec_fn=_cap_memory)


def _errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def _noise_video(path: Path, frames: int, size: int = 64) -> Path:
    from reenact.data.video_writer import write_video

    rng = np.random.default_rng(0)
    write_video(path, rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8), 25)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared clip folder (train/, test/, dataset.json) of 16-frame clips at 64 px."""
    from reenact.data.synthetic import ensure_synthetic_dataset

    return ensure_synthetic_dataset(tmp_path_factory.mktemp("prepared"), resolution=64, num_train_identities=2,
                                    num_test_identities=1, clips_per_identity=1, num_frames=16)


# ------------------------------------------------------------------------------- item 2: num_sources too large
def test_more_sources_than_the_clips_have_stops_at_start_up(tmp_path: Path, prepared: Path) -> None:
    done = _cli(["train.py", "model=implicit_warping_small", "data=folder", f"data.root={prepared}",
                 "data.frame_size=64", "data.batch_size=2", "data.num_sources=500", "data.num_workers=0",
                 *TINY_RUN, f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = _errors(done)
    assert len(errors) == 1 and "data.num_sources=500: more source frames per pair than the shortest training " \
        "clip has (16 frames" in errors[0] and errors[0].endswith("use at most 16"), errors
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_one_sample_is_bounded_whatever_the_clips(prepared: Path) -> None:
    from reenact.data.datasets import MAX_SAMPLE_BYTES, DatasetError, PairDataset

    frame_size = 2048  # 13 frames of 2048 px are 624 MiB
    assert 13 * 3 * frame_size**2 * 4 > MAX_SAMPLE_BYTES
    with pytest.raises(DatasetError, match=r"data.num_sources=12: one sample would hold 624 MiB .* use at most 4$"):
        PairDataset(prepared / "train", frame_size, num_sources=12)
    assert len(PairDataset(prepared / "train", 64, num_sources=16)[0]["sources"]) == 16


# ------------------------------------------------------------------- item 3: divergence before the visualiser
def test_divergence_is_one_line_before_anything_is_drawn_or_saved(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = _cli(["train.py", "model.lr.kp_detector=1e8", "model.lr.generator=1e8", "trainer.max_epochs=3",
                 *TINY_DATA, *TINY_RUN, "data.batch_size=2", f"paths.cache_dir={tmp_path / 'cache'}",
                 f"hydra.run.dir={run_dir}"])
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = _errors(done)
    assert len(errors) == 1 and errors[0].startswith("error: NonFiniteError: non-finite weights at epoch 0 "), errors
    assert "running_var" in errors[0]
    assert not list(run_dir.glob("images/*.png")), "nothing may be drawn from a diverged model"
    assert not list(run_dir.glob("checkpoints/*.ckpt"))


def test_drawing_skips_non_finite_points() -> None:
    image = np.zeros((16, 16, 3), np.uint8)
    points = np.array([[0.0, 0.0], [np.nan, 0.5], [np.inf, -np.inf], [1.0, 1.0]])
    drawn = draw_keypoints(image, points, radius=1)
    assert drawn[8, 8].any() and drawn[15, 15].any()  # the finite points are drawn
    alone = draw_keypoints(image, points[[0, 3]], radius=1)
    assert np.array_equal(drawn[7:10, 7:10], alone[7:10, 7:10])


# ---------------------------------------------------------------------------- item 7: a one-frame video to prepare
def test_prepare_says_a_one_frame_clip_is_too_short(tmp_path: Path) -> None:
    _noise_video(tmp_path / "in" / "clip.mp4", frames=1)
    done = _cli(["-m", "reenact.prepare", "folder", str(tmp_path / "in"), str(tmp_path / "out")])
    assert "torch.cat" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert (f"no clip: {tmp_path / 'in' / 'clip.mp4'}: the video is too short: 1 frame(s) < min_frames 64 "
            "(--min-frames 1 keeps it)") in done.stdout.splitlines(), done.stdout + done.stderr


# --------------------------------------------------------------------- item 8: a still image as the driving input
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the default FOMM preset (built, not trained)."""
    from hydra.utils import instantiate

    path = tmp_path_factory.mktemp("checkpoint") / "fomm.ckpt"
    cfg = compose_config("train", [])
    network = instantiate(cfg.model.network)
    state = {f"network.{k}": v for k, v in network.state_dict().items()}
    meta = {"family": network.family, "model_config": to_plain(cfg.model), "data_config": {"frame_size": 64}}
    torch.save({"state_dict": state, "reenact": meta}, path)
    return path


def test_a_still_image_as_driving_is_named_as_an_image(tmp_path: Path, checkpoint: Path) -> None:
    from PIL import Image

    source, still = tmp_path / "face.png", tmp_path / "still.jpg"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(source)
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(still)
    done = _cli(["-m", "reenact.animate", f"ckpt_path={checkpoint}", f"source={source}", f"driving={still}",
                 f"output={tmp_path / 'out.mp4'}", "crop.source=false", "crop.driving=false", "device=cpu",
                 "progress=false", f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 2, done.stderr[-3000:]
    assert _errors(done) == [f"error: driving {still} is an image, not a video: the driving input must be a video "
                             "(or a folder of its frames); a still image goes in source="], done.stderr[-3000:]
    assert "max_frames" not in done.stderr


# --------------------------------------------------------------- item 9: unquoted paths with spaces or non-ASCII
@pytest.mark.parametrize(("argv", "quoted"), [
    (["source=my", "photo.jpg"], "\"source='my photo.jpg'\""),
    (["source=fotó.jpg"], "\"source='fotó.jpg'\""),
    (["source=Привет.png"], "\"source='Привет.png'\""),
])
def test_an_unquoted_path_gets_one_line_that_shows_the_quoting(argv: list[str], quoted: str) -> None:
    from reenact.utils.hydra_utils import override_syntax_error

    message = override_syntax_error(["ckpt_path=run", *argv, "driving=talk.mp4"])
    assert message is not None and message.endswith(f"quote a value with spaces, non-ASCII letters or brackets: "
                                                     f"{quoted}")
    # what the hint shows parses; so do sweeps, appends and deletions
    assert override_syntax_error(["-m", "a=1,2", quoted.strip('"'), "+x.y=3", "~z"]) is None


@pytest.mark.parametrize("entry", [["-m", "reenact.animate"], ["train.py"]])
def test_entry_points_print_the_quoting_hint_and_exit_2(entry: list[str]) -> None:
    done = _cli([*entry, "ckpt_path=run", "source=my", "photo.jpg", "driving=talk.mp4"], timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "error: 'photo.jpg' is not key=value: the value of source seems to hold a space; quote a value with spaces, "
        "non-ASCII letters or brackets: \"source='my photo.jpg'\""]
    done = _cli([*entry, "ckpt_path=run", "source=fotó.jpg", "driving=talk.mp4"], timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: cannot parse the override 'source=fotó.jpg'; quote a value with spaces, non-ASCII letters or "
        "brackets: \"source='fotó.jpg'\""]
