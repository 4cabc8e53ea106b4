"""Evaluation metrics for face reenactment, each usable on its own (no Lightning).

Videos are float tensors (T, 3, H, W) in [0, 1] or uint8 arrays (T, H, W, 3) (see ``frames``).
FOMM's protocol metrics: L1 (``l1``), AKD and MKR from 68 landmarks (``akd``), AED from identity
embeddings (``aed``). Later works' image metrics: LPIPS (``lpips``), PSNR and SSIM (``psnr_ssim``),
FID (``fid``). ``suite`` runs a configured set over many videos; ``validation`` has the cheap subset
used during training; ``protocols``, ``sources`` and ``report`` serve ``python -m reenact.evaluate``.
Optional packages (lpips, torchmetrics, dlib, face-alignment) are imported only when a metric is built.
"""

from __future__ import annotations

from reenact.metrics.aed import AEDMetric, DlibFaceEmbedder, FaceEmbedder, identity_distance, identity_scores
from reenact.metrics.akd import AKDMetric, KeypointScores, detect_landmarks, keypoint_scores
from reenact.metrics.fid import FIDMetric
from reenact.metrics.frames import FrameSequence, Video, as_float_frames
from reenact.metrics.l1 import l1_distance, l1_per_frame
from reenact.metrics.lpips import LPIPSMetric
from reenact.metrics.psnr_ssim import psnr, psnr_per_frame, ssim, ssim_per_frame
from reenact.metrics.suite import METRIC_NAMES, MetricSuite, build_metric_suite
from reenact.metrics.validation import ValidationMetrics, cheap_validation_metrics

__all__ = [
    "METRIC_NAMES",
    "AEDMetric",
    "AKDMetric",
    "DlibFaceEmbedder",
    "FIDMetric",
    "FaceEmbedder",
    "FrameSequence",
    "KeypointScores",
    "LPIPSMetric",
    "MetricSuite",
    "ValidationMetrics",
    "Video",
    "as_float_frames",
    "build_metric_suite",
    "cheap_validation_metrics",
    "detect_landmarks",
    "identity_distance",
    "identity_scores",
    "keypoint_scores",
    "l1_distance",
    "l1_per_frame",
    "psnr",
    "psnr_per_frame",
    "ssim",
    "ssim_per_frame",
]
