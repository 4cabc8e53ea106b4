"""The search-window loss of learned correlation warping (Liu et al.'s self-supervised loss, no ground-truth
flow).

A family whose flow comes from (or is refined by) :class:`reenact.families.correlation.refiner.CorrelationRefiner`
outputs ``warped_features`` (the source's feature field re-extracted after the final warp) and ``target_features``
(the driving frame's field); the term reads both (see :func:`reenact.families.correlation.volume.search_window_loss`).
"""

from __future__ import annotations

import torch

from reenact.families.correlation.volume import search_window_loss
from reenact.losses.terms import LossContext, LossTerm


class SearchWindow(LossTerm):
    """− mean_m log p(w(F_c^m), F_g^m), p a softmax of M over the ``window`` x ``window`` search window N_m."""

    reads = ("warped_features", "target_features")

    def __init__(self, weight: float = 1.0, window: int = 9, temperature: float = 1.0) -> None:
        super().__init__(weight)
        self.window = window
        self.temperature = temperature

    def compute(self, context: LossContext) -> torch.Tensor:
        return search_window_loss(context.output["warped_features"], context.output["target_features"],
                                  self.window, self.temperature)
