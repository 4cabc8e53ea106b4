"""Behaviour of the evaluation metrics: ideal values on identical inputs, known values on known changes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from reenact.metrics import (
    FIDMetric,
    FrameSequence,
    LPIPSMetric,
    MetricSuite,
    cheap_validation_metrics,
    identity_scores,
    keypoint_scores,
    l1_per_frame,
    psnr_per_frame,
    ssim_per_frame,
)
from reenact.metrics.akd import AKDMetric

BASE_LANDMARKS = np.stack([np.linspace(40.0, 200.0, 68), np.linspace(60.0, 180.0, 68)], axis=1)  # (68, 2)
CROPPED_CLIPS = ("d0", "d3", "d6", "d9", "d10", "d11", "d12", "d14")  # d13 is an uncropped desk scene


class MarkerLandmarks:
    """Fake landmark backend: a face at BASE + (R, G) / 10 of pixel (0, 0); no face in an all-black frame."""

    def __init__(self) -> None:
        self.seen_shapes: list[tuple[int, ...]] = []

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        self.seen_shapes.append(image.shape)
        if image.max() == 0:
            return None
        return BASE_LANDMARKS + image[0, 0, :2].astype(np.float64) / 10.0


class MeanColourEmbedder:
    """Fake identity embedder: the mean colour of the frame, so identical frames embed identically."""

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return image.reshape(-1, 3).mean(axis=0) / 255.0

    @property
    def backend(self) -> dict[str, object]:
        return {"package": "test", "version": None}


def marker_video(shifts: list[tuple[int, int] | None], size: int = 64) -> torch.Tensor:
    """Constant-colour float frames (T, 3, size, size) whose marker encodes a landmark shift (dx, dy)."""
    frames = torch.zeros(len(shifts), 3, size, size)
    for t, shift in enumerate(shifts):
        if shift is not None:
            frames[t, 0], frames[t, 1], frames[t, 2] = shift[0] * 10 / 255, shift[1] * 10 / 255, 100 / 255
    return frames


def tiny_feature_extractor() -> nn.Module:
    class Features(nn.Module):
        num_features = 6

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, stride=2)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.conv(images)).mean(dim=(2, 3))  # (n, 6)

    return Features()


# ---------------------------------------------------------------- pixel metrics


def test_pixel_metrics_are_ideal_on_identical_frames_and_exact_on_known_changes() -> None:
    video = torch.rand(5, 3, 32, 32) * 0.8
    assert torch.equal(l1_per_frame(video, video), torch.zeros(5))
    assert torch.allclose(psnr_per_frame(video, video), torch.full((5,), 100.0))  # capped, not inf
    assert torch.allclose(ssim_per_frame(video, video), torch.ones(5), atol=1e-5)
    brighter = video + 0.1
    assert torch.allclose(l1_per_frame(brighter, video), torch.full((5,), 0.1), atol=1e-6)
    assert torch.allclose(psnr_per_frame(brighter, video), torch.full((5,), 20.0), atol=1e-3)  # MSE 0.01
    assert (ssim_per_frame(torch.rand(5, 3, 32, 32), video) < 0.5).all()


def test_uint8_arrays_and_float_tensors_are_the_same_video() -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 16, 20, 3), dtype=np.uint8)
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    assert float(l1_per_frame(frames, tensor).max()) == 0.0
    sequence = FrameSequence(tensor)
    assert np.array_equal(sequence.uint8_frame(2), frames[2])
    assert FrameSequence(frames, size=8).float_chunk(0, 3).shape == (3, 3, 8, 8)
    with pytest.raises(ValueError, match="prediction has 3 frames but target has 2"):
        l1_per_frame(frames, tensor[:2])


def test_lpips_is_zero_on_identical_frames_and_positive_otherwise() -> None:
    metric = LPIPSMetric(pnet_rand=True, batch_size=2)  # random backbone + the shipped linear heads
    video = torch.rand(3, 3, 64, 64)
    assert torch.equal(metric.per_frame(video, video), torch.zeros(3))
    assert (metric.per_frame(torch.rand(3, 3, 64, 64), video) > 0.01).all()
    assert metric.backend["package"] == "lpips" and metric.backend["version"]


def test_lpips_loads_a_local_torchvision_backbone(tmp_path: Path) -> None:
    from torchvision.models import alexnet

    features = alexnet().features
    path = tmp_path / "alexnet.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    metric = LPIPSMetric(backbone_weights=str(path))
    assert torch.equal(metric.model.net.slice1[0].weight, features[0].weight)
    assert torch.equal(getattr(metric.model.net.slice5, "10").weight, features[10].weight)
    torch.save({"classifier.1.weight": torch.zeros(1)}, path)
    with pytest.raises(KeyError, match="features.0.weight"):
        LPIPSMetric(backbone_weights=str(path))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        LPIPSMetric(backbone_weights=str(tmp_path / "nope.pth"))


def test_fid_with_a_custom_extractor_is_zero_for_identical_sets() -> None:
    fid = FIDMetric(tiny_feature_extractor(), batch_size=8)
    real = torch.rand(24, 3, 16, 16)
    fid.update(real, real)
    assert fid.compute() == pytest.approx(0.0, abs=1e-3)
    fid.reset()
    fid.update(real * 0.3, real)
    assert fid.compute() > 0.01
    assert fid.backend["frames"] == {"predicted": 24, "ground_truth": 24}


# ---------------------------------------------------------------- AKD / MKR / AED arithmetic


def test_akd_is_the_per_coordinate_shift_in_pixels_of_the_256_frame() -> None:
    detector = MarkerLandmarks()
    metric = AKDMetric(detector=detector, backend="marker")
    target = marker_video([(0, 0)] * 3)
    assert metric(target, target)["akd"] == 0.0
    assert metric(marker_video([(3, 3)] * 3), target)["akd"] == pytest.approx(3.0)
    # only x moves: the mean over the 68 x 2 coordinates halves it (an L1 per coordinate, not Euclidean)
    assert metric(marker_video([(4, 0)] * 3), target)["akd"] == pytest.approx(2.0)
    assert set(detector.seen_shapes) == {(256, 256, 3)}  # 64 x 64 frames are resized to 256 first


def test_mkr_counts_missing_predicted_faces_among_frames_with_a_target_face() -> None:
    metric = AKDMetric(detector=MarkerLandmarks(), backend="marker")
    prediction = marker_video([(2, 2), None, (4, 4), (1, 1)])
    target = marker_video([(0, 0), (0, 0), (0, 0), None])  # frame 3: no target face -> skipped
    result = metric(prediction, target)
    assert result["akd"] == pytest.approx(3.0)  # frames 0 and 2
    assert result["mkr"] == pytest.approx(1 / 3)
    assert (result["frames_with_gt_face"], result["frames_with_both_faces"]) == (3, 2)
    blank = metric(marker_video([None] * 3), target[:3])
    assert blank["mkr"] == 1.0 and blank["akd"] is None


def test_keypoint_scores_skip_frames_without_a_target_face_instead_of_crashing() -> None:
    scores = keypoint_scores([BASE_LANDMARKS, BASE_LANDMARKS], [None, None])
    assert scores.akd is None and scores.mkr is None


def test_aed_against_one_source_image_and_its_counts() -> None:
    prediction = FrameSequence(marker_video([(1, 1), (1, 1), None]))
    source = FrameSequence(marker_video([(1, 1)]))
    detector = MarkerLandmarks()
    points = [detector.detect(prediction.uint8_frame(t, 256)) for t in range(3)]
    source_points = [detector.detect(source.uint8_frame(0, 256))]
    scores = identity_scores(
        prediction,
        source,
        points,
        source_points,
        MeanColourEmbedder(),
        fallback_landmarks=[BASE_LANDMARKS] * 3,
    )
    assert scores.aed_per_frame[:2].tolist() == [0.0, 0.0]
    expected = float((np.array([10, 10, 100]) / 255.0) @ (np.array([10, 10, 100]) / 255.0))  # black vs source
    assert scores.aed_per_frame[2] == pytest.approx(expected)
    assert scores.counts["aed_frames_aligned_with_target_landmarks"] == 1
    no_face = identity_scores(prediction, source, points, [None], MeanColourEmbedder())
    assert no_face.aed is None and no_face.frames_without_reference_face == 3


def test_suite_aggregates_frame_weighted_and_records_backends() -> None:
    suite = MetricSuite(
        ["l1", "psnr", "akd", "mkr", "aed"],
        frame_size=None,
        landmark_detector=MarkerLandmarks(),
        face_embedder=MeanColourEmbedder(),
    )
    target_a, target_b = marker_video([(0, 0)] * 2), marker_video([(0, 0)] * 6)
    suite.score_video("a", target_a + 0.1, target_a)
    suite.score_video("b", target_b + 0.3, target_b)
    summary = suite.summary()
    assert summary["per_video"]["a"]["l1"] == pytest.approx(0.1, abs=1e-6)
    assert summary["overall"]["l1"] == pytest.approx((2 * 0.1 + 6 * 0.3) / 8, abs=1e-6)  # not (0.1 + 0.3) / 2
    assert summary["counts"]["videos"] == 2 and summary["counts"]["frames"] == 8
    assert summary["backends"]["psnr"]["package"] == "torchmetrics" and summary["backends"]["psnr"]["version"]
    assert summary["backends"]["akd"]["landmarks"] == "fan"  # the name asked for, recorded with the result
    with pytest.raises(ValueError, match="already scored"):
        suite.score_video("a", target_a, target_a)
    with pytest.raises(ValueError, match="unknown metric"):
        MetricSuite(["l2"])


def test_cheap_validation_metrics() -> None:
    target = marker_video([(0, 0)] * 6)
    lpips_metric = LPIPSMetric(pnet_rand=True)
    same = cheap_validation_metrics(target, target, lpips_metric, MarkerLandmarks(), num_frames=3)
    assert same == {"l1": 0.0, "lpips": 0.0, "akd": 0.0, "mkr": 0.0}
    shifted = cheap_validation_metrics(marker_video([(2, 2)] * 6), target, None, MarkerLandmarks())
    assert shifted["akd"] == pytest.approx(2.0) and "lpips" not in shifted
    assert shifted["l1"] == pytest.approx(float((marker_video([(2, 2)]) - marker_video([(0, 0)])).abs().mean()))


# ---------------------------------------------------------------- real landmarks and identities


@pytest.fixture(scope="module")
def dlib_detector():
    pytest.importorskip("dlib")
    from reenact.face.landmarks import build_landmark_detector

    return build_landmark_detector("dlib", "cpu", face_choice="first")


@pytest.fixture(scope="module")
def real_frames(faces_dir: Path) -> np.ndarray:
    from reenact.data.video import read_frames

    return np.stack(
        [FrameSequence(read_frames(faces_dir / "d0.mp4", [0, 20, 40]), 256).uint8_frame(t) for t in range(3)]
    )  # (3, 256, 256, 3)


def test_dlib_akd_of_a_frame_translated_by_two_pixels(real_frames: np.ndarray, dlib_detector) -> None:
    import cv2

    move = np.float32([[1, 0, 2], [0, 1, 2]])  # 2 px right and 2 px down: every coordinate moves by 2
    moved = np.stack([cv2.warpAffine(f, move, (256, 256), borderMode=cv2.BORDER_REPLICATE) for f in real_frames])
    metric = AKDMetric(detector=dlib_detector, backend="dlib")
    assert metric(real_frames, real_frames)["akd"] == 0.0
    result = metric(moved, real_frames)
    assert result["frames_with_both_faces"] == 3
    assert result["akd"] == pytest.approx(2.0, abs=0.5)
    assert metric(np.zeros_like(real_frames), real_frames)["mkr"] == 1.0  # blank prediction: no face at all


def test_dlib_identity_distance_separates_people(faces_dir: Path, real_frames: np.ndarray, dlib_detector) -> None:
    from reenact.data.video import read_frames
    from reenact.metrics import AEDMetric

    other = FrameSequence(read_frames(faces_dir / "d3.mp4", [0, 30, 60]), 256)
    metric = AEDMetric(landmark_backend="dlib", detector=dlib_detector)
    assert metric(real_frames, real_frames)["aed"] == 0.0
    same_person = metric(real_frames[::-1].copy(), real_frames)["aed"]  # other frames of the same clip
    other_person = metric(other, real_frames)["aed"]
    assert 0.0 < same_person < other_person


def test_dlib_finds_faces_in_the_cropped_clips(faces_dir: Path, dlib_detector) -> None:
    from reenact.data.video import probe_video, read_frames

    found = total = 0
    for clip in CROPPED_CLIPS:
        path = faces_dir / f"{clip}.mp4"
        count = probe_video(path).num_frames
        frames = FrameSequence(read_frames(path, list(np.linspace(0, count - 1, 4).astype(int))), 256)
        points = [dlib_detector.detect(frames.uint8_frame(t)) for t in range(len(frames))]
        found += sum(p is not None for p in points)
        total += len(points)
        if clip == "d0":
            valid = [p for p in points if p is not None]
            assert keypoint_scores(valid, valid).akd == 0.0  # a clip against itself
    assert found / total >= 0.95, f"faces found in {found} of {total} sampled frames"


def test_psnr_cap_is_finite() -> None:
    assert math.isfinite(float(psnr_per_frame(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))[0]))
