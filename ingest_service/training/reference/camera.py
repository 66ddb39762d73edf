"""The reference camera model: a small CNN patch classifier, applied convolutionally.

A shared backbone (five 3x3 conv + BN + ReLU layers, total stride 16, receptive field
63 px) feeds ``T`` light 1x1-conv heads (the committee). Trained on 64x64 patches whose
centre holds an object (or nothing), it scores every 16x16 cell of a whole image at
inference: output ``probs`` ``(T, n_cells, K)`` (softmax per member) and ``embedding``
``(width,)`` = the backbone features mean-pooled over the image.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CameraExport", "CameraNet"]


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class CameraNet(nn.Module):
    """Backbone + ``members`` heads; ``forward`` gives per-member logits ``(B, T, K, h, w)``."""

    def __init__(self, num_classes: int, members: int = 4, width: int = 128) -> None:
        super().__init__()
        w = width
        self.backbone = nn.Sequential(
            _block(3, w // 8 + w // 16, 2),
            _block(w // 8 + w // 16, w // 4 + w // 8, 2),
            _block(w // 4 + w // 8, w // 2 + w // 4, 2),
            _block(w // 2 + w // 4, w, 2),
            _block(w, w, 1),
        )
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(w, w // 2, 1),
                nn.ReLU(inplace=True),
                nn.Dropout2d(0.1),
                nn.Conv2d(w // 2, num_classes, 1),
            )
            for _ in range(members)
        )
        self.num_classes = num_classes
        self.members = members
        self.width = width

    def features(self, images: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.backbone(images)
        return out

    def head_logits(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(feats) for head in self.heads], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.features(images))


class CameraExport(nn.Module):
    """The exported graph: ``image (1, 3, H, W)`` -> ``probs (T, n, K)``, ``embedding (d,)``."""

    def __init__(self, net: CameraNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.net.features(image)  # (1, d, h, w)
        logits = self.net.head_logits(feats)[0]  # (T, K, h, w)
        members, classes = logits.shape[0], logits.shape[1]
        per_cell = logits.reshape(members, classes, -1).permute(0, 2, 1)  # (T, n, K)
        probs = torch.softmax(per_cell, dim=-1)
        embedding = feats.mean(dim=(2, 3)).reshape(-1)
        return probs, embedding
