"""The LivePortrait-style reenactment model: F, M, W and G wired together for a family-agnostic task.

Training convention (face-vid2vid's, for same-identity source/driving pairs): M runs on both frames; the
source keypoints are the source's canonical keypoints under the source's pose, expression, scale and
translation; the driving keypoints apply the *driving* frame's pose, expression, scale and translation to
the *source's* canonical keypoints (``driving_uses_source_canonical=True``), because canonical keypoints
describe identity. F encodes the source into a feature volume, W warps it from the source to the driving
keypoints and G renders the prediction. Images are RGB in [0, 1].

``warped_skips=True`` (not in LivePortrait, and off in ``model=liveportrait``) adds FOMM-preset-style skip
connections: F's 2D encoder features at every level finer than the volume are warped by the depth-averaged
(x, y) of W's deformation, masked by the (detached) occlusion map and added to G's up blocks at the same size
(through a 1x1 projection where the widths differ; none at the small preset's sizes). Without them every detail of the
output passes the coarse volume, and even static background the source already shows comes out blurred
(experiments/2026-11-22_liveportrait_small.md).

The second stage (optional networks, all three zero-initialised so that they start as the identity): the stitching
network S corrects the driving keypoints so that a crop pasted back into the full image has no seam, and the eye and
lip retargeting networks R_eyes, R_lip offset the source keypoints to a requested eye or mouth openness. Animation asks
for them through entries of the transferred motion (``stitching`` (B, 1) weight; ``eye_condition`` (B, 3) with
``eye_weight`` (B, 1); ``lip_condition`` (B, 2) with ``lip_weight`` (B, 1)), which rendering applies before W:

    x_d' = x_d + w_eye * R_eyes(x_s, c_eye) + w_lip * R_lip(x_s, c_lip);   x_d'' = x_d' + w_st * S(x_s, x_d')

so the networks run inside the renderer (and its ONNX graph). ``training_stage=2`` trains them with F, M, W and G
frozen (see :mod:`reenact.families.liveportrait.stage2`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reenact.families.base import ModelOutput, Motion, ReenactmentFamily, register_family
from reenact.families.liveportrait.appearance_feature_extractor import AppearanceFeatureExtractor
from reenact.families.liveportrait.controls import second_stage_controls
from reenact.families.liveportrait.eye_retargeting_network import EyeRetargetingNetwork
from reenact.families.liveportrait.keypoint_transform import motion_to_keypoints, transform_keypoints
from reenact.families.liveportrait.lip_retargeting_network import LipRetargetingNetwork
from reenact.families.liveportrait.motion_extractor import MotionExtractor
from reenact.families.liveportrait.spade_decoder import SPADEDecoder
from reenact.families.liveportrait.stitching_network import StitchingNetwork
from reenact.families.liveportrait.warping_network import WarpingNetwork
from reenact.layers.geometry import warp, warp_and_mask

# What animation keeps of M's output per driving frame (the angle-bin logits are dropped).
ANIMATION_KEYS = ("kp_canonical", "pitch", "yaw", "roll", "exp", "t", "scale", "rotation", "value")
SECOND_STAGE = ("stitching_network", "eye_retargeting_network", "lip_retargeting_network")
RETARGETING_GROUP = "retargeting"


@register_family
class LivePortraitModel(ReenactmentFamily):
    """F + M + W + G. ``forward(source, driving)`` returns

    - ``prediction`` (B, 3, H', W') in [0, 1]; H' = H * W.upscale * G.upscale when F and G use the same
      number of down blocks (H' = H for the small preset, 2H at the released sizes);
    - ``motion_source``, ``motion_driving``: M's motion dict (``kp_canonical``, ``exp`` (B, K, 3), ``pitch_bins``,
      ``yaw_bins``, ``roll_bins`` (B, num_bins) logits, ``pitch``, ``yaw``, ``roll`` (B,) degrees,
      ``t`` (B, 3),
      ``scale`` (B, 1)) plus ``rotation`` (B, 3, 3) and ``value`` (B, K, 3), the transformed keypoints.
      ``motion_driving["kp_canonical"]`` is the driving frame's own detection; its ``value`` uses the source's
      canonical keypoints unless ``driving_uses_source_canonical`` is False;
    - ``deformation`` (B, D, h, w, 3), ``occlusion_map`` (B, 1, h, w) or None;
    - ``deformed`` (B, 3, H, W): the source image warped by the depth-averaged (x, y) deformation, a 2D
      picture of the 3D warp (differentiable in the deformation, for ``objective.warped_source_l1``).
    """

    family = "liveportrait"
    transfer_modes = ("relative", "absolute")
    # the second stage at animation time (see controls.second_stage_controls); paste_back is filled in by animation
    transfer_options = {"stitching": None, "eye_ratio": None, "lip_ratio": None, "lip_normalize": False,
                        "paste_back": False}
    # the second-stage networks get no gradient in the first stage, nor F, M, W, G in the second
    may_skip_parameters = True
    converter = "reenact.families.liveportrait.convert:convert_liveportrait"
    converter_preset = "liveportrait"

    def __init__(
        self,
        appearance_feature_extractor: AppearanceFeatureExtractor,
        motion_extractor: MotionExtractor,
        warping_network: WarpingNetwork,
        spade_decoder: SPADEDecoder,
        driving_uses_source_canonical: bool = True,
        warped_skips: bool = False,
        stitching_network: StitchingNetwork | None = None,
        eye_retargeting_network: EyeRetargetingNetwork | None = None,
        lip_retargeting_network: LipRetargetingNetwork | None = None,
        training_stage: int = 1,
    ) -> None:
        super().__init__()
        f, m, w, g = appearance_feature_extractor, motion_extractor, warping_network, spade_decoder
        if (f.reshape_channel, f.reshape_depth) != (w.reshape_channel, w.reshape_depth):
            raise ValueError(
                f"LivePortraitModel: F's volume (C={f.reshape_channel}, D={f.reshape_depth}) differs "
                f"from W's (C={w.reshape_channel}, D={w.reshape_depth})"
            )
        if m.num_kp != w.num_kp:
            raise ValueError(f"LivePortraitModel: M predicts {m.num_kp} keypoints but W expects {w.num_kp}")
        if w.out_channels != g.input_channels:
            raise ValueError(
                f"LivePortraitModel: W outputs {w.out_channels} channels but G expects {g.input_channels}"
            )
        self.appearance_feature_extractor = f
        self.motion_extractor = m
        self.warping_network = w
        self.spade_decoder = g
        self.driving_uses_source_canonical = driving_uses_source_canonical
        for name, network in zip(SECOND_STAGE, (stitching_network, eye_retargeting_network, lip_retargeting_network),
                                 strict=True):
            if network is not None and network.num_kp != m.num_kp:
                raise ValueError(f"LivePortraitModel: {name} is built for {network.num_kp} keypoints but M predicts "
                                 f"{m.num_kp}")
        self.stitching_network = stitching_network
        self.eye_retargeting_network = eye_retargeting_network
        self.lip_retargeting_network = lip_retargeting_network
        if training_stage not in (1, 2):
            raise ValueError(f"LivePortraitModel: training_stage must be 1 or 2, got {training_stage!r}")
        if training_stage == 2 and not self.second_stage_networks():
            raise ValueError("LivePortraitModel: training_stage=2 trains the stitching and retargeting networks, "
                             "and none is configured")
        self.training_stage = training_stage
        self.warped_skips = warped_skips
        self.skip_projections = nn.ModuleList()
        if warped_skips:
            if f.num_down_blocks != g.num_down_blocks or w.upscale != 1:
                raise ValueError(
                    "LivePortraitModel: warped_skips needs F and G with the same number of down blocks and "
                    f"W.upscale == 1 (F {f.num_down_blocks}, G {g.num_down_blocks}, W.upscale {w.upscale})"
                )
            encoder_widths = f.level_channels()  # level n at H / 2**n
            for i, width in enumerate(g.up_channels):  # up_i at H / 2**(num_down_blocks - 1 - i)
                source_width = encoder_widths[g.num_down_blocks - 1 - i]
                self.skip_projections.append(
                    nn.Identity() if source_width == width else nn.Conv2d(source_width, width, kernel_size=1)
                )

    def encode_motion(self, frames: torch.Tensor) -> Motion:
        """M on one batch of images; motion dict plus ``rotation`` and ``value`` (own canonical keypoints)."""
        return motion_to_keypoints(self.motion_extractor(frames))

    def render(self, source: torch.Tensor, source_motion: Motion, driving_motion: Motion) -> ModelOutput:
        """F + W + G for given motions (dicts with ``value`` (B, K, 3) keypoints), e.g. relative-motion keypoints
        at animation time."""
        feature_3d, levels = self.appearance_feature_extractor.encode(source)  # (B, C, D, h, w), 2D levels
        warped, prediction = self._warp_and_decode(feature_3d, levels, source_motion, driving_motion, source)
        deformation: torch.Tensor = warped["deformation"]  # always a tensor; the occlusion map may be None
        return {
            "prediction": prediction,
            "deformation": deformation,
            "occlusion_map": warped["occlusion_map"],
            "deformed": self.deformed_image(source, deformation),
        }

    def encode_source(self, source: torch.Tensor) -> dict[str, torch.Tensor]:
        """F's volume ("volume" (B, C, D, h, w)) and, with warped skips, its 2D levels ("level0" (B, be, H, W),
        ...)."""
        feature_3d, levels = self.appearance_feature_extractor.encode(source)
        encoding = {"volume": feature_3d}
        if self.spade_decoder.blend is not None:  # the blend takes visible pixels from the warped image
            encoding["image"] = source
        if self.warped_skips:
            encoding.update({f"level{n}": level for n, level in enumerate(levels)})
        return encoding

    def render_encoded(
        self, encoding: dict[str, torch.Tensor], source_motion: Motion, driving_motion: Motion
    ) -> torch.Tensor:
        count = self.appearance_feature_extractor.num_down_blocks if self.warped_skips else 0
        levels = [encoding[f"level{n}"] for n in range(count)]
        return self._warp_and_decode(encoding["volume"], levels, source_motion, driving_motion,
                                     encoding.get("image"))[1]

    def _warp_and_decode(
        self,
        feature_3d: torch.Tensor,
        levels: list[torch.Tensor],
        kp_source: Motion,
        kp_driving: Motion,
        source: torch.Tensor | None = None,
    ) -> tuple[dict, torch.Tensor]:
        """W's output and G's prediction (B, 3, H', W') for F's volume and 2D levels (and the source image, which
        a decoder that blends in the warped source needs). The driving keypoints are those the second stage's
        control entries ask for (:meth:`retargeted_keypoints`)."""
        driving_value = self.retargeted_keypoints(kp_source, kp_driving)
        warped = self.warping_network(feature_3d, driving_value, _kp_value(kp_source))
        skips = None
        if self.warped_skips:
            flow = self.flow_2d(warped["deformation"])  # resized to each level inside warp
            occlusion = warped["occlusion_map"] if self.warping_network.flag_use_occlusion_map else None
            # the skips are gated by the occlusion map but do not train it: through them, shutting the map is
            # the quickest way to quieten untrained skips, and it collapsed to 0 (measured, lr 3e-3)
            mask = None if occlusion is None else occlusion.detach()
            skips = [
                project(warp_and_mask(levels[len(levels) - 1 - i], flow, mask))
                for i, project in enumerate(self.skip_projections)
            ]
        warped_source = None
        if self.spade_decoder.blend is not None and source is not None:
            warped_source = self.deformed_image(source, warped["deformation"])  # (B, 3, H, W)
        return warped, self.spade_decoder(warped["out"], skips, warped_source)  # prediction (B, 3, H', W')

    def second_stage_networks(self) -> dict[str, nn.Module]:
        """The stitching and retargeting networks this model has, by attribute name."""
        return {name: getattr(self, name) for name in SECOND_STAGE if getattr(self, name) is not None}

    def retargeted_keypoints(self, kp_source: Motion | torch.Tensor, kp_driving: Motion | torch.Tensor
                             ) -> torch.Tensor:
        """The driving keypoints (B, K, 3) W warps to: ``kp_driving["value"]`` with the eye and lip offsets and the
        stitching correction its control entries ask for (none: the value as it is)."""
        value = _kp_value(kp_driving)
        if isinstance(kp_driving, torch.Tensor):
            return value
        x_s = _kp_value(kp_source)
        eye, lip, stitching = self.eye_retargeting_network, self.lip_retargeting_network, self.stitching_network
        if eye is not None and "eye_condition" in kp_driving:
            value = value + kp_driving["eye_weight"][:, :, None] * eye.delta(x_s, kp_driving["eye_condition"])
        if lip is not None and "lip_condition" in kp_driving:
            value = value + kp_driving["lip_weight"][:, :, None] * lip.delta(x_s, kp_driving["lip_condition"])
        if stitching is not None and "stitching" in kp_driving:
            value = stitching.stitch(x_s, value, kp_driving["stitching"])
        return value

    def training_forward(self, batch: dict) -> ModelOutput:
        """Stage 1: the reconstruction of ``driving`` from ``source``; stage 2: the stitching and retargeting
        renders (:func:`reenact.families.liveportrait.stage2.second_stage_forward`)."""
        if self.training_stage == 1:
            return super().training_forward(batch)
        from reenact.families.liveportrait.stage2 import second_stage_forward

        return second_stage_forward(self, batch)

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> ModelOutput:
        if source.shape == driving.shape:
            # M has no batch statistics (LayerNorm only), so one batched call equals two separate calls
            both = self.motion_extractor(torch.cat([source, driving], dim=0))
            motion_s = {k: v[: source.shape[0]] for k, v in both.items()}
            motion_d = {k: v[source.shape[0] :] for k, v in both.items()}
        else:
            motion_s, motion_d = self.motion_extractor(source), self.motion_extractor(driving)
        kp_source = motion_to_keypoints(motion_s)
        canonical = kp_source["kp_canonical"] if self.driving_uses_source_canonical else None
        kp_driving = motion_to_keypoints(motion_d, kp_canonical=canonical)
        generated = self.render(source, kp_source, kp_driving)
        return {**generated, "motion_source": kp_source, "motion_driving": kp_driving}

    @staticmethod
    def deformed_image(image: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """Warp ``image`` (B, 3, H, W) by the depth-averaged (x, y) of ``deformation`` (B, D, h, w, 3): the 2D
        picture of the 3D warp, for visualisation and for the objective's optional warped-source term."""
        return warp(image, LivePortraitModel.flow_2d(deformation))

    @staticmethod
    def flow_2d(deformation: torch.Tensor) -> torch.Tensor:
        """The image-plane flow of a (B, D, h, w, 3) deformation: its (x, y) averaged over depth, (B, h, w, 2)."""
        return deformation[..., :2].mean(dim=1)

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups for the task's optimisers: M alone, and F + W + G (+ skip projections) as the generator."""
        generator = [
            *self.appearance_feature_extractor.parameters(),
            *self.warping_network.parameters(),
            *self.spade_decoder.parameters(),
            *self.skip_projections.parameters(),
        ]
        groups = {"motion_extractor": list(self.motion_extractor.parameters()), "generator": generator}
        second = [p for network in self.second_stage_networks().values() for p in network.parameters()]
        if second:
            groups[RETARGETING_GROUP] = second
        return groups

    def compact_motion(self, motion: Motion) -> Motion:
        return {k: motion[k].detach().float() for k in ANIMATION_KEYS if k in motion}

    def transfer_motion(
        self,
        source_motion: Motion,
        driving_motion: Motion,
        reference_motion: Motion,
        mode: str = "relative",
        stitching: bool | None = None,
        eye_ratio: float | str | None = None,
        lip_ratio: float | str | None = None,
        lip_normalize: bool = False,
        paste_back: bool = False,
    ) -> Motion:
        """Keypoints (B, K, 3) for W; source and reference batch 1, driving batch B. With second-stage networks,
        also the control entries that apply them in the renderer (``controls.second_stage_controls``: stitching
        when pasted back unless ``stitching`` says otherwise; ``eye_ratio`` / ``lip_ratio`` a number or ``"driving"``;
        ``lip_normalize``).

        relative, as LivePortrait's inference does, with R the *transposed* rotation matrices the model uses
        (row-vector keypoints multiplied on the right):
            R_new = R_d · R_ref^T · R_s;   exp_new = exp_s + (exp_d - exp_ref);
            s_new = s_s · s_d / s_ref;     t_new = t_s + (t_d - t_ref)  (t_z is unused)
        In column-vector form that is rot_s · (rot_ref^-1 · rot_d): the head turns about its own axes as the
        driving head turned since the reference frame. absolute: the driving pose, expression, scale and
        translation on the source's canonical keypoints (the training convention). Identity always comes from the
        source's canonical keypoints.
        """
        s, d, ref = source_motion, driving_motion, reference_motion
        batch = d["value"].shape[0]
        if mode == "relative":
            rotation = d["rotation"] @ ref["rotation"].transpose(1, 2) @ s["rotation"]
            exp = s["exp"] + (d["exp"] - ref["exp"])  # (B, K, 3)
            scale = s["scale"] * d["scale"] / ref["scale"]  # (B, 1)
            t = s["t"] + (d["t"] - ref["t"])  # (B, 3); the keypoint transform ignores t_z
        else:
            rotation, exp, scale, t = d["rotation"], d["exp"], d["scale"], d["t"]
        canonical = s["kp_canonical"].expand(batch, -1, -1)
        value = transform_keypoints(canonical, rotation, exp, scale, t)
        moved = {"value": value, "rotation": rotation, "exp": exp, "scale": scale, "t": t}
        if self.second_stage_networks():
            moved.update(second_stage_controls(self.second_stage_networks(), s, d, batch, stitching, eye_ratio,
                                               lip_ratio, lip_normalize, paste_back))
        return moved

    def transfer_needs_landmarks(self, options: dict) -> bool:
        """Eye and lip retargeting read the source's and the driving frames' landmarks."""
        return options.get("eye_ratio") is not None or options.get("lip_ratio") is not None or bool(
            options.get("lip_normalize"))

    def train(self, mode: bool = True) -> LivePortraitModel:
        """In the second stage F, M, W and G stay in eval mode (their BatchNorm statistics do not move), whatever
        the mode asked for."""
        super().train(mode)
        if self.training_stage == 2:
            self.first_stage_to_eval()
        return self

    def first_stage_to_eval(self) -> None:
        """F, M, W, G (and the skip projections) in eval mode. The second stage's forward calls it too: Lightning
        restores every submodule's mode flag after validation without calling :meth:`train`."""
        for network in (self.appearance_feature_extractor, self.motion_extractor, self.warping_network,
                        self.spade_decoder, self.skip_projections):
            network.eval()

    def motion_smoothing(self, motion: Motion) -> dict[str, str]:
        """Head angles (degrees) on the circle, the rotation matrices as rotations; expression, scale, translation
        and keypoints linear."""
        kinds = super().motion_smoothing(motion)
        kinds.update({key: "angle" for key in ("pitch", "yaw", "roll") if key in motion})
        if "rotation" in motion:
            kinds["rotation"] = "rotation"
        return kinds

    def best_reference_frame(self, source_motion: Motion, driving_motion: Motion) -> int:
        """The driving frame whose head angles (pitch, yaw, roll) are nearest the source's."""
        source, driving = head_angles(source_motion)[0], head_angles(driving_motion)
        return int(np.argmin(((driving - source) ** 2).sum(axis=1)))

    def parameter_report(self) -> list[tuple[str, nn.Module]]:
        w = self.warping_network
        rows = [("appearance_feature_extractor", self.appearance_feature_extractor),
                ("motion_extractor", self.motion_extractor), ("warping_network", w)]
        if w.dense_motion_network is not None:
            rows.append(("warping_network.dense_motion_network", w.dense_motion_network))
        rows.append(("spade_decoder", self.spade_decoder))
        if any(True for _ in self.skip_projections.parameters()):
            rows.append(("skip_projections", self.skip_projections))
        rows += list(self.second_stage_networks().items())
        return rows

    def keypoints_2d(self, motion: Motion | None) -> torch.Tensor | None:
        """(x, y) of the transformed keypoints, (B, K, 2) in normalised [-1, 1] coordinates."""
        return None if motion is None else motion["value"][..., :2]


def head_angles(motion: Motion) -> np.ndarray:
    """(B, 3) pitch, yaw, roll in degrees, float64."""
    return torch.stack([motion["pitch"], motion["yaw"], motion["roll"]], dim=-1).double().cpu().numpy()


def _kp_value(kp: Motion | torch.Tensor) -> torch.Tensor:
    if isinstance(kp, torch.Tensor):
        return kp
    if "value" not in kp:
        raise KeyError(f"keypoint dict has no 'value' entry (keys: {', '.join(kp)})")
    return kp["value"]
