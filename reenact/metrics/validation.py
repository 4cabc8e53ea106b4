"""Cheap metrics for periodic validation during training: L1 on every frame, LPIPS and AKD/MKR on a few.

    metrics = cheap_validation_metrics(prediction, target, lpips_metric=lpips, landmark_detector=detector)
    # {"l1": ..., "lpips": ..., "akd": ..., "mkr": ...}; a key is absent when its tool is not given

:class:`ValidationMetrics` builds the tools once and switches a tool off (with one warning) when it
cannot be built here, e.g. LPIPS' AlexNet backbone is not cached and cannot be downloaded.
"""

from __future__ import annotations

import logging

import torch

from reenact.metrics.akd import AKD_FRAME_SIZE, detect_landmarks, keypoint_scores
from reenact.metrics.frames import FrameSequence
from reenact.metrics.lpips import LPIPSMetric

log = logging.getLogger(__name__)


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """Up to ``wanted`` distinct frame indices spread over [0, count)."""
    if count <= 0 or wanted <= 0:
        return []
    return sorted(set(torch.linspace(0, count - 1, min(wanted, count)).round().long().tolist()))


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
    if prediction.shape != target.shape or prediction.ndim != 4:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must both be (N, 3, H, W)"
        )
    prediction, target = prediction.detach().float(), target.detach().float()
    metrics = {"l1": float((prediction - target).abs().mean())}
    indices = evenly_spaced(prediction.shape[0], num_frames)
    if lpips_metric is not None:
        device = lpips_metric.device
        metrics["lpips"] = float(
            lpips_metric.model(prediction[indices].to(device), target[indices].to(device), normalize=True).mean()
        )
    if landmark_detector is not None:
        pred_frames = FrameSequence(prediction[indices].clamp(0.0, 1.0).cpu())
        true_frames = FrameSequence(target[indices].clamp(0.0, 1.0).cpu())
        scores = keypoint_scores(
            detect_landmarks(pred_frames, landmark_detector, AKD_FRAME_SIZE),
            detect_landmarks(true_frames, landmark_detector, AKD_FRAME_SIZE),
        )
        if scores.akd is not None:
            metrics["akd"] = scores.akd
        if scores.mkr is not None:
            metrics["mkr"] = scores.mkr
    return metrics


class ValidationMetrics:
    """Holds the LPIPS model and landmark detector between calls; tools that cannot be built are skipped."""

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

    def _build(self) -> None:
        self._built = True
        if self.use_lpips:
            try:
                self._lpips = LPIPSMetric("alex", self.lpips_backbone_weights, self.lpips_pnet_rand, self.device)
            except Exception as exc:  # no cached backbone and no network, missing file, missing package
                log.warning("validation LPIPS disabled: %s", str(exc).splitlines()[0] if str(exc) else exc)
        if self.landmark_backend is not None:
            try:
                from reenact.face.landmarks import build_landmark_detector

                self._detector = build_landmark_detector(self.landmark_backend, self.device, face_choice="first")
            except Exception as exc:  # the backend's package or weights are not installed
                log.warning("validation AKD disabled: %s", str(exc).splitlines()[0] if str(exc) else exc)

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        if not self._built:
            self._build()
        return cheap_validation_metrics(prediction, target, self._lpips, self._detector, self.num_frames)
