"""A configurable set of metrics run over (prediction, target) videos, aggregated overall and per video.

Aggregation follows FOMM: a metric's overall value is the mean over *all counted frames of all videos*
(frame-weighted), not the mean of per-video means. Per-video values are the mean over that video's
counted frames. A metric with no counted frame (e.g. AKD where no face was ever found) is ``None``.
FID is computed once over all frames. Landmarks are detected once per frame and shared by AKD, MKR
and AED. Pixel metrics (l1, lpips, psnr, ssim) compare frames at ``frame_size`` (both videos resized;
``None`` keeps the native size, which must then match); landmark metrics always use 256 x 256 frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from reenact.metrics.aed import FaceEmbedder, build_face_embedder, identity_scores
from reenact.metrics.akd import AKD_FRAME_SIZE, detect_landmarks, keypoint_scores, landmark_backend_record
from reenact.metrics.fid import FIDMetric
from reenact.metrics.frames import FrameSequence, Video, check_same_length
from reenact.metrics.l1 import l1_backend, l1_per_frame
from reenact.metrics.lpips import LPIPSMetric
from reenact.metrics.psnr_ssim import psnr_backend, psnr_per_frame, ssim_backend, ssim_per_frame

log = logging.getLogger(__name__)

PIXEL_METRICS = ("l1", "lpips", "psnr", "ssim")
LANDMARK_METRICS = ("akd", "mkr", "aed")
METRIC_NAMES = (*PIXEL_METRICS, *LANDMARK_METRICS, "fid")
_COUNT_KEYS = (
    "frames_with_gt_face",
    "frames_with_both_faces",
    "frames_missing_prediction_face",
    "aed_frames",
    "aed_frames_without_reference_face",
    "aed_frames_aligned_with_target_landmarks",
)


class MetricSuite:
    """Scores videos one by one (``score_video``) and reports everything at the end (``summary``)."""

    def __init__(
        self,
        names: Sequence[str],
        frame_size: int | None = 256,
        device: str = "cpu",
        batch_size: int = 16,
        landmark_detector: object | None = None,
        landmark_backend: str = "fan",
        landmark_face_choice: str = "first",
        lpips_metric: LPIPSMetric | None = None,
        face_embedder: FaceEmbedder | None = None,
        aed_distance: str = "squared_l2",
        fid_metric: FIDMetric | None = None,
    ) -> None:
        unknown = [n for n in names if n not in METRIC_NAMES]
        if unknown or not names:
            raise ValueError(f"unknown metric(s) {unknown or names}; choose from {', '.join(METRIC_NAMES)}")
        self.names = tuple(dict.fromkeys(names))  # ordered, without duplicates
        self.frame_size = frame_size
        self.device = device
        self.batch_size = batch_size
        self.aed_distance = aed_distance
        self.landmark_backend = landmark_backend
        if landmark_detector is None and any(n in self.names for n in LANDMARK_METRICS):
            from reenact.face.landmarks import build_landmark_detector

            landmark_detector = build_landmark_detector(landmark_backend, device, face_choice=landmark_face_choice)
        if lpips_metric is None and "lpips" in self.names:
            lpips_metric = LPIPSMetric(device=device, batch_size=batch_size)
        if face_embedder is None and "aed" in self.names:
            face_embedder = build_face_embedder("dlib")
        if fid_metric is None and "fid" in self.names:
            fid_metric = FIDMetric(device=device)
        self.landmark_detector = landmark_detector
        self.landmark_face_choice = landmark_face_choice
        self.lpips = lpips_metric
        self.face_embedder = face_embedder
        self.fid = fid_metric
        self.per_video: dict[str, dict[str, Any]] = {}
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._totals: dict[str, int] = {"frames": 0, **dict.fromkeys(_COUNT_KEYS, 0)}

    def score_video(
        self,
        name: str,
        prediction: Video,
        target: Video,
        identity_reference: Video | None = None,
    ) -> dict[str, Any]:
        """Scores one video and records it; returns its per-video entry.

        target: frame-aligned ground truth (reconstruction) or driving frames (cross-identity).
        identity_reference: what AED compares with (default: ``target``); 1 frame (a source image) or T.
        """
        if name in self.per_video:
            raise ValueError(f"video {name!r} was already scored")
        pred = FrameSequence.wrap(prediction, self.frame_size)
        true = FrameSequence.wrap(target, self.frame_size)
        check_same_length(pred, true)
        counts: dict[str, Any] = {}
        per_frame = self.pixel_per_frame(pred, true, [n for n in PIXEL_METRICS if n in self.names])
        if any(n in self.names for n in LANDMARK_METRICS):
            per_frame.update(self._landmark_metrics(pred, true, identity_reference, counts))
        if "fid" in self.names:
            self.fid.update(pred, true)
        entry: dict[str, Any] = {"frames": len(pred)}
        for metric, values in per_frame.items():
            valid = values[~np.isnan(values)]
            entry[metric] = float(valid.mean()) if valid.size else None
            self._sums[metric] = self._sums.get(metric, 0.0) + float(valid.sum())
            self._counts[metric] = self._counts.get(metric, 0) + int(valid.size)
        entry.update(counts)
        self._totals["frames"] += len(pred)
        for key in _COUNT_KEYS:
            self._totals[key] += int(counts.get(key, 0))
        self.per_video[name] = entry
        log.info("%s: %s", name, _short(entry, self.names))
        return entry

    def pixel_per_frame(self, pred: FrameSequence, true: FrameSequence, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Per-frame values (T,) float64 of the pixel metrics ``names``, with this suite's tools and settings."""
        pixel: dict[str, Callable[[], torch.Tensor]] = {
            "l1": lambda: l1_per_frame(pred, true, self.batch_size, self.device),
            "lpips": lambda: self.lpips.per_frame(pred, true),
            "psnr": lambda: psnr_per_frame(pred, true, batch_size=self.batch_size, device=self.device),
            "ssim": lambda: ssim_per_frame(pred, true, self.batch_size, self.device),
        }
        return {metric: pixel[metric]().double().numpy() for metric in names}

    def _landmark_metrics(
        self,
        pred: FrameSequence,
        true: FrameSequence,
        identity_reference: Video | None,
        counts: dict[str, Any],
    ) -> dict[str, np.ndarray]:
        """Per-frame AKD/MKR/AED (as requested); their frame counts go into ``counts``."""
        pred_points = detect_landmarks(pred, self.landmark_detector, AKD_FRAME_SIZE)
        true_points = detect_landmarks(true, self.landmark_detector, AKD_FRAME_SIZE)
        out: dict[str, np.ndarray] = {}
        keypoints = keypoint_scores(pred_points, true_points)
        if "akd" in self.names or "mkr" in self.names:
            counts.update({k: v for k, v in keypoints.counts.items() if k != "frames"})
            if "akd" in self.names:
                out["akd"] = keypoints.akd_per_frame
            if "mkr" in self.names:
                out["mkr"] = keypoints.missing_per_frame
        if "aed" in self.names:
            if identity_reference is None:
                reference, reference_points = true, true_points
            else:
                reference = FrameSequence.wrap(identity_reference, self.frame_size)
                reference_points = detect_landmarks(reference, self.landmark_detector, AKD_FRAME_SIZE)
            identity = identity_scores(
                pred,
                reference,
                pred_points,
                reference_points,
                self.face_embedder,
                self.aed_distance,
                fallback_landmarks=true_points,
                frame_size=AKD_FRAME_SIZE,
            )
            counts.update(identity.counts)
            out["aed"] = identity.aed_per_frame
        return out

    def overall(self) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for metric in self.names:
            if metric == "fid":
                values["fid"] = self.fid.compute() if self.fid.num_real >= 2 and self.fid.num_fake >= 2 else None
            else:
                count = self._counts.get(metric, 0)
                values[metric] = self._sums[metric] / count if count else None
        return values

    def backends(self) -> dict[str, Any]:
        described: dict[str, Callable[[], dict[str, Any]]] = {
            "l1": l1_backend,
            "psnr": psnr_backend,
            "ssim": ssim_backend,
            "lpips": lambda: self.lpips.backend,
            "akd": self._landmark_backend,
            "mkr": self._landmark_backend,
            "aed": lambda: {
                **self.face_embedder.backend,
                "distance": self.aed_distance,
                "landmarks": self._landmark_backend(),
            },
            "fid": lambda: self.fid.backend,
        }
        return {metric: described[metric]() for metric in self.names}

    def _landmark_backend(self) -> dict[str, Any]:
        return landmark_backend_record(self.landmark_backend, self.landmark_detector, self.landmark_face_choice)

    def summary(self) -> dict[str, Any]:
        """{"overall", "per_video", "counts", "backends", "frame_size"}; JSON-serialisable."""
        return {
            "overall": self.overall(),
            "per_video": dict(self.per_video),
            "counts": {"videos": len(self.per_video), **self._totals},
            "backends": self.backends(),
            "frame_size": self.frame_size,
        }


def build_metric_suite(
    names: Sequence[str] = ("l1", "lpips", "psnr", "ssim", "akd", "mkr", "aed"),
    frame_size: int | None = 256,
    device: str = "cpu",
    batch_size: int = 16,
    landmark_backend: str = "fan",
    landmark_face_choice: str = "first",
    lpips_net: str = "alex",
    lpips_backbone_weights: str | None = None,
    lpips_pnet_rand: bool = False,
    aed_embedder: str | FaceEmbedder = "dlib",
    aed_model_path: str | None = None,
    aed_distance: str = "squared_l2",
    fid_feature_extractor: str | nn.Module = "inception",
    fid_weights_path: str | None = None,
) -> MetricSuite:
    """A :class:`MetricSuite` from plain settings (what ``conf/evaluate.yaml``'s ``metrics`` node holds).

    Only the components of the requested ``names`` are built, so e.g. FID's extractor is never loaded
    unless "fid" is listed.
    """
    names = list(names)
    lpips_metric = (
        LPIPSMetric(lpips_net, lpips_backbone_weights, lpips_pnet_rand, device, batch_size)
        if "lpips" in names
        else None
    )
    embedder = None
    if "aed" in names:
        embedder = build_face_embedder(aed_embedder, aed_model_path) if isinstance(aed_embedder, str) else aed_embedder
    fid_metric = FIDMetric(fid_feature_extractor, fid_weights_path, device, batch_size) if "fid" in names else None
    return MetricSuite(
        names,
        frame_size,
        device,
        batch_size,
        landmark_backend=landmark_backend,
        landmark_face_choice=landmark_face_choice,
        lpips_metric=lpips_metric,
        face_embedder=embedder,
        aed_distance=aed_distance,
        fid_metric=fid_metric,
    )


def _short(entry: dict[str, Any], names: Sequence[str]) -> str:
    return ", ".join(
        f"{n}={entry[n]:.4f}" if isinstance(entry.get(n), float) else f"{n}={entry.get(n)}" for n in names if n in entry
    )
