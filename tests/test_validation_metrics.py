"""The optional cheap-validation callback (val/lpips, val/akd, val/mkr) and its tools' fallbacks."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from reenact.callbacks.validation_metrics import ValidationMetricsCallback
from reenact.cli.train import run
from reenact.metrics.validation import ValidationMetrics
from reenact.utils.config_check import check_instantiable
from reenact.utils.hydra_utils import compose_config
from tests.helpers.configs import train_config

ENABLE = "callbacks=[default,validation_metrics]"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def read_metrics_csv(output_dir: Path) -> list[dict[str, str]]:
    with open(output_dir / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_config_appends_the_callback_to_the_defaults() -> None:
    cfg = compose_config("train", [ENABLE])
    assert {"model_checkpoint", "last_checkpoint", "validation_metrics"} <= set(cfg.callbacks)
    assert "validation_metrics" not in compose_config("train").callbacks  # optional: not on by default
    check_instantiable(cfg.callbacks.validation_metrics, "callbacks.validation_metrics")  # keys match the signature
    ours = instantiate(cfg.callbacks.validation_metrics)
    assert isinstance(ours, ValidationMetricsCallback)
    assert (ours.every_n_epochs, ours.num_videos, ours.num_frames, ours.landmark_backend) == (5, 2, 8, "dlib")
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1, got 0"):
        ValidationMetricsCallback(every_n_epochs=0)


def test_training_logs_the_cheap_metrics_every_n_epochs(tmp_path: Path, cache_dir: Path) -> None:
    _, objects = run(
        train_config(
            tmp_path,
            cache_dir,
            [
                ENABLE,
                "trainer.max_epochs=2",
                "callbacks.validation_metrics.every_n_epochs=2",
                "callbacks.validation_metrics.num_frames=3",
                "callbacks.validation_metrics.lpips_pnet_rand=true",  # nothing downloads; not a comparable LPIPS
                "callbacks.reconstruction_visualizer.every_n_epochs=100",
            ],
        )
    )
    (callback,) = [c for c in objects["trainer"].callbacks if isinstance(c, ValidationMetricsCallback)]
    assert callback.metrics is not None and "lpips" in callback.metrics.available
    rows = read_metrics_csv(tmp_path)
    logged = {int(r["epoch"]): float(r["val/lpips"]) for r in rows if r.get("val/lpips")}
    assert list(logged) == [1]  # epoch 0 is skipped with every_n_epochs=2
    assert 0.0 < logged[1] < 1.0 and math.isfinite(logged[1])
    callback_metrics = objects["trainer"].callback_metrics
    assert float(callback_metrics["val/lpips"]) == pytest.approx(callback.last_values["val/lpips"], rel=1e-6)
    # Cartoon faces may defeat dlib: then AKD/MKR are simply absent, never a crash or a NaN.
    for key in ("val/akd", "val/mkr"):
        if key in callback_metrics:
            assert math.isfinite(float(callback_metrics[key]))
    if "val/mkr" in callback_metrics:
        assert 0.0 <= float(callback_metrics["val/mkr"]) <= 1.0


def test_dlib_scores_real_faces(faces_dir: Path) -> None:
    pytest.importorskip("dlib")
    from reenact.data.video import read_frames
    from reenact.metrics.frames import as_float_frames

    frames = as_float_frames(read_frames(faces_dir / "d0.mp4", [0, 15, 30]), 128)  # (3, 3, 128, 128)
    metrics = ValidationMetrics(use_lpips=False, landmark_backend="dlib", num_frames=3)
    assert metrics(frames, frames) == {"l1": 0.0, "akd": 0.0, "mkr": 0.0}
    # 4 px at 128 = 8 px of the 256 x 256 AKD frame along x only; AKD averages |dx| and |dy|: about 4
    moved = metrics(torch.roll(frames, shifts=4, dims=-1), frames)
    assert moved["mkr"] == 0.0 and 3.0 < moved["akd"] < 6.0
    blank = metrics(torch.zeros_like(frames), frames)  # no face in the prediction: missed, no AKD
    assert blank["mkr"] == 1.0 and "akd" not in blank


class FailingDetector:
    def detect(self, image: np.ndarray) -> np.ndarray | None:
        raise RuntimeError("detector crashed")


def test_unavailable_or_failing_tools_are_switched_off_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = torch.rand(4, 3, 32, 32)
    metrics = ValidationMetrics(lpips_backbone_weights=str(tmp_path / "missing.pth"), landmark_backend="nope")
    with caplog.at_level(logging.WARNING, logger="reenact.metrics.validation"):
        first = metrics(frames, frames * 0.5)
        second = metrics(frames, frames * 0.5)
    assert first == second and set(first) == {"l1"}
    assert first["l1"] == pytest.approx(float((frames * 0.5).abs().mean()), rel=1e-6)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "LPIPS disabled" in warnings[0] and "missing.pth" in warnings[0]
    assert "AKD/MKR disabled" in warnings[1] and "nope" in warnings[1]

    caplog.clear()
    failing = ValidationMetrics(use_lpips=False, landmark_backend=None)
    failing._detector = FailingDetector()  # a backend that breaks on real input, mid-training
    with caplog.at_level(logging.WARNING, logger="reenact.metrics.validation"):
        assert set(failing(frames, frames)) == {"l1"}
        assert set(failing(frames, frames)) == {"l1"}
    assert [r.getMessage() for r in caplog.records] == [
        "validation AKD/MKR disabled after landmark detection failed: RuntimeError: detector crashed"
    ]


def test_random_lpips_backbone_is_the_same_in_every_run() -> None:
    from reenact.metrics.lpips import LPIPSMetric

    frames, other = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    first = LPIPSMetric(pnet_rand=True)(frames, other)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is not consumed
    torch.manual_seed(2)  # a different global random state must not change the seeded backbone
    second = LPIPSMetric(pnet_rand=True)(frames, other)
    assert first == second and first > 0
