"""Implicit warping (Mallya, Wang, Liu, NeurIPS 2022) as one family network: keypoints, spatial keypoint
representation, Q/K U-Nets, value encoder, one cross-modal attention layer over every source image, decoder.

Motion is a set of 2D keypoints with strengths: ``value`` (B, K, 2) in normalised [-1, 1] (x, y) coordinates and
``strength`` (B, K) in [0, 1]. Rendering from S sources of one person:

    R_d = SpatialKeypointRepresentation(kp_d)                      (B, C, hq, wq)
    Q   = query_encoder(R_d)                                       (B, d, hq, wq)
    K_s = pool(key_encoder(concat(R_s, source_s)))                 (B, S, d, hk, wk)   per source s
    V_s = value_encoder(source_s)[-1]                              (B, S, c, hk, wk)
    F, m_s, flow_s = CrossModalAttention(Q, K, V, pixels)           keys/values of all sources concatenated
    prediction = decoder(F, skips, D)

Our addition to the paper (the attention there works at a reduced resolution as well): the attention also returns,
for each query, its mass m_s on each source and the expected source coordinate flow_s under that source's weights.
The value encoder's finer source features and the source images themselves are sampled at flow_s and summed with
weights m_s: attention-guided skips into the decoder, and D, the attention-warped source image at full resolution,
which the decoder corrects. Both are symmetric in the sources, so the output does not depend on their order. D is
the ``deformed`` output (for ``WarpedSourceL1`` and the visuals), and sum_s m_s, where some source was attended
rather than an extra token, is ``occlusion_map``. There is no single ``deformation``: each query may draw on several
sources.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.families.base import ModelOutput, Motion, ReenactmentFamily, register_family
from reenact.families.implicit_warping.cross_modal_attention import CrossModalAttention
from reenact.families.implicit_warping.decoder import ImageDecoder
from reenact.families.implicit_warping.feature_unet import FeatureUNet
from reenact.families.implicit_warping.keypoint_detector import KeypointDetector
from reenact.families.implicit_warping.keypoint_representation import SpatialKeypointRepresentation
from reenact.families.implicit_warping.value_encoder import ValueEncoder
from reenact.layers.geometry import ALIGN_CORNERS, warp

ANIMATION_KEYS = ("value", "strength")


@register_family
class ImplicitWarpingModel(ReenactmentFamily):
    """source(s) (B, [S,] 3, H, W), driving (B, 3, H, W) in [0, 1] -> ``prediction`` (B, 3, H, W), ``deformed``
    (B, 3, H, W), ``occlusion_map`` (B, 1, hq, wq), ``motion_source`` (the first source's), ``motion_driving``."""

    family = "implicit_warping"
    transfer_modes = ("relative", "absolute")
    max_sources = None  # any number: more sources are more keys and values
    # the antialiased resizes of the source image (F.interpolate(antialias=True)) have no ONNX operator
    export_unsupported = (
        "its sources are resized with an antialiased bilinear filter (aten::_upsample_bilinear2d_aa), "
        "which ONNX has no operator for"
    )

    def __init__(
        self,
        keypoint_detector: KeypointDetector,
        keypoint_representation: SpatialKeypointRepresentation,
        query_encoder: FeatureUNet,
        key_encoder: FeatureUNet,
        value_encoder: ValueEncoder,
        attention: CrossModalAttention,
        decoder: ImageDecoder,
    ) -> None:
        super().__init__()
        rep, n_up = keypoint_representation, decoder.num_up_blocks
        checks = [
            (keypoint_detector.num_kp == rep.num_kp,
             "keypoint_detector.num_kp differs from keypoint_representation.num_kp"),
            (query_encoder.in_features == rep.embedding_dim,
             "query_encoder.in_features must equal keypoint_representation.embedding_dim"),
            (key_encoder.in_features == rep.embedding_dim + value_encoder.num_channels,
             "key_encoder.in_features must equal keypoint_representation.embedding_dim + 3 (the source image)"),
            (query_encoder.out_features == key_encoder.out_features == attention.dim,
             "query_encoder.out_features, key_encoder.out_features and attention.dim must be equal"),
            (attention.value_dim == value_encoder.out_features == decoder.in_features,
             "attention.value_dim, the value encoder's last width and decoder.in_features must be equal"),
            (value_encoder.num_down_blocks >= n_up,
             "value_encoder.num_down_blocks must be >= decoder.num_up_blocks (keys at or below the query resolution)"),
            (value_encoder.widths[:n_up] == decoder.widths[:n_up],
             f"value encoder widths {value_encoder.widths[:n_up]} and decoder widths {decoder.widths[:n_up]} differ "
             "(same block_expansion and max_features)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"ImplicitWarpingModel: {message}")
        self.keypoint_detector = keypoint_detector
        self.keypoint_representation = keypoint_representation
        self.query_encoder = query_encoder
        self.key_encoder = key_encoder
        self.value_encoder = value_encoder
        self.attention = attention
        self.decoder = decoder

    # ------------------------------------------------------------------ motion
    def encode_motion(self, frames: torch.Tensor) -> Motion:
        """{"value" (B, K, 2), "strength" (B, K), "heatmap" (B, K, h, w)}."""
        return self.keypoint_detector(frames)

    def compact_motion(self, motion: Motion) -> Motion:
        return {k: motion[k].detach().float() for k in ANIMATION_KEYS if k in motion}

    def keypoints_2d(self, motion: Motion | None) -> torch.Tensor | None:
        return None if motion is None else motion["value"]

    def transfer_motion(
        self,
        source_motion: Motion,
        driving_motion: Motion,
        reference_motion: Motion,
        mode: str = "relative",
    ) -> Motion:
        """relative: the (first) source's keypoints move by the driving keypoints' displacement since the reference
        frame (FOMM's relative motion without Jacobians), with the driving frame's strengths; absolute: the driving
        keypoints as they are."""
        if mode == "absolute":
            return {k: driving_motion[k] for k in ANIMATION_KEYS}
        value = source_motion["value"] + (driving_motion["value"] - reference_motion["value"])
        return {"value": value, "strength": driving_motion["strength"]}

    # ------------------------------------------------------------------ rendering
    def render(self, source: torch.Tensor, source_motion: Motion, driving_motion: Motion) -> ModelOutput:
        return self.render_sources(source[:, None], [source_motion], driving_motion)

    def render_sources(
        self, sources: torch.Tensor, source_motions: list[Motion], driving_motion: Motion
    ) -> ModelOutput:
        """sources (B, S, 3, H, W), S motions of batch B, driving motion (B) -> prediction (B, 3, H, W)."""
        b, s, c, h, w = sources.shape
        if len(source_motions) != s:
            raise ValueError(f"{s} source images but {len(source_motions)} source motions")
        self.check_sources(s)
        n_up = self.decoder.num_up_blocks
        hq, wq = h // 2**n_up, w // 2**n_up
        flat = sources.reshape(b * s, c, h, w)
        motion_flat = {k: torch.stack([m[k] for m in source_motions], dim=1).flatten(0, 1) for k in ANIMATION_KEYS}

        rep_source = self.keypoint_representation(motion_flat, (hq, wq)).to(flat.dtype)  # (B S, C, hq, wq)
        small = F.interpolate(flat, size=(hq, wq), mode="bilinear", antialias=True, align_corners=False)
        keys = self.key_encoder(torch.cat([rep_source, small], dim=1))  # (B S, d, hq, wq)
        levels = self.value_encoder(flat)  # level l: (B S, w_l, H / 2**l, W / 2**l)
        values = levels[-1]  # V: (B S, c, hk, wk)
        hk, wk = values.shape[-2:]
        keys = F.adaptive_avg_pool2d(keys, (hk, wk))  # spatial reduction
        pixels = F.interpolate(flat, size=(hk, wk), mode="bilinear", antialias=True, align_corners=False)
        query = self.query_encoder(self.keypoint_representation(driving_motion, (hq, wq)).to(flat.dtype))

        def per_source(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, s, *x.shape[1:])

        attended = self.attention(query, per_source(keys), per_source(values), per_source(pixels))
        flow, mass = attended["flow"], attended["mass"]  # (B, S, hq, wq, 2), (B, S, hq, wq)
        skips = [self.guided(levels[level], flow, mass) for level in range(n_up - 1, -1, -1)]
        extra = F.interpolate(attended["extra_pixels"], size=(h, w), mode="bilinear", align_corners=ALIGN_CORNERS)
        deformed = self.guided(flat, flow, mass) + extra  # (B, 3, H, W)
        prediction = self.decoder(attended["features"], skips, deformed)
        return {
            "prediction": prediction,  # (B, 3, H, W)
            "deformed": deformed,  # (B, 3, H, W): the attention-warped sources
            "occlusion_map": mass.sum(dim=1, keepdim=True),  # (B, 1, hq, wq): mass on source tokens
        }

    @staticmethod
    def guided(features: torch.Tensor, flow: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
        """sum_s m_s * features_s sampled at flow_s: features (B S, C, h, w), flow (B, S, hq, wq, 2), mass (B, S,
        hq, wq) -> (B, C, h, w); flow and mass are resized to (h, w)."""
        b, s = mass.shape[:2]
        moved = warp(features, flow.flatten(0, 1))  # (B S, C, h, w)
        weights = F.interpolate(mass, size=features.shape[-2:], mode="bilinear", align_corners=ALIGN_CORNERS)
        return (moved.view(b, s, *moved.shape[1:]) * weights[:, :, None].to(moved.dtype)).sum(dim=1)

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> ModelOutput:
        return self.forward_sources(source[:, None], driving)

    def forward_sources(self, sources: torch.Tensor, driving: torch.Tensor) -> ModelOutput:
        b, s = sources.shape[:2]
        if sources.shape[-2:] != driving.shape[-2:] or sources.shape[0] != driving.shape[0]:
            raise ValueError(f"sources {tuple(sources.shape)} and driving {tuple(driving.shape)} do not match")
        motion_flat = self.encode_motion(sources.flatten(0, 1))
        source_motions = [{k: v.view(b, s, *v.shape[1:])[:, i] for k, v in motion_flat.items()} for i in range(s)]
        motion_driving = self.encode_motion(driving)
        output = self.render_sources(sources, source_motions, motion_driving)
        output["motion_source"] = source_motions[0]
        output["motion_driving"] = motion_driving
        return output

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """The keypoint detector with its own optimiser, as FOMM; everything else is the generator."""
        detector = {id(p) for p in self.keypoint_detector.parameters()}
        return {
            "kp_detector": list(self.keypoint_detector.parameters()),
            "generator": [p for p in self.parameters() if id(p) not in detector],
        }
