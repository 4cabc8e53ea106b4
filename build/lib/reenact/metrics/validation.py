"""Cheap metrics for periodic validation during training: L1 on every frame, LPIPS and AKD/MKR on a few.

    metrics = cheap_validation_metrics(prediction, target, lpips_metric=lpips, landmark_detector=detector)
    # {"l1": ..., "lpips": ..., "akd": ..., "mkr": ...}; a key is absent when its tool is not given

:class:`ValidationMetrics` builds the tools once and switches a tool off (with one warning) when it
cannot be built here (e.g. LPIPS' AlexNet backbone is not cached and cannot be downloaded) or when it
fails on the frames it is given, so a training run never stops because of a validation metric.
"""

from __future__ import annotations

import logging

import torch

from reenact.metrics.akd import AKD_FRAME_SIZE, detect_landmarks, keypoint_scores
from reenact.metrics.frames import FrameSequence
from reenact.metrics.lpips import LPIPSMetric

log = logging.getLogger(__name__)


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """Up to ``wanted`` distinct frame indices spread over [0, count); index 0 is always among them."""
    if count <= 0 or wanted <= 0:
        return []
    return sorted(set(torch.linspace(0, count - 1, min(wanted, count)).round().long().tolist()))


def _check_pair(prediction: torch.Tensor, target: torch.Tensor) -> None:
    if prediction.shape != target.shape or prediction.ndim != 4:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must both be (N, 3, H, W)"
        )


@torch.no_grad()
def lpips_value(prediction: torch.Tensor, target: torch.Tensor, lpips_metric: LPIPSMetric) -> float:
    """Mean LPIPS of (N, 3, H, W) frame pairs in [0, 1], in one batch on the metric's device."""
    device = lpips_metric.device
    return float(lpips_metric.model(prediction.float().to(device), target.float().to(device), normalize=True).mean())


def landmark_values(prediction: torch.Tensor, target: torch.Tensor, landmark_detector: object) -> dict[str, float]:
    """AKD (pixels of 256 x 256 frames) and MKR of (N, 3, H, W) frame pairs; a key is absent when its
    frames do not exist (AKD: no frame with faces in both, MKR: no target frame with a face)."""
    pred_frames = FrameSequence(prediction.detach().float().clamp(0.0, 1.0).cpu())
    true_frames = FrameSequence(target.detach().float().clamp(0.0, 1.0).cpu())
    scores = keypoint_scores(
        detect_landmarks(pred_frames, landmark_detector, AKD_FRAME_SIZE),
        detect_landmarks(true_frames, landmark_detector, AKD_FRAME_SIZE),
    )
    values = {}
    if scores.akd is not None:
        values["akd"] = scores.akd
    if scores.mkr is not None:
        values["mkr"] = scores.mkr
    return values


@torch.no_grad()
def cheap_validation_metrics(
    prediction: torch.Tensor,
    target: torch.Tensor,
    lpips_metric: LPIPSMetric | None = None,
    landmark_detector: object | None = None,
    num_frames: int = 4,
) -> dict[str, float]:
    """prediction, target: (N, 3, H, W) in [0, 1] (a batch or a video's frames).

    L1 uses all N frames; LPIPS and AKD/MKR use ``num_frames`` evenly spaced frames. AKD is in pixels of
    256 x 256 frames; it is absent when no frame had faces in both, MKR when no target frame had a face.
    """
    _check_pair(prediction, target)
    prediction, target = prediction.detach().float(), target.detach().float()
    metrics = {"l1": float((prediction - target).abs().mean())}
    indices = evenly_spaced(prediction.shape[0], num_frames)
    if lpips_metric is not None:
        metrics["lpips"] = lpips_value(prediction[indices], target[indices], lpips_metric)
    if landmark_detector is not None:
        metrics.update(landmark_values(prediction[indices], target[indices], landmark_detector))
    return metrics


class ValidationMetrics:
    """Holds the LPIPS model and landmark detector between calls; a tool that cannot be built, or that
    fails on its input, is switched off with one warning and its metric is left out from then on."""

    def __init__(
        self,
        use_lpips: bool = True,
        lpips_backbone_weights: str | None = None,
        lpips_pnet_rand: bool = False,
        landmark_backend: str | None = "dlib",
        num_frames: int = 4,
        device: str = "cpu",
    ) -> None:
        self.use_lpips = use_lpips
        self.lpips_backbone_weights = lpips_backbone_weights
        self.lpips_pnet_rand = lpips_pnet_rand
        self.landmark_backend = landmark_backend
        self.num_frames = num_frames
        self.device = device
        self._lpips: LPIPSMetric | None = None
        self._detector: object | None = None
        self._built = False

    @property
    def available(self) -> list[str]:
        """The metrics this instance reports (after the first call: the tools that could be built)."""
        if not self._built:
            self._build()
        return (
            ["l1"]
            + (["lpips"] if self._lpips is not None else [])
            + (["akd", "mkr"] if self._detector is not None else [])
        )

    def _build(self) -> None:
        self._built = True
        if self.use_lpips:
            try:
                self._lpips = LPIPSMetric("alex", self.lpips_backbone_weights, self.lpips_pnet_rand, self.device)
            except Exception as exc:  # no cached backbone and no network, missing file, missing package
                log.warning("validation LPIPS disabled: %s", _first_line(exc))
        if self.landmark_backend is not None:
            try:
                from reenact.face.landmarks import build_landmark_detector

                self._detector = build_landmark_detector(self.landmark_backend, self.device, face_choice="first")
            except Exception as exc:  # the backend's package or weights are not installed
                log.warning("validation AKD/MKR disabled: %s", _first_line(exc))

    @torch.no_grad()
    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Like :func:`cheap_validation_metrics` with the tools that are available."""
        if not self._built:
            self._build()
        _check_pair(prediction, target)
        prediction, target = prediction.detach().float(), target.detach().float()
        metrics = {"l1": float((prediction - target).abs().mean())}
        indices = evenly_spaced(prediction.shape[0], self.num_frames)
        if self._lpips is not None:
            try:
                metrics["lpips"] = lpips_value(prediction[indices], target[indices], self._lpips)
            except Exception as exc:  # e.g. frames too small for AlexNet's pooling, device out of memory
                log.warning("validation LPIPS disabled after it failed: %s", _first_line(exc))
                self._lpips = None
        if self._detector is not None:
            try:
                metrics.update(landmark_values(prediction[indices], target[indices], self._detector))
            except Exception as exc:  # a detector error must not end the training run
                log.warning("validation AKD/MKR disabled after landmark detection failed: %s", _first_line(exc))
                self._detector = None
        return metrics


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
