"""The plain MLP behind LivePortrait's stitching and retargeting networks (S, R_eyes, R_lip).

Linear layers with ReLU between them, stored as ``mlp.<i>.weight`` / ``mlp.<i>.bias`` with ``i`` counting the ReLUs
too (Linear at 0, 2, 4, ...), the key layout of the released ``stitching_retargeting_module.pth``. The last layer
starts at zero, so a new network outputs a zero offset: the keypoints it corrects stay as they are (the identity).
Only the last layer is zeroed: with every layer at zero (the released code's ``initialize_weights_to_zero``), every
hidden activation is zero and so is every weight gradient but the last bias's, and the network could not learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class RetargetingMLP(nn.Module):
    """input (B, input_size) -> output (B, output_size); ``hidden_sizes`` hidden layers, ReLU after each."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int) -> None:
        super().__init__()
        if input_size < 1 or output_size < 1 or not hidden_sizes or min(hidden_sizes) < 1:
            raise ValueError(f"{type(self).__name__}: sizes must be positive with at least one hidden layer, got "
                             f"{input_size} -> {list(hidden_sizes)} -> {output_size}")
        self.input_size, self.output_size = input_size, output_size
        widths = [input_size, *hidden_sizes]
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(cin, cout), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], output_size))
        self.mlp = nn.Sequential(*layers)
        last = self.mlp[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: expected (B, {self.input_size}), got {tuple(features.shape)}")
        return self.mlp(features)  # (B, output_size)
