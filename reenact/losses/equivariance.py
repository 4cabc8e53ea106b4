"""Equivariance constraint on keypoints (FOMM §3 "equivariance"; face-vid2vid's L_E).

A random thin-plate-spline transform T warps the driving frame; keypoints re-detected on the warped frame,
mapped back through T, must land on the driving keypoints:

    value loss    = mean |kp_d − T(kp_t)|
    Jacobian loss = mean |I − J_d⁻¹ · (∇T(kp_t) · J_t)|

T(z) = A·z + b + Σ_c w_c · φ(z − c) · (1, 1)ᵀ with control points c on a P×P grid, [A | b] = [I | 0] +
N(0, σ_affine²) and w_c ~ N(0, σ_tps²). The radial function is chosen by ``tps_kernel``, as each original trains:
``"l1"`` (FOMM, face-vid2vid): φ = d²·log(d + 1e-6) with d = |dx| + |dy|; ``"squared_euclidean"`` (TPSMM):
φ = s·log(s + 1e-9) with s = dx² + dy². Both originals add the single TPS scalar per point to x and y alike, and so
does this. ``transform_frame`` samples the frame at T(grid) with reflection padding, so a point z of the warped frame
shows what the original shows at T(z): the transform maps warped-frame coordinates back to the original.

3D keypoints (B, K, 3) (face-vid2vid / LivePortrait family) are compared on their x, y components only, and
3×3 Jacobians on their top-left 2×2 block, as face-vid2vid does with its projected keypoints.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from reenact.layers.geometry import make_coordinate_grid, warp
from reenact.losses.terms import LossContext, LossTerm, ObjectiveError

# the keypoint dict this loss compares (built from a family's ``equivariance_keypoints``, or by a test's detector)
KEYPOINTS_KEY = "value"  # (B, K, 2) or (B, K, 3)
JACOBIAN_KEY = "jacobian"  # (B, K, 2, 2) or (B, K, 3, 3), optional


def l1_kernel(delta: torch.Tensor) -> torch.Tensor:
    """FOMM's radial function of offsets (..., 2): d²·log(d + 1e-6) with d the L1 distance."""
    distance = delta.abs().sum(-1)
    return distance**2 * torch.log(distance + 1e-6)


def squared_euclidean_kernel(delta: torch.Tensor) -> torch.Tensor:
    """TPSMM's radial function of offsets (..., 2): s·log(s + 1e-9) with s the squared Euclidean distance."""
    squared = (delta**2).sum(-1)
    return squared * torch.log(squared + 1e-9)


# the random TPS's radial functions by name: (B|1, N, P², 2) offsets from the control points -> (B|1, N, P²)
TPS_KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "l1": l1_kernel,
    "squared_euclidean": squared_euclidean_kernel,
}


class RandomTPSTransform:
    """One random affine + TPS transform per batch element (not an nn.Module: it is drawn afresh per step).

    ``theta`` (B, 2, 3) holds [A | b]; ``control_points`` (P², 2) the TPS grid; ``control_params`` (B, P²)
    the TPS weights. ``points_tps=0`` or ``sigma_tps=0`` gives a purely affine transform. ``tps_kernel`` names
    the radial function (:data:`TPS_KERNELS`). Random numbers come from ``generator`` (on its own device) when given,
    else from the global RNG of ``device``.
    """

    def __init__(
        self,
        batch_size: int,
        sigma_affine: float,
        sigma_tps: float,
        points_tps: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
        tps_kernel: str = "l1",
    ) -> None:
        if tps_kernel not in TPS_KERNELS:
            raise ValueError(f"tps_kernel must be one of {sorted(TPS_KERNELS)}, got {tps_kernel!r}")
        self.kernel = TPS_KERNELS[tps_kernel]
        if batch_size < 1:
            raise ValueError(f"RandomTPSTransform batch_size must be >= 1, got {batch_size}")
        if sigma_affine < 0 or sigma_tps < 0:
            raise ValueError(
                f"RandomTPSTransform sigmas must be >= 0, got sigma_affine={sigma_affine}, "
                f"sigma_tps={sigma_tps}"
            )
        if points_tps < 0:
            raise ValueError(f"RandomTPSTransform points_tps must be >= 0, got {points_tps}")
        self.batch_size = batch_size
        sample_device = generator.device if generator is not None else device
        # draw in float32 whatever the target dtype, so half precision does not distort the distribution
        affine_noise = (
            torch.randn((batch_size, 2, 3), generator=generator, device=sample_device) * sigma_affine
        )
        identity = torch.eye(2, 3, device=affine_noise.device).unsqueeze(0)
        self.theta = (identity + affine_noise).to(device=device, dtype=dtype)  # (B, 2, 3)
        self.use_tps = points_tps > 0 and sigma_tps > 0
        num_points = points_tps * points_tps
        tps_noise = (
            torch.randn((batch_size, num_points), generator=generator, device=sample_device) * sigma_tps
        )
        self.control_params = tps_noise.to(device=device, dtype=dtype)  # (B, P²)
        if points_tps > 0:
            grid = make_coordinate_grid((points_tps, points_tps), dtype=dtype, device=self.theta.device)
        else:
            grid = torch.zeros((0, 2), dtype=dtype, device=self.theta.device)
        self.control_points = grid.reshape(num_points, 2)  # (P², 2) as (x, y)

    def warp_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        """T applied to points: (B, N, 2) or (1, N, 2) shared by the batch -> (B, N, 2)."""
        if (
            coordinates.dim() != 3
            or coordinates.shape[-1] != 2
            or coordinates.shape[0] not in (1, self.batch_size)
        ):
            raise ValueError(
                f"warp_coordinates expects (B={self.batch_size} or 1, N, 2) points, "
                f"got shape {tuple(coordinates.shape)}"
            )
        theta = self.theta.to(coordinates.dtype)
        linear, offset = theta[:, :, :2], theta[:, :, 2]  # (B, 2, 2), (B, 2)
        warped = coordinates @ linear.transpose(1, 2) + offset.unsqueeze(1)  # (B, N, 2)
        if self.use_tps:
            control_points = self.control_points.to(coordinates.dtype)
            delta = coordinates.unsqueeze(2) - control_points.view(1, 1, -1, 2)  # (B|1, N, P², 2)
            basis = self.kernel(delta)  # (B|1, N, P²)
            params = self.control_params.to(coordinates.dtype).unsqueeze(-1)  # (B, P², 1)
            # a matmul rather than a broadcast product: no (B, N, P²) temporary for a shared frame grid
            displacement = basis @ params  # (B, N, 1), added to x and y alike
            warped = warped + displacement
        return warped

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """Sample (B, C, H, W) at T(grid) with reflection padding -> (B, C, H, W)."""
        if frame.dim() != 4 or frame.shape[0] != self.batch_size:
            raise ValueError(
                f"transform_frame expects (B={self.batch_size}, C, H, W), got shape {tuple(frame.shape)}"
            )
        height, width = frame.shape[2:]
        coord_dtype = torch.promote_types(frame.dtype, torch.float32)
        grid = make_coordinate_grid((height, width), dtype=coord_dtype, device=frame.device)
        warped_grid = self.warp_coordinates(grid.view(1, height * width, 2))  # (B, H*W, 2)
        return warp(frame, warped_grid.view(self.batch_size, height, width, 2), padding_mode="reflection")

    def jacobian(self, coordinates: torch.Tensor) -> torch.Tensor:
        """∇T at points (B, N, 2) -> (B, N, 2, 2) with [..., i, j] = ∂T_i/∂z_j.

        Differentiable (``create_graph=True``) so the Jacobian loss back-propagates into the keypoints;
        this needs double backward through the detector. Unavailable under ``torch.inference_mode``.
        """
        if coordinates.dim() != 3 or coordinates.shape[0] != self.batch_size or coordinates.shape[-1] != 2:
            raise ValueError(
                f"jacobian expects (B={self.batch_size}, N, 2) points, got shape {tuple(coordinates.shape)}"
            )
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "RandomTPSTransform.jacobian needs autograd and cannot run under torch.inference_mode"
            )
        with torch.enable_grad():
            if not coordinates.requires_grad:
                coordinates = coordinates.detach().requires_grad_(True)
            warped = self.warp_coordinates(coordinates)  # (B, N, 2)
            # each output point depends only on its own input point, so the gradient of the sum is per point
            grad_x = torch.autograd.grad(warped[..., 0].sum(), coordinates, create_graph=True)[0]  # (B, N, 2)
            grad_y = torch.autograd.grad(warped[..., 1].sum(), coordinates, create_graph=True)[0]
        return torch.stack([grad_x, grad_y], dim=-2)  # (B, N, 2, 2)


def _planar_keypoints(kp: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    if KEYPOINTS_KEY not in kp:
        raise KeyError(f"{name} keypoint dict has no '{KEYPOINTS_KEY}' entry (keys: {sorted(kp)})")
    value = kp[KEYPOINTS_KEY]
    if value.dim() != 3 or value.shape[-1] not in (2, 3):
        raise ValueError(f"{name} keypoints must be (B, K, 2) or (B, K, 3), got shape {tuple(value.shape)}")
    return value[..., :2]  # (B, K, 2): 3D keypoints are compared on x, y


def _planar_jacobian(kp: dict[str, torch.Tensor]) -> torch.Tensor | None:
    jacobian = kp.get(JACOBIAN_KEY)
    return None if jacobian is None else jacobian[..., :2, :2]  # (B, K, 2, 2)


class EquivarianceLoss(nn.Module):
    """Unweighted equivariance terms for a keypoint detector (weights live in the training task's config).

    forward(detect, driving (B, C, H, W), kp_driving) -> {
        "equivariance_value": scalar,
        "equivariance_jacobian": scalar (only when both keypoint dicts carry Jacobians),
        "transformed_frame": (B, C, H, W) detached, for visualisation,
        "transformed_keypoints": (B, K, 2|3) detached, keypoints detected on the transformed frame}.
    ``detect`` maps a frame batch to a keypoint dict with "value" and optionally "jacobian". Pass
    ``transform`` to use a given transform instead of a freshly drawn one. ``tps_kernel``: the random TPS's radial
    function (:data:`TPS_KERNELS`).
    """

    def __init__(self, sigma_affine: float = 0.05, sigma_tps: float = 0.005, points_tps: int = 5,
                 tps_kernel: str = "l1") -> None:
        super().__init__()
        if tps_kernel not in TPS_KERNELS:
            raise ValueError(f"tps_kernel must be one of {sorted(TPS_KERNELS)}, got {tps_kernel!r}")
        self.sigma_affine = sigma_affine
        self.sigma_tps = sigma_tps
        self.points_tps = points_tps
        self.tps_kernel = tps_kernel

    def sample_transform(
        self,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator | None = None,
    ) -> RandomTPSTransform:
        return RandomTPSTransform(
            batch_size,
            self.sigma_affine,
            self.sigma_tps,
            self.points_tps,
            device=device,
            dtype=dtype,
            generator=generator,
            tps_kernel=self.tps_kernel,
        )

    def forward(
        self,
        detect: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        driving: torch.Tensor,
        kp_driving: dict[str, torch.Tensor],
        transform: RandomTPSTransform | None = None,
    ) -> dict[str, torch.Tensor]:
        if transform is None:
            dtype = torch.promote_types(driving.dtype, torch.float32)
            transform = self.sample_transform(driving.shape[0], driving.device, dtype)
        transformed_frame = transform.transform_frame(driving)  # (B, C, H, W)
        kp_transformed = detect(transformed_frame)
        points_driving = _planar_keypoints(kp_driving, "driving")  # (B, K, 2)
        points_transformed = _planar_keypoints(kp_transformed, "transformed")  # (B, K, 2)
        if points_driving.shape != points_transformed.shape:
            raise ValueError(
                f"driving keypoints {tuple(points_driving.shape)} and transformed keypoints "
                f"{tuple(points_transformed.shape)} differ in shape"
            )
        losses = {
            "equivariance_value": (points_driving - transform.warp_coordinates(points_transformed))
            .abs()
            .mean(),
            "transformed_frame": transformed_frame.detach(),
            "transformed_keypoints": kp_transformed[KEYPOINTS_KEY].detach(),
        }
        jacobian_driving = _planar_jacobian(kp_driving)
        jacobian_transformed = _planar_jacobian(kp_transformed)
        if jacobian_driving is not None and jacobian_transformed is not None:
            transform_grad = transform.jacobian(points_transformed)  # (B, K, 2, 2)
            # the inverse is ill-conditioned in half precision: do this part in float32 outside autocast
            with torch.autocast(device_type=driving.device.type, enabled=False):
                composed = transform_grad.float() @ jacobian_transformed.float()  # ∇T(kp_t)·J_t
                # inv_ex: no error check, hence no device sync; a singular J_d gives non-finite values
                inverse_driving = torch.linalg.inv_ex(jacobian_driving.float())[0]
                normalised = inverse_driving @ composed  # (B, K, 2, 2)
                identity = torch.eye(2, device=normalised.device, dtype=normalised.dtype)
                losses["equivariance_jacobian"] = (identity - normalised).abs().mean()
        return losses


def family_keypoints(network: nn.Module, motion: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keypoint dict this loss compares, from the family's declared ``equivariance_keypoints`` (``network``: a
    ``ReenactmentFamily``): its points as "value" and, where it has them, its Jacobians as "jacobian"."""
    keypoints = network.equivariance_keypoints(motion)
    if keypoints is None:
        raise ObjectiveError(f"the {network.family!r} family has no keypoints to make equivariant; "
                                 f"drop the equivariance terms from model.objective.terms")
    points, jacobian = keypoints
    return {KEYPOINTS_KEY: points} if jacobian is None else {KEYPOINTS_KEY: points, JACOBIAN_KEY: jacobian}


def shared_equivariance(context: LossContext, loss: EquivarianceLoss) -> dict[str, torch.Tensor]:
    """One equivariance pass per step (one random transform, one detection on the transformed frame), shared by
    the value term and a family's Jacobian term; the transformed frame goes to the step's visuals."""

    def run() -> dict[str, torch.Tensor]:
        network = context.network

        def detect(frames: torch.Tensor) -> dict[str, torch.Tensor]:
            return family_keypoints(network, network.encode_motion(frames))

        terms = loss(detect, context.batch["driving"], family_keypoints(network, context.output["motion_driving"]))
        context.visuals["transformed"] = terms["transformed_frame"]
        return terms

    return context.shared("equivariance", run)


class KeypointEquivariance(LossTerm):
    """mean |kp_d − T(kp_t)|: keypoints detected on a randomly warped driving frame, mapped back through the
    warp, must land on the driving keypoints (FOMM's equivariance, face-vid2vid's L_E)."""

    reads = ("motion_driving",)

    def __init__(
        self, weight: float = 10.0, sigma_affine: float = 0.05, sigma_tps: float = 0.005, points_tps: int = 5,
        tps_kernel: str = "l1",
    ) -> None:
        super().__init__(weight)
        self.loss = EquivarianceLoss(sigma_affine=sigma_affine, sigma_tps=sigma_tps, points_tps=points_tps,
                                     tps_kernel=tps_kernel)

    def compute(self, context: LossContext) -> torch.Tensor:
        return shared_equivariance(context, self.loss)["equivariance_value"]
