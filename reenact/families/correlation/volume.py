"""Feature correlation for learned warping (Liu et al., "Learning to Warp for Style Transfer", CVPR 2021: the
geometric warping module D).

Two feature fields, F_c of the image to be warped (the source, "content") and F_g of the image whose geometry it must
take (the driving frame, "geometry"), each L2-normalised per position, are compared position by position:

    M(i,j,k,l) = <F_c(i,j), F_g(k,l)> / sqrt( Σ_{p,q} <F_c(i,j), F_g(p,q)>² )

(:func:`correlation_volume`), exactly the paper's normalisation. The warp network f (:mod:`.warp_network`) maps M to a
displacement field; :mod:`.refiner` iterates it. :func:`search_window_loss` is the paper's
self-supervised loss, which needs no ground-truth flow.

Everything here runs in float32 even under autocast: the normalised correlations differ in their third decimal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-8


def l2_normalise(features: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, C, h, w) -> the same with every position's C-vector scaled to unit length (zero vectors stay 0)."""
    return features / features.norm(dim=1, keepdim=True).clamp_min(eps)


def correlation_volume(source_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """The paper's M: (B, C, hc, wc), (B, C, hg, wg) -> (B, hc, wc, hg, wg) in float32.

    M[b, i, j, k, l] = <F_c(i,j), F_g(k,l)> / sqrt(Σ_{p,q} <F_c(i,j), F_g(p,q)>²): every source position's
    correlations with all target positions, divided by their root sum of squares (so Σ_{k,l} M² = 1 per (i, j)).
    """
    if source_features.dim() != 4 or target_features.dim() != 4:
        raise ValueError(f"feature fields must be (B, C, h, w), got {tuple(source_features.shape)} and "
                         f"{tuple(target_features.shape)}")
    if source_features.shape[:2] != target_features.shape[:2]:
        raise ValueError(f"feature fields differ in batch or channels: {tuple(source_features.shape)} vs "
                         f"{tuple(target_features.shape)}")
    with torch.autocast(device_type=source_features.device.type, enabled=False):
        fc, fg = source_features.float(), target_features.float()
        raw = torch.einsum("bcij,bckl->bijkl", fc, fg)  # (B, hc, wc, hg, wg) inner products
        norm = raw.flatten(3).pow(2).sum(-1).add(_EPS).sqrt()  # (B, hc, wc): over every target position
        return raw / norm[..., None, None]


def window_offsets(window: int, device: torch.device | None = None) -> torch.Tensor:
    """The (window², 2) integer (dy, dx) offsets of a square search window centred on 0, row by row."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the search window must be a positive odd size, got {window}")
    radius = window // 2
    steps = torch.arange(-radius, radius + 1, device=device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([dy.flatten(), dx.flatten()], dim=-1)


def search_window_loss(
    warped_features: torch.Tensor, target_features: torch.Tensor, window: int = 9, temperature: float = 1.0
) -> torch.Tensor:
    """The paper's self-supervised warp loss, averaged over positions and the batch.

    warped_features w(F_c) (B, C, h, w): the source's features re-extracted after warping; target_features F_g
    (B, C, h, w). With M = :func:`correlation_volume` (w(F_c), F_g) and, for each position m, N_m the
    ``window`` x ``window`` target positions centred on m (those inside the field):

        p(m, n) = exp(M(m, n) / T) / Σ_{t ∈ N_m} exp(M(m, t) / T)
        L = − mean_m log p(m, m)

    i.e. after a correct warp the warped source feature at m is classified as the target feature at the same
    position m, against every other target feature of its search window. The paper writes the sum over n ∈ N_m
    with the positive pair left implicit; taken literally (every n of the window as a positive) the loss is
    minimised by a flat window whatever the warp, so the positive is the centre, as the paper's "the two features
    should be classified together" describes. The paper sums over m; the mean keeps the weight independent of the
    field's size. T = 1 is the paper's softmax of M itself.
    """
    if warped_features.shape != target_features.shape:
        raise ValueError(f"warped {tuple(warped_features.shape)} and target {tuple(target_features.shape)} "
                         "feature fields differ in shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, _, h, w = warped_features.shape
    m = correlation_volume(warped_features, target_features)  # (B, h, w, h, w)
    offsets = window_offsets(window, m.device)  # (S, 2)
    rows = torch.arange(h, device=m.device).view(h, 1, 1) + offsets[:, 0].view(1, 1, -1)  # (h, 1, S)
    cols = torch.arange(w, device=m.device).view(1, w, 1) + offsets[:, 1].view(1, 1, -1)  # (1, w, S)
    valid = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (h, w, S)
    i = torch.arange(h, device=m.device).view(h, 1, 1)
    j = torch.arange(w, device=m.device).view(1, w, 1)
    logits = m[:, i, j, rows.clamp(0, h - 1), cols.clamp(0, w - 1)] / temperature  # (B, h, w, S)
    logits = logits.masked_fill(~valid, float("-inf"))
    centre = (offsets == 0).all(-1).nonzero()[0, 0]
    log_p = F.log_softmax(logits, dim=-1)[..., centre]  # (B, h, w)
    return -log_p.mean()
