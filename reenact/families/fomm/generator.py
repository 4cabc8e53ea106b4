"""FOMM occlusion-aware generator G: source image + keypoint motion -> reconstructed driving frame.

A Johnson-style encoder-decoder. The source is encoded, its feature map is warped by the dense flow
T_{S<-D} from the DenseMotionNetwork and multiplied by the occlusion map O (so the decoder inpaints what
the source cannot show), then residual bottleneck blocks and up blocks decode the prediction.

``warped_skips=True`` (off in the original, and so in ``fomm_vox256``) also warps the encoder's feature map at
every finer level by the same flow, multiplies it by the occlusion map at that size and adds it to the decoder's
output at that level -- skip connections that move with the source, as in TPSMM's inpainting network (which
concatenates; adding keeps the parameter count unchanged). Without them every detail must pass the coarsest
level, and a small network needs thousands of steps to stop blurring (experiments/2026-11-22_cpu_recipe.md).

``blend_warped_source=True`` (off in the original) takes visible pixels straight from the warped source image:
prediction = V * warp(source) + (1 - V) * decoder, with a mask V predicted from the last decoder features
(:class:`~reenact.layers.source_blend.WarpedSourceBlend`, starting near 1 through ``blend_init_bias``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from reenact.families.fomm.dense_motion import DenseMotionNetwork
from reenact.layers.blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d
from reenact.layers.geometry import warp, warp_and_mask
from reenact.layers.source_blend import WarpedSourceBlend

# refine(source_image (B, C, H, W), deformation (B, h, w, 2)) -> {"deformation": the refined flow, ...}
Refine = Callable[[torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]]


class OcclusionAwareGenerator(nn.Module):
    """Returns {"prediction", "deformed", "sparse_deformed", "mask", "deformation", "occlusion_map"} and, with
    ``blend_warped_source``, "blend_mask" (B, 1, H, W)."""

    def __init__(
        self,
        num_channels: int = 3,
        num_kp: int = 10,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        num_bottleneck_blocks: int = 6,
        estimate_occlusion_map: bool = True,
        dense_motion: DenseMotionNetwork | None = None,
        warped_skips: bool = False,
        blend_warped_source: bool = False,
        blend_init_bias: float = 2.0,
    ) -> None:
        super().__init__()
        if dense_motion is not None:
            if dense_motion.num_kp != num_kp or dense_motion.num_channels != num_channels:
                raise ValueError(
                    f"dense_motion has num_kp={dense_motion.num_kp}, num_channels="
                    f"{dense_motion.num_channels} but the generator has num_kp={num_kp}, "
                    f"num_channels={num_channels}"
                )
            if dense_motion.estimate_occlusion_map != estimate_occlusion_map:
                raise ValueError(
                    f"dense_motion.estimate_occlusion_map={dense_motion.estimate_occlusion_map} "
                    f"differs from the generator's estimate_occlusion_map={estimate_occlusion_map}"
                )
        self.num_channels = num_channels
        self.num_kp = num_kp
        self.estimate_occlusion_map = estimate_occlusion_map
        self.dense_motion_network = dense_motion
        self.warped_skips = warped_skips

        def width(level: int) -> int:  # channels after `level` down blocks
            return min(max_features, block_expansion * 2**level)

        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(
            [DownBlock2d(width(i), width(i + 1), kernel_size=3, padding=1) for i in range(num_down_blocks)]
        )
        self.up_blocks = nn.ModuleList(
            [
                UpBlock2d(
                    width(num_down_blocks - i), width(num_down_blocks - i - 1), kernel_size=3, padding=1
                )
                for i in range(num_down_blocks)
            ]
        )
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(width(num_down_blocks), kernel_size=3, padding=1))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)
        self.blend = WarpedSourceBlend(block_expansion, blend_init_bias) if blend_warped_source else None

    def forward(
        self, source_image: torch.Tensor, kp_driving: dict, kp_source: dict, refine: Refine | None = None
    ) -> dict[str, torch.Tensor]:
        return self.decode(source_image, self.encode(source_image), kp_driving, kp_source, refine)

    def encode(self, source_image: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature map at every level n, (B, C_n, H/2**n, W/2**n) for n = 0..num_down_blocks."""
        if source_image.dim() != 4 or source_image.shape[1] != self.num_channels:
            raise ValueError(
                f"OcclusionAwareGenerator expects source_image (B, {self.num_channels}, H, W), "
                f"got {tuple(source_image.shape)}"
            )
        out = self.first(source_image)  # (B, be, H, W)
        encoder_features = [out]  # level n: (B, C_n, H/2**n, W/2**n)
        for block in self.down_blocks:
            out = block(out)
            encoder_features.append(out)
        return encoder_features

    def decode(
        self, source_image: torch.Tensor, encoder_features: list[torch.Tensor], kp_driving: dict, kp_source: dict,
        refine: Refine | None = None,
    ) -> dict[str, torch.Tensor]:
        """Dense motion, warping and decoding for the source's :meth:`encode` features (the source image itself
        feeds the dense motion network). ``refine(source_image, deformation)``, when given, replaces the dense
        motion's flow by its ``deformation`` (correlation refinement); its other entries join the output."""
        out = encoder_features[-1]  # (B, C_n, H/2**n, W/2**n), n = num_down_blocks
        result: dict[str, torch.Tensor] = {}
        deformation = occlusion = None
        if self.dense_motion_network is not None:
            motion = self.dense_motion_network(source_image, kp_driving=kp_driving, kp_source=kp_source)
            result["mask"] = motion["mask"]  # (B, K+1, h, w)
            result["sparse_deformed"] = motion["sparse_deformed"]  # (B, K+1, C, h, w)
            deformation = motion["deformation"]  # (B, h, w, 2), resized inside warp to the feature size
            if refine is not None:
                refined = dict(refine(source_image, deformation))
                deformation = refined.pop("deformation")  # (B, h, w, 2): w_0 = the dense motion's flow, refined
                result.update(refined)
            result["deformation"] = deformation
            if "occlusion_map" in motion:
                occlusion = motion["occlusion_map"]  # (B, 1, h, w)
                result["occlusion_map"] = occlusion
            # for visualisation: what pure warping of the source image looks like
            result["deformed"] = warp(source_image, deformation)  # (B, C, H, W)

        out = warp_and_mask(out, deformation, occlusion)
        out = self.bottleneck(out)
        for level, block in zip(range(len(self.up_blocks) - 1, -1, -1), self.up_blocks, strict=True):
            out = block(out)
            if self.warped_skips:
                out = out + warp_and_mask(encoder_features[level], deformation, occlusion)
        prediction = torch.sigmoid(self.final(out))  # (B, C, H, W) in [0, 1]
        if self.blend is not None:
            warped_source = result["deformed"] if deformation is not None else source_image  # (B, C, H, W)
            prediction, result["blend_mask"] = self.blend(out, prediction, warped_source)  # mask (B, 1, H, W)
        result["prediction"] = prediction
        return result
