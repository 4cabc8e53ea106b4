"""Bad inputs stop every entry point with one line (issue 18, items 4, 8 and 10): broken, malicious and diverged
checkpoints, run folders without a checkpoint, corrupt videos, unwritable and littered ``prepare`` outputs, and
``debug=limit`` writing validation metrics."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from reenact.utils.hydra_utils import compose_config, to_plain

REPO = Path(__file__).resolve().parents[1]
BAD_KINDS = ("empty", "truncated", "code", "garbage", "nonfinite")


# ----------------------------------------------------------------------------- fixtures
class _RunsCode:
    """Pickles as a call to os.system: what a malicious checkpoint holds. It must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A valid checkpoint of the default FOMM preset (built, not trained) and broken variants of it."""
    from hydra.utils import instantiate

    folder = tmp_path_factory.mktemp("checkpoints")
    cfg = compose_config("train", [])
    network = instantiate(cfg.model.network)
    state = {f"network.{k}": v for k, v in network.state_dict().items()}
    meta = {"family": network.family, "model_config": to_plain(cfg.model), "data_config": {"frame_size": 64}}
    paths = {kind: folder / f"{kind}.ckpt" for kind in ("good", *BAD_KINDS)}
    torch.save({"state_dict": state, "reenact": meta}, paths["good"])
    paths["empty"].write_bytes(b"")
    good = paths["good"].read_bytes()
    paths["truncated"].write_bytes(good[: len(good) // 2])  # a copy or a save cut short
    torch.save({"state_dict": state, "reenact": meta, "payload": _RunsCode(folder / "code_ran")}, paths["code"])
    paths["garbage"].write_bytes(b"this is not a checkpoint at all\n" * 10)
    diverged = dict(state)
    running_var = next(k for k in state if k.endswith("running_var"))
    diverged[running_var] = torch.full_like(state[running_var], float("inf"))  # what a learning rate of 1e8 left
    weight = next(k for k in state if k.endswith("weight"))
    diverged[weight] = state[weight].clone().fill_(float("nan"))
    torch.save({"state_dict": diverged, "reenact": meta}, paths["nonfinite"])
    paths["marker"] = folder / "code_ran"
    return paths


def _noise_video(path: Path, frames: int = 12, size: int = 64, seed: int = 0) -> Path:
    from reenact.data.video_writer import write_video

    rng = np.random.default_rng(seed)
    write_video(path, rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8), 25)
    return path


def _corrupt(path: Path, start_fraction: float) -> Path:
    """Overwrite 3000 bytes of the encoded frames from ``start_fraction`` of the way through the file.

    At 0.0 the first frame is gone (probing fails); at 0.5 the file probes fine and breaks part-way.
    """
    data = bytearray(path.read_bytes())
    media = data.find(b"mdat") + 8
    start = media + int((len(data) - media) * start_fraction)
    data[start : start + 3000] = b"\xff" * min(3000, len(data) - start)
    path.write_bytes(bytes(data))
    return path


def _cli(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The CLI stopped with exit code 2 and exactly one ``error:`` line, without a traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


# ----------------------------------------------------------------------------- item 8 + 4: checkpoints
def test_first_line_is_never_empty() -> None:
    from reenact.utils.messages import first_line, one_line

    assert first_line(EOFError()) == "EOFError"  # torch.load on a zero-byte file raises with no message
    assert first_line(ValueError("\n\n  second line\nthird")) == "second line"
    from hydra.errors import InstantiationException

    try:
        try:
            raise ImportError("backend 'x' needs a package")
        except ImportError as inner:
            raise InstantiationException("Error in call to target 'y':\nImportError(...)") from inner
    except InstantiationException as wrapped:
        assert one_line(wrapped, with_type=True) == "ImportError: backend 'x' needs a package"


def tensor_count(path: Path) -> int:
    return len(torch.load(path, weights_only=True)["state_dict"])


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_load_pretrained_refuses_bad_checkpoints_in_one_line(checkpoints: dict[str, Path], kind: str) -> None:
    from reenact.api import CheckpointError, load_pretrained

    with pytest.raises(CheckpointError) as caught:
        load_pretrained(checkpoints[kind])
    message = str(caught.value)
    assert "\n" not in message and str(checkpoints[kind]) in message
    expected = {
        "empty": "the file is empty (0 bytes)",
        "truncated": "truncated, damaged or not a PyTorch checkpoint",
        "code": "(posix.system); reenact refuses to unpickle code (checkpoints are loaded with weights_only=True)",
        "garbage": "truncated, damaged or not a PyTorch checkpoint",
        "nonfinite": f"has 2 of {tensor_count(checkpoints['nonfinite'])} tensors with NaN or inf values",
    }[kind]
    assert expected in message
    assert "weights_only` set to `False" not in message and "weights_only=False" not in message
    assert not checkpoints["marker"].exists()


def test_a_run_folder_without_a_checkpoint_says_where_it_looked(tmp_path: Path) -> None:
    from reenact.api import CheckpointError, load_pretrained
    from reenact.cli.train import resolve_ckpt_path
    from reenact.utils.config_check import ConfigError

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    wanted = f"no checkpoint in {run} (looked for {run / 'checkpoints' / 'last.ckpt'})"
    with pytest.raises(CheckpointError) as caught:
        load_pretrained(run)
    assert str(caught.value) == wanted
    with pytest.raises(ConfigError) as caught:
        resolve_ckpt_path(str(run))
    assert str(caught.value) == f"ckpt_path: {wanted}"


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_resume_refuses_a_bad_checkpoint_before_training(checkpoints: dict[str, Path], kind: str) -> None:
    from reenact.cli.train import resolve_ckpt_path
    from reenact.utils.config_check import ConfigError

    assert resolve_ckpt_path(str(checkpoints["good"])) == str(checkpoints["good"])
    with pytest.raises(ConfigError, match=r"^ckpt_path: .*" + str(checkpoints[kind].name)) as caught:
        resolve_ckpt_path(str(checkpoints[kind]))
    assert "\n" not in str(caught.value)
    assert not checkpoints["marker"].exists()


def test_animate_and_evaluate_stop_on_a_zero_byte_checkpoint_with_one_line(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """torch.load's message for an empty file is empty: the one line must still say what is wrong. The CLIs print
    ``one_line`` of what ``run``/``evaluate`` raise and exit 2 (the subprocess test below shows that plumbing)."""
    from reenact.api import CheckpointError
    from reenact.cli.animate import run as animate
    from reenact.cli.evaluate import evaluate
    from reenact.utils.messages import one_line

    empty = checkpoints["empty"]
    wanted = f"cannot read checkpoint {empty}: the file is empty (0 bytes)"
    cfg = compose_config("animate", [f"ckpt_path={empty}", f"source={tmp_path / 's.png'}",
                                     f"driving={tmp_path / 'd.mp4'}", f"output={tmp_path / 'o.mp4'}",
                                     f"paths.output_dir={tmp_path}"])
    with pytest.raises(CheckpointError) as caught:
        animate(cfg)
    assert one_line(caught.value) == wanted
    cfg = compose_config("evaluate", [f"paths.output_dir={tmp_path}", f"ckpt_path={empty}", "metrics.names=[l1]",
                                      f"data.root={tmp_path}"])
    with pytest.raises(CheckpointError) as caught:
        evaluate(cfg)
    assert one_line(caught.value) == wanted


@pytest.mark.parametrize(("entry", "kind"), [("train", "code"), ("evaluate", "nonfinite")])
def test_entry_points_refuse_bad_checkpoints_with_one_line_and_exit_2(
    checkpoints: dict[str, Path], tmp_path: Path, entry: str, kind: str
) -> None:
    ckpt = checkpoints[kind]
    run_dir = f"hydra.run.dir={tmp_path / 'run'}"
    if entry == "train":
        args = ["train.py", f"ckpt_path={ckpt}", run_dir, "logger=none"]
    else:
        args = ["-m", "reenact.evaluate", f"ckpt_path={ckpt}", "metrics.names=[l1]", f"data.root={tmp_path}", run_dir]
    line = _one_error_line(_cli(args))
    assert str(ckpt) in line
    nonfinite = f"has 2 of {tensor_count(checkpoints['nonfinite'])} tensors with NaN or inf"
    assert {"code": "refuses to unpickle code", "nonfinite": nonfinite}[kind] in line
    assert not checkpoints["marker"].exists()


# ----------------------------------------------------------------------------- item 10: corrupt videos
def test_a_corrupt_driving_video_is_named_and_said_to_be_undecodable(tmp_path: Path) -> None:
    from reenact.animation.cropping import CropSettings
    from reenact.animation.video_job import AnimationOptions, DrivingVideo, prepare_driving
    from reenact.data.video import VideoError, probe_video
    from reenact.utils.messages import one_line

    options = AnimationOptions(crop=CropSettings(driving=False))
    broken = _corrupt(_noise_video(tmp_path / "broken.mp4"), 0.0)
    with pytest.raises(VideoError) as caught:
        prepare_driving(broken, options)
    line = one_line(caught.value)  # what the animate CLI prints
    assert line.startswith(f"driving video {broken} cannot be decoded (") and "Errno" not in line

    partly = _corrupt(_noise_video(tmp_path / "partly.mp4"), 0.5)
    driving = DrivingVideo(partly, probe_video(partly), (0, 0, 64, 64), 12)  # probes fine, breaks part-way
    with pytest.raises(VideoError) as caught:
        list(driving.crops(32))
    line = one_line(caught.value)
    assert line.startswith(f"driving video {partly} cannot be decoded (") and "Errno" not in line


def test_animate_cli_names_a_corrupt_driving_video(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    source = tmp_path / "source.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(source)
    driving = _corrupt(_noise_video(tmp_path / "talk.mp4"), 0.5)
    line = _one_error_line(_cli([
        "-m", "reenact.animate", f"ckpt_path={checkpoints['good']}", f"source={source}", f"driving={driving}",
        f"output={tmp_path / 'out.mp4'}", "crop.source=false", "crop.driving=false", "device=cpu", "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]))
    assert line.startswith(f"error: driving video {driving} cannot be decoded (") and "Errno" not in line
    assert not (tmp_path / "out.mp4").exists()


def test_one_corrupt_prediction_is_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from reenact.cli.evaluate import evaluate
    from reenact.metrics.sources import EvaluationInputError

    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for seed, name in enumerate(("a", "b", "c")):
        _noise_video(gt / f"{name}.mp4", seed=seed)
        _noise_video(pred / f"{name}.mp4", seed=seed)
    _corrupt(pred / "b.mp4", 0.5)
    cfg = compose_config("evaluate", [f"paths.output_dir={tmp_path / 'out'}", f"pred_dir={pred}", f"gt_dir={gt}",
                                      "metrics.names=[l1]"])
    with caplog.at_level(logging.WARNING, logger="reenact.evaluate"):
        payload = evaluate(cfg)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for result in (payload, written):
        assert set(result["per_video"]) == {"a", "c"} and result["overall"]["l1"] is not None
        assert result["counts"]["unreadable_videos"] == 1
        assert list(result["inputs"]["unreadable"]) == ["b"] and "b.mp4" in result["inputs"]["unreadable"]["b"]
    skipped = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(skipped) == 1 and "skipped 1 unreadable video(s), scored the other 2" in skipped[0]

    for name in ("a", "c"):
        _corrupt(pred / f"{name}.mp4", 0.5)
    with pytest.raises(EvaluationInputError, match="none of the 3 matched videos could be read"):
        evaluate(cfg)


# ----------------------------------------------------------------------------- item 10: debug=limit
def test_debug_limit_validates_and_writes_val_metrics(tmp_path: Path) -> None:
    from hydra.core.hydra_config import HydraConfig

    from reenact.cli.train import run
    from tests.helpers.configs import TINY_DATA

    # debug=limit exactly as shipped except for fewer, shorter epochs: the CPU trainer validates every 10th
    # epoch, which a short run never reaches unless debug=limit asks for validation itself.
    overrides = [*TINY_DATA, "debug=limit", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                 "trainer.limit_val_batches=1", "callbacks.reconstruction_visualizer.log_video=false"]
    cfg = compose_config("train", overrides, return_hydra_config=True)
    assert cfg.trainer.check_val_every_n_epoch == 1
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.num = 0
        cfg.paths.root_dir = cfg.paths.output_dir = str(tmp_path)
        cfg.paths.cache_dir = str(tmp_path.parent / "limit_cache")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    run(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert "val/l1" in metrics and np.isfinite(metrics["val/l1"])


# ----------------------------------------------------------------------------- item 10: prepare outputs
def _prepare_input(tmp_path: Path) -> Path:
    in_dir = tmp_path / "in"
    _noise_video(in_dir / "clip.mp4", frames=8)
    return in_dir


def test_prepare_refuses_an_output_folder_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from reenact.cli.prepare import main

    if os.geteuid() == 0:
        # root writes through permission bits; /proc is an existing folder that even root cannot create files in
        out_dir = Path("/proc")
    else:
        out_dir = tmp_path / "readonly"
        out_dir.mkdir()
        out_dir.chmod(0o555)
    code = main(["folder", str(_prepare_input(tmp_path)), str(out_dir), "--detector", "dlib"])
    printed = capsys.readouterr()
    assert code == 2
    err = printed.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: output folder {out_dir} is not writable (")
    assert "face detection" not in printed.out  # stopped before any video was decoded


def test_prepare_cleans_stale_temporaries_at_start_finish_and_on_failure(tmp_path: Path, monkeypatch) -> None:
    from reenact.cli import prepare as cli

    out = tmp_path / "out"
    stale = [out / "train" / ".a#b#000000#000064.mp4.0123abcd.tmp",  # a clip being encoded when killed
             out / "train" / ".a#b#000000#000064.landmarks.npy.89abcdef.tmp",
             out / ".prepare" / "folder" / ".clip.json.tmp4242"]  # a manifest
    frames_dir = out / "test" / ".c#d#000000#000064.mp4.fedcba98.tmp"  # a png frame folder
    kept = [out / "train" / "a#b#000000#000064.mp4", out / "train" / ".notes", out / "test" / ".tmp"]
    for path in [*stale, *kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (frames_dir / "0000000.png").parent.mkdir(parents=True)
    (frames_dir / "0000000.png").write_bytes(b"x")
    args = ["folder", str(_prepare_input(tmp_path)), str(out), "--detector", "dlib"]
    seen: dict[str, list[Path]] = {}

    def leaves_a_temporary(tasks, function, workers, desc):  # a worker killed mid-write, then the run ends
        seen["at_start"] = [p for p in [*stale, frames_dir] if p.exists()]
        (out / "train" / ".x#y#000000#000064.mp4.00000000.tmp").write_bytes(b"half a clip")
        return cli.PrepareReport()

    monkeypatch.setattr(cli, "execute", leaves_a_temporary)
    cli.run(args)
    assert seen["at_start"] == []
    assert not (out / "train" / ".x#y#000000#000064.mp4.00000000.tmp").exists()
    assert all(p.exists() for p in kept)

    def fails(tasks, function, workers, desc):
        (out / "train" / ".x#y#000000#000064.mp4.11111111.tmp").write_bytes(b"half a clip")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "execute", fails)
    with pytest.raises(KeyboardInterrupt):
        cli.run(args)
    assert not (out / "train" / ".x#y#000000#000064.mp4.11111111.tmp").exists()
    assert all(p.exists() for p in kept)
