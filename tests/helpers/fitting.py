"""Tiny optimisation loops shared by model tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def final_l1_after_fitting(
    predict: Callable[[], torch.Tensor], target: torch.Tensor, params: Iterable[torch.nn.Parameter],
    steps: int, lr: float = 3e-3,
) -> float:
    """Adam on the L1 between ``predict()`` and ``target`` for ``steps`` steps; returns the last step's L1."""
    optimizer = torch.optim.Adam(params, lr=lr)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (predict() - target).abs().mean()
        loss.backward()
        optimizer.step()
    return loss.item()
