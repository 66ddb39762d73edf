"""Train the reference LiDAR model (PointNet-style per-point segmentation), fine-tune it,
score it on the held-out points, export it and check the export (``train.py`` runs it)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from edge_agent.models.metadata import ModelMetadata
from edge_agent.models.preprocess import prepare_points, select_points
from edge_agent.models.runner import LidarModel, ModelRunner, RunnerConfig
from ingest_service.training.reference.common import (
    LICENCE,
    VERSION,
    Settings,
    accuracy_report,
    class_weights,
    export_onnx,
    parity,
)
from ingest_service.training.reference.data import LIDAR_CLASSES, LabelledSweep, lidar_files
from ingest_service.training.reference.lidar import LidarExport, PointNetSeg

__all__ = [
    "export_lidar",
    "lidar_holdout",
    "lidar_metadata",
    "load_lidar_checkpoint",
    "save_lidar_checkpoint",
    "train_lidar",
]


def lidar_metadata(
    settings: Settings, quick: bool, data_root: Path, extra: dict[str, str]
) -> ModelMetadata:
    files = [str(p.relative_to(data_root)) for p in lidar_files(data_root)]
    return ModelMetadata(
        name="ref-lidar",
        version=f"ref-lidar-{VERSION}" + ("-quick" if quick else ""),
        kind="lidar",
        input_name="points",
        input_shape=(1, settings.point_count, 3),
        input_layout="NPC",
        class_names=LIDAR_CLASSES,
        probs_output="logits",
        probs_are_logits=True,
        embedding_output="embedding",
        committee_axis=False,
        dense=True,
        point_features=("x", "y", "z"),
        point_mean=(0.0, 0.0, 0.0),
        point_std=(20.0, 20.0, 2.0),
        range_m=40.0,
        z_min=-3.5,
        z_max=4.0,
        extra={
            "description": (
                "reference PointNet-style per-point segmentation: shared MLP, max-pooled "
                "global feature concatenated back, per-point class logits; embedding = the "
                "global feature. A pipeline reference, not a detector."
            ),
            "training_data": json.dumps(files),
            "licence": LICENCE,
            **extra,
        },
    )


def _lidar_batch(
    sweeps: Sequence[LabelledSweep], meta: ModelMetadata, rng: np.random.Generator, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    mean = np.asarray(meta.point_mean, np.float32)
    std = np.asarray(meta.point_std, np.float32)
    for _ in range(size):
        sweep = sweeps[int(rng.integers(len(sweeps)))]
        index = select_points(sweep.points, meta, seed=int(rng.integers(2**31)))
        pts = sweep.points[index].astype(np.float32)
        angle = rng.uniform(-np.pi, np.pi)
        c, s = np.cos(angle), np.sin(angle)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32)
        pts = pts @ rot.T
        if rng.random() < 0.5:
            pts[:, 1] = -pts[:, 1]
        pts = pts * np.float32(rng.uniform(0.95, 1.05))
        # sensor heights differ (AV2 sweeps are in the ego frame, ground near z=0; KITTI and
        # nuScenes in the sensor frame, ground near -1.8 m): shift z so neither is special
        pts[:, 2] += np.float32(rng.uniform(-1.0, 1.0))
        labels = sweep.labels[index].copy()
        labels[sweep.holdout[index]] = -1  # held-out points never reach the loss
        xs.append((pts - mean) / std)
        ys.append(labels)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def train_lidar(
    sweeps: Sequence[LabelledSweep],
    meta: ModelMetadata,
    settings: Settings,
    seed: int,
    *,
    net: PointNetSeg | None = None,
    steps: int | None = None,
    lr: float = 3e-3,
    holdout: Sequence[LabelledSweep] | None = None,
) -> tuple[PointNetSeg, dict[str, Any]]:
    """Train a LiDAR net (or fine-tune ``net``) on the points of ``sweeps`` outside their
    holdout masks; report its accuracy on the held-out points of ``holdout`` (default: the
    same sweeps), never trained on."""
    rng = np.random.default_rng(seed)
    if net is None:
        net = PointNetSeg(len(LIDAR_CLASSES), in_features=3, width=settings.lidar_width)
    all_labels = np.concatenate([s.labels[~s.holdout] for s in sweeps])
    weights = class_weights(all_labels, len(LIDAR_CLASSES), power=0.5)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = settings.lidar_steps if steps is None else steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: 0.5 * (1 + math.cos(math.pi * e / steps))
    )
    net.train()
    for _step in range(steps):
        x, y = _lidar_batch(sweeps, meta, rng, settings.lidar_batch)
        logits, _ = net(x)
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), weight=weights, ignore_index=-1
        )
        opt.zero_grad()
        torch.autograd.backward(loss)
        opt.step()
        sched.step()
    return net, lidar_holdout(net, sweeps if holdout is None else holdout, meta)


def lidar_holdout(
    net: PointNetSeg, sweeps: Sequence[LabelledSweep], meta: ModelMetadata
) -> dict[str, Any]:
    """Accuracy of ``net`` on the held-out points of ``sweeps``, as scored at inference."""
    net.eval()
    preds, truths = [], []
    per_sweep = {}
    for sweep in sweeps:
        tensor, index = prepare_points(sweep.points, meta, ("x", "y", "z"))
        with torch.no_grad():
            logits, _ = net(torch.from_numpy(tensor))
        pred = logits[0].argmax(dim=1).numpy()
        mask = sweep.holdout[index] & (sweep.labels[index] >= 0)
        preds.append(pred[mask])
        truths.append(sweep.labels[index][mask])
        per_sweep[sweep.name] = (
            round(float((pred[mask] == sweep.labels[index][mask]).mean()), 3)
            if mask.any()
            else None
        )
    report = accuracy_report(np.concatenate(preds), np.concatenate(truths), LIDAR_CLASSES)
    report["per_sweep_accuracy"] = per_sweep
    report["unit"] = (
        "points: the held-out region of every sweep (rear-left quadrant of the 360-degree "
        "sweeps, left half of the KITTI ones), as scored at inference (seeded subsample)"
    )
    return report


def export_lidar(
    net: PointNetSeg, meta: ModelMetadata, path: Path, sample: NDArray[np.float32]
) -> tuple[str, float]:
    """Export ``net`` to ONNX at ``path`` and check the edge runner against torch on the
    ``sample`` sweep; ``(sha256, max |diff|)``, ``RuntimeError`` when they disagree."""
    export = LidarExport(net).eval()
    tensor, _ = prepare_points(sample, meta, ("x", "y", "z"))
    digest = export_onnx(export, torch.from_numpy(tensor), path, meta, ["logits", "embedding"])
    with torch.no_grad():
        logits, emb = export(torch.from_numpy(tensor))
    cpu = RunnerConfig(providers=("cpu",), intra_op_threads=1)
    got = LidarModel(ModelRunner(path, sha256=digest, config=cpu), fields=("x", "y", "z")).score(
        sample
    )
    expected = torch.softmax(logits, dim=-1).numpy()
    return digest, parity([expected, emb.numpy()], [got.probs, got.embedding], str(path))


def save_lidar_checkpoint(net: PointNetSeg, path: Path, settings: Settings, quick: bool) -> None:
    """The torch weights beside the ONNX: what a fine-tuning run starts from."""
    torch.save(
        {"state_dict": net.state_dict(), "width": settings.lidar_width, "quick": quick}, path
    )


def load_lidar_checkpoint(path: Path) -> tuple[PointNetSeg, bool]:
    """``(net, quick)`` from :func:`save_lidar_checkpoint`."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net = PointNetSeg(len(LIDAR_CLASSES), in_features=3, width=int(saved["width"]))
    net.load_state_dict(saved["state_dict"])
    return net, bool(saved["quick"])
