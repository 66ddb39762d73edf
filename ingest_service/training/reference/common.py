"""What the reference trainers share: training settings, accuracy reports, the ONNX export
with the edge runner's metadata, and the onnxruntime-against-torch parity check."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from torch import nn

from edge_agent.models.metadata import ModelMetadata

__all__ = [
    "FULL",
    "LICENCE",
    "OPSET",
    "QUICK",
    "VERSION",
    "Settings",
    "accuracy_report",
    "class_weights",
    "export_onnx",
    "parity",
]

OPSET = 17
VERSION = "1.0.0"
LICENCE = (
    "trained on KITTI (CC BY-NC-SA 3.0), nuScenes (CC BY-NC-SA 4.0) and Argoverse 2 "
    "(CC BY-NC-SA 4.0) data: non-commercial, demo and test use only"
)


@dataclass(frozen=True, slots=True)
class Settings:
    image_size: tuple[int, int]
    camera_width: int
    camera_epochs: int
    camera_repeats: int
    point_count: int
    lidar_width: int
    lidar_steps: int
    lidar_batch: int


FULL = Settings((192, 320), 128, 30, 4, 4096, 128, 200, 6)
QUICK = Settings((96, 160), 32, 2, 1, 1024, 32, 10, 2)


def class_weights(labels: NDArray[np.int64], classes: int, power: float = 0.5) -> torch.Tensor:
    counts = np.bincount(labels[labels >= 0], minlength=classes).astype(np.float64)
    weights = np.power(np.maximum(counts, 1.0), -power)
    weights = weights / weights[counts > 0].mean()
    return torch.tensor(weights, dtype=torch.float32)


def accuracy_report(
    pred: NDArray[np.int64], truth: NDArray[np.int64], classes: Sequence[str]
) -> dict[str, Any]:
    per_class = {}
    recalls = []
    for k, name in enumerate(classes):
        mask = truth == k
        if mask.any():
            recall = float((pred[mask] == k).mean())
            per_class[name] = {"n": int(mask.sum()), "recall": round(recall, 3)}
            recalls.append(recall)
    return {
        "n": len(truth),
        "accuracy": round(float((pred == truth).mean()), 3),
        "balanced_accuracy": round(float(np.mean(recalls)), 3),
        "majority_baseline": round(float(np.bincount(truth).max() / len(truth)), 3),
        "per_class": per_class,
    }


# -- export ------------------------------------------------------------------------------------
def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    meta: ModelMetadata,
    output_names: Sequence[str],
) -> str:
    """Export to ONNX (opset 17, static shapes), embed the metadata, write the sha256 sidecar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    module.eval()
    with warnings.catch_warnings():
        # torch 2.9+ prefers the torch.export-based exporter, which needs onnxscript; the
        # TorchScript exporter used here still works and warns that it is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            input_names=[meta.input_name],
            output_names=list(output_names),
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(tmp))
    onnx.checker.check_model(model)
    onnx.helper.set_model_props(model, meta.to_props())
    model.doc_string = meta.extra.get("description", "")
    model.producer_name = "fleet-active-learning"
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    digest = sha256_of(path)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return digest


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parity(
    expected: Sequence[NDArray[np.float32]], actual: Sequence[NDArray[np.float32]], what: str
) -> float:
    worst = 0.0
    for e, a in zip(expected, actual, strict=True):
        if e.shape != a.shape or not np.allclose(e, a, rtol=1e-3, atol=1e-4):
            diff = float(np.abs(e - a).max()) if e.shape == a.shape else float("inf")
            raise RuntimeError(
                f"{what}: onnxruntime and torch disagree "
                f"(max |diff| {diff}, shapes {e.shape} {a.shape})"
            )
        worst = max(worst, float(np.abs(e - a).max()))
    return worst
