"""TPSMM's advanced motion-transfer network (AVD): keypoints re-synthesised from the source's identity and the
driving frame's pose (the paper's stage 2).

Two MLP encoders embed the flattened source keypoints (``id_encoder``) and driving keypoints (``pose_encoder``);
``decoder`` maps the concatenated (pose, identity) codes back to K*N keypoints. Trained with the motion networks
frozen, on driving keypoints rescaled per sample, to give back the unscaled ones.
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU between consecutive sizes, a plain Linear last (indices as the release's)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class AVDNetwork(nn.Module):
    """kp_source, kp_driving (B, K*N, 2) -> the driving pose on the source identity, (B, K*N, 2)."""

    def __init__(self, num_kp: int = 50, id_bottleneck: int = 128, pose_bottleneck: int = 128) -> None:
        super().__init__()
        self.num_kp = num_kp
        size = 2 * num_kp
        self.id_encoder = mlp([size, 256, 512, 1024, id_bottleneck])
        self.pose_encoder = mlp([size, 256, 512, 1024, pose_bottleneck])
        self.decoder = mlp([pose_bottleneck + id_bottleneck, 1024, 512, 256, size])

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        b = kp_driving.shape[0]
        identity = self.id_encoder(kp_source.reshape(b, -1))  # (B, id_bottleneck)
        pose = self.pose_encoder(kp_driving.reshape(b, -1))  # (B, pose_bottleneck)
        return self.decoder(torch.cat([pose, identity], dim=1)).view(b, self.num_kp, 2)
