"""The cross-modal attention layer of implicit warping: correspondence and warping in one step.

Queries come from the driving keypoints (Q, one per query position), keys from the source keypoints with the source
image (K), values are source image features (V). With positional encodings added to Q and K,

    A = softmax(Q K^T / sqrt(d))        (q x k)
    output = A V + MLP(concat(A [pixels, K], Q))

The keys and values of all S source images are concatenated (k = S h_k w_k + E), so each query picks, per location,
the source that shows it best; nothing depends on the order of the sources. E extra learned key/value tokens give a
query with no good match somewhere to go (teeth when the mouth opens), and during training each source token is
dropped with probability ``source_token_dropout`` so the model learns to use them. The residual MLP sees what the
weights did to the source pixels and keys, which lets the output express what a weighted average of V cannot
(skew, rotation, colour).

The attention runs through ``torch.nn.functional.scaled_dot_product_attention`` in float32 (the expected coordinates
below must stay sub-pixel under bf16 autocast). One call also returns, per query, the attention mass on each source
m_s and the expected source coordinate under that source's weights, flow_s = sum_{j in s} A_j c_j / m_s: the model
uses them to bring full-resolution source detail along (see model.py). Keys and values are usually at a lower
resolution than the queries (spatial-reduction attention), which keeps 256x256 training within one GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reenact.families.implicit_warping.positional_encoding import PositionalEncoding
from reenact.layers.geometry import make_coordinate_grid

MASS_EPS = 1e-6


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V by scaled_dot_product_attention; query (B, q, d), key (B, k, d), value (B, k, c),
    keep (B, k) bool or None -> (B, q, c)."""
    mask = None if keep is None else keep[:, None, None, :]  # (B, 1, 1, k): True takes part
    out = F.scaled_dot_product_attention(query[:, None], key[:, None], value[:, None], attn_mask=mask)
    return out[:, 0]


def attention_weights(query: torch.Tensor, key: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """A = softmax(Q K^T / sqrt(d)) written out, (B, q, k): the reference the SDPA path is tested against."""
    scores = query @ key.transpose(1, 2) / math.sqrt(query.shape[-1])  # (B, q, k)
    if keep is not None:
        scores = scores.masked_fill(~keep[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


class CrossModalAttention(nn.Module):
    """Q (B, d, hq, wq), K (B, S, d, hk, wk), V (B, S, c, hk, wk), source pixels (B, S, 3, hk, wk) ->
    {"features" (B, c, hq, wq): A V + MLP(...), "mass" (B, S, hq, wq): attention on each source,
    "flow" (B, S, hq, wq, 2): expected source coordinate per source, "extra_pixels" (B, 3, hq, wq): A times the
    extra tokens' pixel colours}."""

    def __init__(
        self,
        dim: int = 64,
        value_dim: int = 256,
        num_extra_tokens: int = 4,
        source_token_dropout: float = 0.1,
        mlp_hidden: int = 128,
        num_frequencies: int = 5,
        pe_sharpness: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 <= source_token_dropout <= 1:
            raise ValueError(f"source_token_dropout must be in [0, 1], got {source_token_dropout}")
        if source_token_dropout > 0 and num_extra_tokens < 1:
            raise ValueError("source_token_dropout > 0 needs num_extra_tokens >= 1 (a query may lose every source)")
        self.dim = dim
        self.value_dim = value_dim
        self.num_extra_tokens = num_extra_tokens
        self.source_token_dropout = source_token_dropout
        self.positional_encoding = PositionalEncoding(dim, num_frequencies, pe_sharpness)
        # extra learned tokens: key, value and the colour the residual branch and the skips see
        self.extra_keys = nn.Parameter(torch.zeros(num_extra_tokens, dim))
        self.extra_values = nn.Parameter(0.1 * torch.randn(num_extra_tokens, value_dim))
        self.extra_pixels = nn.Parameter(torch.full((num_extra_tokens, 3), 0.5))
        self.mlp = nn.Sequential(
            nn.Conv2d(3 + 2 * dim, mlp_hidden, kernel_size=1), nn.ReLU(),
            nn.Conv2d(mlp_hidden, value_dim, kernel_size=1))
        nn.init.zeros_(self.mlp[-1].weight)  # starts as A V alone
        nn.init.zeros_(self.mlp[-1].bias)

    def tokens(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pixels: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The attention's operands in float32: Q + PE (B, q, d), K + PE with the extra keys last (B, k, d), the
        value rows (B, k, c + 3 + d + 3 + 3S) and the keep mask (B, k) (None: every token takes part)."""
        b, s, _, hk, wk = keys.shape
        hq, wq = query.shape[-2:]
        device = query.device
        grid_q = make_coordinate_grid((hq, wq), torch.float32, device)  # (hq, wq, 2)
        # key positions: the query grid averaged the way the keys were pooled, so identity stays exact
        grid_k = F.adaptive_avg_pool2d(grid_q.permute(2, 0, 1)[None], (hk, wk))[0].permute(1, 2, 0)  # (hk, wk, 2)
        q = query.float().flatten(2).transpose(1, 2) + self.positional_encoding(grid_q).view(1, hq * wq, -1)
        pe_k = self.positional_encoding(grid_k).view(1, 1, hk * wk, -1)
        k_src = keys.float().flatten(3).transpose(2, 3)  # (B, S, n, d), n = hk wk
        k = torch.cat([(k_src + pe_k).flatten(1, 2), self.extra_keys.float().expand(b, -1, -1)], dim=1)

        n = hk * wk
        v_src = values.float().flatten(3).transpose(2, 3)  # (B, S, n, c)
        pix_src = pixels.float().flatten(3).transpose(2, 3)  # (B, S, n, 3)
        onehot = torch.eye(s, device=device).view(1, s, 1, s).expand(b, s, n, s)  # (B, S, n, S)
        coords = grid_k.reshape(1, 1, n, 1, 2) * onehot[..., None]  # (B, S, n, S, 2)
        rows_src = torch.cat([v_src, pix_src, k_src, torch.zeros_like(pix_src), onehot, coords.flatten(3)], dim=-1)
        e = self.num_extra_tokens
        rows_extra = torch.cat([
            self.extra_values.float(), self.extra_pixels.float(), self.extra_keys.float(),
            self.extra_pixels.float(), torch.zeros(e, 3 * s, device=device)], dim=-1).expand(b, -1, -1)
        v = torch.cat([rows_src.flatten(1, 2), rows_extra], dim=1)  # (B, S n + E, c + 3 + d + 3 + 3S)

        if self.training and self.source_token_dropout > 0:
            dropped = torch.rand(b, s * n, device=device) < self.source_token_dropout
            keep = ~dropped if keep is None else keep & ~dropped
        if keep is not None:
            keep = torch.cat([keep, torch.ones(b, e, dtype=torch.bool, device=device)], dim=1)
        return q, k, v, keep

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pixels: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``keep`` (B, S hk wk) bool: the source tokens that may take part (None: all; dropout comes on top)."""
        b, s = keys.shape[:2]
        hq, wq = query.shape[-2:]
        c, d = self.value_dim, self.dim
        with torch.autocast(device_type=query.device.type, enabled=False):
            q, k, v, keep = self.tokens(query, keys, values, pixels, keep)
            out = attend(q, k, v, keep)  # (B, q, c + 3 + d + 3 + 3S)
        out = out.transpose(1, 2).reshape(b, -1, hq, wq)  # channels first
        attended_v, attended_pix, attended_k = out[:, :c], out[:, c:c + 3], out[:, c + 3:c + 3 + d]
        extra_pixels = out[:, c + 3 + d:c + 6 + d]  # (B, 3, hq, wq)
        mass = out[:, c + 6 + d:c + 6 + d + s]  # (B, S, hq, wq)
        coordinate_sum = out[:, c + 6 + d + s:].reshape(b, s, 2, hq, wq)
        flow = (coordinate_sum / mass.clamp_min(MASS_EPS)[:, :, None]).permute(0, 1, 3, 4, 2)  # (B, S, hq, wq, 2)
        query_pe = q.transpose(1, 2).reshape(b, d, hq, wq)
        residual = self.mlp(torch.cat([attended_pix, attended_k, query_pe], dim=1).to(query.dtype))
        return {"features": attended_v.to(query.dtype) + residual, "mass": mass, "flow": flow,
                "extra_pixels": extra_pixels}
