"""The Thin-Plate Spline Motion Model (TPSMM, Zhao & Zhang, CVPR 2022) as one family network.

Motion is a frame's ``value`` (B, K*N, 2): K groups of N = 5 keypoints in normalised [-1, 1] (x, y) coordinates,
each group the control set of one thin-plate spline from the driving to the source frame. The dense motion
network blends the K splines and a background affine into one flow with multi-resolution occlusion masks; the
inpainting network renders the driving frame from the warped source features.

Background transform. The background predictor needs the source *and* the driving image, not their motions.
``forward(source, driving)`` -- training, validation, ``reconstruct`` and evaluation -- applies it when
``reconstruct_with_background`` (the release's reconstruction protocol; default on; during training only from epoch
``bg_start``). Animation (``render`` on transferred motion) applies it only when ``animate_with_background`` (default
off, as the release's demo); then each frame's motion also keeps the frame itself (``frame``) for the predictor.

Transfer modes: ``relative`` (default; the source keypoints move by the driving keypoints' displacement since the
reference frame, scaled by sqrt(hull area(source) / hull area(reference)) over all K*N points), ``absolute`` (the
driving keypoints as they are) and ``avd`` (the AVD network's keypoints for the source identity in the driving
pose; refused in one line while the AVD network is untrained: the ``avd_trained`` buffer records that a stage-2
step ran or that a converted release held AVD weights).

Training. ``set_progress`` follows the TPS-dropout schedule: while epoch < ``dropout_epochs`` each spline is
dropped with p = min(epoch / dropout_increase_epochs * dropout_max_p + dropout_start_p, dropout_max_p). With
``train_avd`` (stage 2, ``experiment=tpsmm_avd``) a training step only trains the AVD network: it recovers the
driving keypoints from the source keypoints and the driving keypoints scaled per sample by independent x/y factors
drawn from ``avd_scale_range``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from reenact.errors import ReenactError
from reenact.families.base import ModelOutput, Motion, ReenactmentFamily, register_family
from reenact.families.fomm.relative_motion import normalize_kp
from reenact.families.tpsmm.avd import AVDNetwork
from reenact.families.tpsmm.background_predictor import BackgroundPredictor
from reenact.families.tpsmm.dense_motion import TPSDenseMotionNetwork
from reenact.families.tpsmm.inpainting import InpaintingNetwork
from reenact.families.tpsmm.keypoint_detector import TPSKeypointDetector

VALUE = "value"  # (B, K*N, 2)
FRAME = "frame"  # (B, 3, H, W): the frame itself, kept only for animation with the background transform


class AVDUntrainedError(ReenactError, ValueError):
    """transfer=avd asked of a model whose AVD network was never trained."""


@register_family
class ThinPlateSplineMotionModel(ReenactmentFamily):
    """source, driving (B, 3, H, W) in [0, 1] -> prediction of driving, keypoints, flow and occlusion masks."""

    family = "tpsmm"
    converter = "reenact.families.tpsmm.convert:convert_tpsmm"
    converter_preset = "tpsmm"
    transfer_modes: ClassVar[tuple[str, ...]] = ("relative", "absolute", "avd")
    may_skip_parameters: ClassVar[bool] = True  # the AVD network trains only in stage 2, the background from bg_start
    renders_2d_flow: ClassVar[bool] = True

    def __init__(
        self,
        kp_detector: TPSKeypointDetector,
        dense_motion_network: TPSDenseMotionNetwork,
        inpainting_network: InpaintingNetwork,
        bg_predictor: BackgroundPredictor | None = None,
        avd_network: AVDNetwork | None = None,
        bg_start: int = 0,
        reconstruct_with_background: bool = True,
        animate_with_background: bool = False,
        dropout_epochs: int = 35,
        dropout_start_p: float = 0.1,
        dropout_max_p: float = 0.3,
        dropout_increase_epochs: int = 10,
        train_avd: bool = False,
        avd_scale_range: Sequence[float] = (0.75, 1.25),
    ) -> None:
        super().__init__()
        if dense_motion_network.num_tps * dense_motion_network.points_per_tps != kp_detector.num_kp:
            raise ValueError(f"kp_detector gives {kp_detector.num_kp} keypoints but dense_motion_network expects "
                             f"{dense_motion_network.num_tps} x {dense_motion_network.points_per_tps}")
        if dense_motion_network.num_occlusion_masks != inpainting_network.num_down_blocks + 1:
            raise ValueError(f"dense_motion_network gives {dense_motion_network.num_occlusion_masks} occlusion masks; "
                             f"the inpainting network needs num_down_blocks + 1 = "
                             f"{inpainting_network.num_down_blocks + 1}")
        if avd_network is not None and avd_network.num_kp != kp_detector.num_kp:
            raise ValueError(f"avd_network.num_kp={avd_network.num_kp} differs from the {kp_detector.num_kp} keypoints")
        if train_avd and avd_network is None:
            raise ValueError("train_avd needs an avd_network")
        low, high = (float(x) for x in avd_scale_range)
        if not 0 < low <= high:
            raise ValueError(f"avd_scale_range must be 0 < low <= high, got {list(avd_scale_range)}")
        if not 0 <= dropout_start_p <= dropout_max_p < 1 or dropout_increase_epochs < 1:
            raise ValueError("TPS dropout needs 0 <= dropout_start_p <= dropout_max_p < 1 and "
                             "dropout_increase_epochs >= 1")
        self.kp_detector = kp_detector
        self.dense_motion_network = dense_motion_network
        self.inpainting_network = inpainting_network
        self.bg_predictor = bg_predictor
        self.avd_network = avd_network
        self.bg_start = bg_start
        self.reconstruct_with_background = reconstruct_with_background
        self.animate_with_background = animate_with_background
        self.dropout_epochs = dropout_epochs
        self.dropout_start_p = dropout_start_p
        self.dropout_max_p = dropout_max_p
        self.dropout_increase_epochs = dropout_increase_epochs
        self.train_avd = train_avd
        self.avd_scale_range = (low, high)
        self.epoch = 0
        self.register_buffer("avd_trained", torch.zeros((), dtype=torch.bool))

    # ------------------------------------------------------------------ training progress
    def set_progress(self, step: int, epoch: int) -> None:
        self.epoch = epoch

    def dropout_probability(self, epoch: int | None = None) -> float | None:
        """The TPS-dropout probability at ``epoch`` (default: the current one); None once dropout has stopped."""
        epoch = self.epoch if epoch is None else epoch
        if epoch >= self.dropout_epochs:
            return None
        return min(epoch / self.dropout_increase_epochs * self.dropout_max_p + self.dropout_start_p,
                   self.dropout_max_p)

    def background_active(self) -> bool:
        """Whether ``forward`` applies the background transform now (training: from bg_start)."""
        if self.bg_predictor is None:
            return False
        if self.training:
            return self.epoch >= self.bg_start
        return self.reconstruct_with_background

    # ------------------------------------------------------------------ forward
    def training_forward(self, batch: dict[str, Any]) -> ModelOutput:
        if self.train_avd:
            return self.avd_training_forward(batch["source"], batch["driving"])
        return super().training_forward(batch)

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> ModelOutput:
        """Reconstruction of ``driving``; with the background transform A(s, d) when :meth:`background_active`
        (output ``bg_param`` (B, 3, 3), else None), with TPS dropout in training."""
        if source.shape != driving.shape:
            raise ValueError(f"source {tuple(source.shape)} and driving {tuple(driving.shape)} shapes differ")
        motion_source = self.encode_motion(source)
        motion_driving = self.encode_motion(driving)
        bg_param = self.bg_predictor(source, driving) if self.background_active() else None
        dropout_p = self.dropout_probability() if self.training else None
        output = self.render_with(source, self.inpainting_network.encode(source), motion_source[VALUE],
                                  motion_driving[VALUE], bg_param, dropout_p)
        output["motion_source"] = motion_source
        output["motion_driving"] = motion_driving
        output["bg_param"] = bg_param
        return output

    def avd_training_forward(self, source: torch.Tensor, driving: torch.Tensor) -> ModelOutput:
        """Stage 2: the AVD network's keypoints (``avd_keypoints``) for the source identity and the driving keypoints
        scaled per sample, against the unscaled driving keypoints (``avd_target``); the prediction is rendered from
        them without gradients."""
        with torch.no_grad():
            motion_source = self.encode_motion(source)
            motion_driving = self.encode_motion(driving)
        target = motion_driving[VALUE]  # (B, K*N, 2)
        low, high = self.avd_scale_range
        scale = torch.rand(target.shape[0], 1, 2, device=target.device) * (high - low) + low  # (B, 1, 2)
        recovered = self.avd_network(motion_source[VALUE], target * scale)  # (B, K*N, 2)
        self.avd_trained.fill_(True)
        with torch.no_grad():
            output = self.render_with(source, self.inpainting_network.encode(source), motion_source[VALUE],
                                      recovered.detach(), None, None)
        output["motion_source"] = motion_source
        output["motion_driving"] = {VALUE: recovered}
        output["avd_keypoints"] = recovered
        output["avd_target"] = target
        return output

    # ------------------------------------------------------------------ motion and rendering
    def encode_motion(self, frames: torch.Tensor) -> Motion:
        """{"value": (B, K*N, 2)}, plus "frame" (the frames) when animation uses the background transform."""
        motion = self.kp_detector(frames)
        if self.animate_with_background and self.bg_predictor is not None:
            motion[FRAME] = frames
        return motion

    def compact_motion(self, motion: Motion) -> Motion:
        return {k: v.detach().float() for k, v in motion.items() if k in (VALUE, FRAME)}

    def render_with(
        self, source: torch.Tensor, encoder_maps: list[torch.Tensor], kp_source: torch.Tensor,
        kp_driving: torch.Tensor, bg_param: torch.Tensor | None, dropout_p: float | None,
    ) -> ModelOutput:
        """Dense motion and inpainting for keypoints (B, K*N, 2) and an optional background affine (B, 3, 3)."""
        if kp_source.shape[0] != kp_driving.shape[0]:
            kp_source = kp_source.expand(kp_driving.shape[0], -1, -1)
        motion = self.dense_motion_network(source, kp_driving, kp_source, bg_param, dropout_p)
        generated = self.inpainting_network.decode(source, encoder_maps, motion["deformation"],
                                                   motion["occlusion_maps"])
        return {
            "prediction": generated["prediction"],  # (B, 3, H, W)
            "deformation": motion["deformation"],  # (B, h, w, 2)
            "occlusion_map": motion["occlusion_maps"][-1],  # (B, 1, H, W): the finest mask
            "occlusion_maps": motion["occlusion_maps"],  # coarsest first
            "deformed": generated["deformed"],  # (B, 3, H, W)
            "contribution_maps": motion["contribution_maps"],  # (B, K+1, h, w)
            "deformed_source": motion["deformed_source"],  # (B, K+1, 3, h, w)
            "warped_encoder_maps": generated["warped_encoder_maps"],  # coarsest first
        }

    def animation_background(self, source: torch.Tensor, driving_motion: Motion) -> torch.Tensor | None:
        if not (self.animate_with_background and self.bg_predictor is not None and FRAME in driving_motion):
            return None
        frames = driving_motion[FRAME]
        return self.bg_predictor(source.expand(frames.shape[0], -1, -1, -1), frames)

    def render(self, source: torch.Tensor, source_motion: Motion, driving_motion: Motion) -> ModelOutput:
        """The source moved to ``driving_motion``'s keypoints; the background transform only with
        ``animate_with_background`` (and a ``frame`` in the driving motion)."""
        return self.render_with(source, self.inpainting_network.encode(source), source_motion[VALUE],
                                driving_motion[VALUE], self.animation_background(source, driving_motion), None)

    def encode_source(self, source: torch.Tensor) -> dict[str, torch.Tensor]:
        """The inpainting encoder's maps at every level ("level0" (B, be, H, W), ...) and the image."""
        maps = self.inpainting_network.encode(source)
        return {"image": source, **{f"level{n}": m for n, m in enumerate(maps)}}

    def render_encoded(
        self, encoding: dict[str, torch.Tensor], source_motion: Motion, driving_motion: Motion
    ) -> torch.Tensor:
        maps = [encoding[f"level{n}"] for n in range(self.inpainting_network.num_down_blocks + 1)]
        source = encoding["image"]
        return self.render_with(source, maps, source_motion[VALUE], driving_motion[VALUE],
                                self.animation_background(source, driving_motion), None)["prediction"]

    # ------------------------------------------------------------------ transfer
    def transfer_motion(
        self, source_motion: Motion, driving_motion: Motion, reference_motion: Motion, mode: str = "relative",
        **options: Any,
    ) -> Motion:
        """relative: source + (driving - reference) * sqrt(hull area(source) / hull area(reference)) over all K*N
        points; avd: the AVD network's keypoints (source identity, driving pose); absolute: the driving keypoints."""
        kept = {k: v for k, v in driving_motion.items() if k == FRAME}
        if mode == "relative":
            moved = normalize_kp(kp_source={VALUE: source_motion[VALUE]}, kp_driving={VALUE: driving_motion[VALUE]},
                                 kp_driving_initial={VALUE: reference_motion[VALUE]}, adapt_movement_scale=True,
                                 use_relative_movement=True, use_relative_jacobian=False)
            return {VALUE: moved[VALUE], **kept}
        if mode == "avd":
            if self.avd_network is None or not bool(self.avd_trained):
                raise AVDUntrainedError(
                    "transfer=avd needs a trained AVD network, and this tpsmm model's was never trained "
                    "(train it with experiment=tpsmm_avd model.init_from=RUN, or use transfer=relative)"
                )
            points = driving_motion[VALUE]
            source_points = source_motion[VALUE].expand(points.shape[0], -1, -1)
            return {VALUE: self.avd_network(source_points, points), **kept}
        return super().transfer_motion(source_motion, driving_motion, reference_motion, mode, **options)

    # ------------------------------------------------------------------ contract
    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {
            "kp_detector": list(self.kp_detector.parameters()),
            "dense_motion": list(self.dense_motion_network.parameters()),
            "inpainting": list(self.inpainting_network.parameters()),
        }
        if self.bg_predictor is not None:
            groups["bg_predictor"] = list(self.bg_predictor.parameters())
        if self.avd_network is not None:
            groups["avd"] = list(self.avd_network.parameters())
        return groups

    def keypoints_2d(self, motion: Motion | None) -> torch.Tensor | None:
        return None if motion is None else motion[VALUE]

    def parameter_report(self) -> list[tuple[str, nn.Module]]:
        return [(name, module) for name, module in self.named_children() if module is not None]
