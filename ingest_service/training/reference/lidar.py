"""The reference LiDAR model: PointNet-style per-point segmentation.

A shared per-point MLP (1x1 convs: 3 -> 64 -> 64 -> ``width``), a max-pooled global
feature concatenated back onto each point's 64-d local feature, and a per-point head
(-> 128 -> 64 -> K). Output ``logits`` ``(n_points, K)`` and ``embedding`` ``(width,)``
= the global feature.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LidarExport", "PointNetSeg"]


def _mlp(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)
    )


class PointNetSeg(nn.Module):
    """``forward(points (B, N, C))`` -> per-point logits ``(B, N, K)`` and global ``(B, width)``."""

    def __init__(
        self, num_classes: int, in_features: int = 3, width: int = 128, local: int = 64
    ) -> None:
        super().__init__()
        self.local = nn.Sequential(_mlp(in_features, local), _mlp(local, local))
        self.global_mlp = _mlp(local, width)
        self.head = nn.Sequential(
            _mlp(local + width, 128),
            _mlp(128, 64),
            nn.Dropout(0.1),
            nn.Conv1d(64, num_classes, 1),
        )
        self.width = width

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = points.transpose(1, 2)  # (B, C, N)
        local = self.local(x)
        global_feat = self.global_mlp(local).amax(dim=2)  # (B, width)
        tiled = global_feat.unsqueeze(2).expand(-1, -1, local.shape[2])
        logits: torch.Tensor = self.head(torch.cat([local, tiled], dim=1))
        return logits.transpose(1, 2), global_feat


class LidarExport(nn.Module):
    """The exported graph: ``points (1, N, C)`` -> ``logits (N, K)``, ``embedding (d,)``."""

    def __init__(self, net: PointNetSeg) -> None:
        super().__init__()
        self.net = net

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, global_feat = self.net(points)
        return logits[0], global_feat[0]
