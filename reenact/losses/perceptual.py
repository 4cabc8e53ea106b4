"""Multi-scale VGG19 perceptual loss (FOMM §3 "perceptual loss"; face-vid2vid's L_P).

L_P = Σ_scales Σ_l w_l · mean |VGG_l(ŷ_s) − VGG_l(y_s)| over the pyramid levels s of prediction ŷ and target
y, with l = relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of an ImageNet-trained VGG19 (the frozen
:class:`reenact.layers.vgg.VGG19Features`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reenact.layers.vgg import NUM_VGG_SLICES, VGG19Features
from reenact.losses.pyramid import ImagePyramid


class PerceptualPyramidLoss(nn.Module):
    """Σ over pyramid scales and the five VGG19 slices of w_l · mean |VGG_l(ŷ_s) − VGG_l(y_s)|.

    forward(prediction (B, 3, H, W), target (B, 3, H, W)), both in [0, 1] -> scalar. Target features are
    computed without gradient. The smallest scale times H and W must be >= 16 (e.g. 128 px for 0.125).
    Layers with weight 0 are skipped in the sum.
    """

    def __init__(
        self,
        scales: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
        layer_weights: Sequence[float] = (10.0, 10.0, 10.0, 10.0, 10.0),
        pretrained: bool = True,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        if len(layer_weights) != NUM_VGG_SLICES:
            raise ValueError(
                f"layer_weights needs {NUM_VGG_SLICES} values (relu1_1..relu5_1), got {list(layer_weights)}"
            )
        self.layer_weights = [float(weight) for weight in layer_weights]
        self.pyramid = ImagePyramid(list(scales), num_channels=3)
        self.vgg = VGG19Features(pretrained=pretrained, weights_path=weights_path)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}"
            )
        predicted_levels = self.pyramid(prediction)
        with torch.no_grad():
            target_levels = self.pyramid(target)
        total = prediction.new_zeros(())
        for scale, predicted in predicted_levels.items():
            predicted_features = self.vgg(predicted)
            with torch.no_grad():
                target_features = self.vgg(target_levels[scale])
            for weight, fake, real in zip(
                self.layer_weights, predicted_features, target_features, strict=True
            ):
                if weight != 0:
                    total = total + weight * (fake - real).abs().mean()
        return total
