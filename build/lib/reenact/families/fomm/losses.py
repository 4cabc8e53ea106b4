"""Loss terms of the FOMM family: the Jacobian half of the equivariance constraint."""

from __future__ import annotations

import torch

from reenact.losses.equivariance import EquivarianceLoss, shared_equivariance
from reenact.losses.terms import LossContext, LossTerm


class JacobianEquivariance(LossTerm):
    """mean |I − J_d⁻¹ · (∇T(kp_t) · J_t)|: the local affine transforms at the keypoints agree with a random warp T.

    It shares the step's warp and re-detection with :class:`reenact.losses.equivariance.KeypointEquivariance`
    (whichever of the two runs first draws T with its own sigmas), so listing both costs one pass.
    """

    reads = ("motion_driving",)

    def __init__(
        self, weight: float = 10.0, sigma_affine: float = 0.05, sigma_tps: float = 0.005, points_tps: int = 5
    ) -> None:
        super().__init__(weight)
        self.loss = EquivarianceLoss(sigma_affine=sigma_affine, sigma_tps=sigma_tps, points_tps=points_tps)

    def compute(self, context: LossContext) -> torch.Tensor:
        terms = shared_equivariance(context, self.loss)
        if "equivariance_jacobian" not in terms:
            raise ValueError("equivariance_jacobian needs keypoints with Jacobians (kp_detector.estimate_jacobian)")
        return terms["equivariance_jacobian"]
