"""Image-space loss terms: the perceptual pyramid, a pixel L1 pyramid and the warped-source L1."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reenact.losses.perceptual import PerceptualPyramidLoss
from reenact.losses.pyramid import ImagePyramid
from reenact.losses.terms import LossContext, LossTerm


class PerceptualPyramid(LossTerm):
    """Σ over pyramid scales and VGG19 slices of w_l · mean |VGG_l(ŷ_s) − VGG_l(y_s)| (FOMM's perceptual loss).

    The per-layer weights carry the loss's scale (10 per layer in FOMM), so ``weight`` is normally 1.
    """

    def __init__(
        self,
        weight: float = 1.0,
        scales: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
        layer_weights: Sequence[float] = (10.0, 10.0, 10.0, 10.0, 10.0),
        vgg_pretrained: bool = True,
        vgg_weights_path: str | None = None,
    ) -> None:
        super().__init__(weight)
        self.loss = PerceptualPyramidLoss(
            scales=list(scales), layer_weights=list(layer_weights), pretrained=vgg_pretrained,
            weights_path=vgg_weights_path,
        )

    def compute(self, context: LossContext) -> torch.Tensor:
        return self.loss(context.prediction, context.target)

    def feature_extractors(self) -> list[nn.Module]:
        return [self.loss.vgg]


class PyramidL1(LossTerm):
    """Σ over pyramid scales of mean |ŷ_s − y_s|: a pixel term, strongest where perceptual features are weak
    (small frames, an untrained VGG). Coarse levels give the flow a gradient for displacements larger than the
    image's detail."""

    def __init__(self, weight: float = 1.0, scales: Sequence[float] = (1.0,)) -> None:
        super().__init__(weight)
        self.pyramid = ImagePyramid(list(scales))

    def compute(self, context: LossContext) -> torch.Tensor:
        predicted, target = self.pyramid(context.prediction), self.pyramid(context.target)
        return sum((predicted[scale] - target[scale]).abs().mean() for scale in predicted)


class WarpedSourceL1(LossTerm):
    """Σ over pyramid scales of mean |warp(source)_s − driving_s|, with the source warped by the model's own flow
    (output ``deformed``): a photometric signal that trains the flow directly, not only through what the
    generator makes of the warped features."""

    reads = ("deformed",)

    def __init__(self, weight: float = 1.0, scales: Sequence[float] = (1.0,)) -> None:
        super().__init__(weight)
        self.pyramid = ImagePyramid(list(scales))

    def compute(self, context: LossContext) -> torch.Tensor:
        warped, target = self.pyramid(context.output["deformed"]), self.pyramid(context.batch["driving"])
        return sum((warped[scale] - target[scale]).abs().mean() for scale in warped)
