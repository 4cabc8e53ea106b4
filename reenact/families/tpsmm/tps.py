"""Thin-plate splines between keypoint groups (TPSMM's K driving->source transforms T_k, paper Eq. 2-4).

Each group of N (= 5) driving keypoints p_i with source partners q_i defines one spline
    T(z) = A [z; 1] + sum_i w_i U(|z - p_i|^2),    U(r2) = r2 * log(r2 + 1e-9),
with r2 the *squared* Euclidean distance. (w, A) solve the (N+3) x (N+3) system
    [[U(P,P), P~], [P~^T, 0]] [w; A^T] = [q; 0],   P~ = [p, 1],
to which the release adds 0.01 * I over the *whole* matrix before inverting (``regulariser="system"``): the
control points then do not map exactly, and equal point sets do not give the identity (up to ~0.2 for random
points, more for the clustered points of an untrained detector). ``regulariser="kernel"`` adds it to the U block only
(a smoothing spline: affine motion stays exact, but five nearly collinear or coincident points make the system
nearly singular). ``regulariser="displacement"`` regularises the whole system as the release but fits the
displacement q - p and adds the identity back: well conditioned, and equal point sets give exactly the identity.
``regularisation=0`` interpolates exactly. Solving runs in float32 outside autocast. ONNX has no matrix inverse, so
an ONNX export inverts by Gauss-Jordan elimination with partial pivoting (:func:`gauss_jordan_inverse`).
"""

from __future__ import annotations

import torch

LOG_EPS = 1e-9
REGULARISERS = ("system", "kernel", "displacement")


def radial_basis(squared_distance: torch.Tensor) -> torch.Tensor:
    """U(r^2) = r^2 log(r^2 + 1e-9), elementwise."""
    return squared_distance * torch.log(squared_distance + LOG_EPS)


def gauss_jordan_inverse(matrices: torch.Tensor) -> torch.Tensor:
    """(..., n, n) -> their inverses by Gauss-Jordan elimination with partial pivoting, in elementwise operations,
    argmax and comparisons only (what ONNX exports); a static loop over the n columns."""
    n = matrices.shape[-1]
    eye = torch.eye(n, dtype=matrices.dtype, device=matrices.device)
    rows = torch.arange(n, device=matrices.device)
    augmented = torch.cat([matrices, eye.expand_as(matrices)], dim=-1)  # (..., n, 2n)
    for j in range(n):
        below = augmented[..., j:, j].abs()  # (..., n-j)
        pivot_row = below.argmax(dim=-1, keepdim=True) + j  # (..., 1)
        pick = (rows == pivot_row).to(matrices.dtype).unsqueeze(-1)  # (..., n, 1): one-hot of the pivot row
        current = (rows == j).to(matrices.dtype).unsqueeze(-1)  # (n, 1)
        delta = (pick * augmented).sum(dim=-2, keepdim=True) - augmented[..., j:j + 1, :]  # (..., 1, 2n)
        augmented = augmented + (current - pick) * delta  # swap rows j and pivot_row
        normalised = augmented[..., j:j + 1, :] / augmented[..., j:j + 1, j:j + 1]  # (..., 1, 2n)
        augmented = augmented - augmented[..., :, j:j + 1] * normalised + current * normalised
    return augmented[..., n:]


def solve_tps(
    control: torch.Tensor, target: torch.Tensor, regularisation: float = 0.01, regulariser: str = "system"
) -> tuple[torch.Tensor, torch.Tensor]:
    """control (B, K, N, 2) driving points, target (B, K, N, 2) source points ->
    (affine (B, K, 2, 3) rows [a_x, a_y, b] per output coordinate, weights (B, K, N, 2))."""
    if regulariser not in REGULARISERS:
        raise ValueError(f"unknown TPS regulariser {regulariser!r}; expected one of {REGULARISERS}")
    with torch.autocast(device_type=control.device.type, enabled=False):
        p, q = control.float(), target.float()
        b, k, n, _ = p.shape
        kernel = radial_basis(((p.unsqueeze(3) - p.unsqueeze(2)) ** 2).sum(-1))  # (B, K, N, N)
        homogeneous = torch.cat([p, torch.ones_like(p[..., :1])], dim=-1)  # (B, K, N, 3)
        top = torch.cat([kernel, homogeneous], dim=-1)  # (B, K, N, N+3)
        bottom = torch.cat([homogeneous.transpose(-1, -2), p.new_zeros(b, k, 3, 3)], dim=-1)  # (B, K, 3, N+3)
        system = torch.cat([top, bottom], dim=-2)  # (B, K, N+3, N+3)
        diagonal = torch.full((n + 3,), regularisation, dtype=p.dtype, device=p.device)
        if regulariser == "kernel":
            diagonal[n:] = 0
        system = system + torch.eye(n + 3, dtype=p.dtype, device=p.device) * diagonal
        fitted = q - p if regulariser == "displacement" else q
        rhs = torch.cat([fitted, p.new_zeros(b, k, 3, 2)], dim=-2)  # (B, K, N+3, 2)
        if torch.onnx.is_in_onnx_export():  # in float64: no worse than LAPACK's float32 inverse when ill-conditioned
            inverse = gauss_jordan_inverse(system.double()).float()
        else:
            inverse = torch.linalg.inv(system)
        solution = inverse @ rhs  # (B, K, N+3, 2); the inverse, as the release computes it
        affine = solution[..., n:, :].transpose(-1, -2)  # (B, K, 2, 3)
        if regulariser == "displacement":
            affine = affine + torch.eye(2, 3, dtype=affine.dtype, device=affine.device)
        return affine, solution[..., :n, :]


def warp_points(
    points: torch.Tensor, control: torch.Tensor, affine: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """points (B|1, M, 2) -> (B, K, M, 2): every point through each of the K splines (float32)."""
    with torch.autocast(device_type=points.device.type, enabled=False):
        z = points.float()
        b, k, n, _ = control.shape
        moved = z.unsqueeze(1) @ affine[..., :2].transpose(-1, -2) + affine[..., 2].unsqueeze(2)  # (B, K, M, 2)
        squared = ((z.view(z.shape[0], 1, -1, 1, 2) - control.view(b, k, 1, n, 2)) ** 2).sum(-1)  # (B, K, M, N)
        return moved + radial_basis(squared) @ weights


def tps_grids(
    kp_driving: torch.Tensor,
    kp_source: torch.Tensor,
    spatial_size: tuple[int, int],
    points_per_group: int = 5,
    regularisation: float = 0.01,
    regulariser: str = "system",
) -> torch.Tensor:
    """Driving keypoints (B, K*N, 2) and their source partners -> the K backward grids (B, K, H, W, 2), float32:
    grid[b, k, y, x] is where the driving-frame pixel (x, y) comes from in the source under spline k."""
    from reenact.layers.geometry import make_coordinate_grid

    b = kp_driving.shape[0]
    control = kp_driving.float().reshape(b, -1, points_per_group, 2)
    target = kp_source.float().reshape(b, -1, points_per_group, 2)
    affine, weights = solve_tps(control, target, regularisation, regulariser)
    h, w = spatial_size
    grid = make_coordinate_grid((h, w), torch.float32, kp_driving.device).view(1, h * w, 2)
    return warp_points(grid, control, affine, weights).view(b, control.shape[1], h, w, 2)
