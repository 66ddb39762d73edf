"""Train the reference camera and LiDAR models on ``data/`` and export them to ONNX.

::

    python -m ingest_service.training.reference.train --out models/           # ~1-2 min, 2 cores
    python -m ingest_service.training.reference.train --out /tmp/m --quick    # tiny, seconds

Writes ``camera.onnx`` and ``lidar.onnx`` (metadata in ``metadata_props``), a
``<model>.onnx.sha256`` sidecar for each (``sha256sum`` format), and
``training_report.json`` (holdout accuracy, timings). Each export is checked against the
torch model with onnxruntime on a real frame; a mismatch fails the run (exit 1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from edge_agent.models.metadata import ModelMetadata
from edge_agent.models.preprocess import prepare_image, prepare_points, select_points
from edge_agent.models.runner import CameraModel, LidarModel, ModelRunner, RunnerConfig
from ingest_service.training.reference.camera import CameraExport, CameraNet
from ingest_service.training.reference.data import (
    CAMERA_CLASSES,
    CAMERA_HOLDOUT,
    LIDAR_CLASSES,
    LabelledImage,
    LabelledSweep,
    camera_files,
    lidar_files,
    load_camera_images,
    load_lidar_sweeps,
)
from ingest_service.training.reference.lidar import LidarExport, PointNetSeg

__all__ = [
    "FULL",
    "QUICK",
    "ReferenceResult",
    "build_reference_models",
    "camera_holdout",
    "export_camera",
    "export_onnx",
    "load_camera_checkpoint",
    "main",
    "save_camera_checkpoint",
]

_log = logging.getLogger(__name__)

OPSET = 17
VERSION = "1.0.0"
LICENCE = (
    "trained on KITTI (CC BY-NC-SA 3.0), nuScenes (CC BY-NC-SA 4.0) and Argoverse 2 "
    "(CC BY-NC-SA 4.0) data: non-commercial, demo and test use only"
)
PATCH = 64  # camera training patch (px); the object fills the central half
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, slots=True)
class _Settings:
    image_size: tuple[int, int]
    camera_width: int
    camera_epochs: int
    camera_repeats: int
    point_count: int
    lidar_width: int
    lidar_steps: int
    lidar_batch: int


FULL = _Settings((192, 320), 128, 30, 4, 4096, 128, 200, 6)
QUICK = _Settings((96, 160), 32, 2, 1, 1024, 32, 10, 2)


@dataclass(frozen=True, slots=True)
class ReferenceResult:
    """One exported model: where it is, its checksum, what it scored on the holdout."""

    kind: str
    path: Path
    sha256: str
    version: str
    train_seconds: float
    holdout: dict[str, Any]
    parity_max_abs_diff: float


# -- camera ------------------------------------------------------------------------------------
def _camera_metadata(
    settings: _Settings, quick: bool, data_root: Path, extra: dict[str, str]
) -> ModelMetadata:
    height, width = settings.image_size
    files = [str(p.relative_to(data_root)) for p in camera_files(data_root)]
    return ModelMetadata(
        name="ref-camera",
        version=f"ref-camera-{VERSION}" + ("-quick" if quick else ""),
        kind="camera",
        input_name="image",
        input_shape=(1, 3, height, width),
        input_layout="NCHW",
        class_names=CAMERA_CLASSES,
        probs_output="probs",
        probs_are_logits=False,
        embedding_output="embedding",
        committee_axis=True,
        dense=True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        scale=1.0 / 255.0,
        extra={
            "description": (
                "reference patch classifier (CNN, stride 16) applied convolutionally: "
                "per-cell class probabilities from a committee of 4 heads on one backbone; "
                "embedding = mean-pooled backbone features. A pipeline reference, not a detector."
            ),
            "training_data": json.dumps(files),
            "licence": LICENCE,
            **extra,
        },
    )


def _square_crop(
    image: Image.Image, cx: float, cy: float, side: float, flip: bool
) -> NDArray[np.uint8]:
    half = side / 2
    box = (round(cx - half), round(cy - half), round(cx + half), round(cy + half))
    # crop() fills outside the image with black, like the zero padding at inference
    patch = image.crop(box).resize((PATCH, PATCH), Image.Resampling.BILINEAR)
    if flip:
        patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(patch, dtype=np.uint8)


def _camera_patches(
    images: Sequence[LabelledImage], rng: np.random.Generator, augment: bool, repeats: int
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    patches: list[NDArray[np.uint8]] = []
    labels: list[int] = []
    for item in images:
        pil = Image.fromarray(item.image)
        height, width = item.image.shape[:2]
        objects = 0
        for box, label in zip(item.boxes, item.labels, strict=True):
            size = float(max(box[2] - box[0], box[3] - box[1]))
            if label < 0 or size < 10:
                continue
            cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
            for _ in range(repeats if augment else 1):
                scale = rng.uniform(0.8, 1.3) if augment else 1.0
                dx, dy = (rng.uniform(-0.12, 0.12, size=2) * size) if augment else (0.0, 0.0)
                flip = bool(augment and rng.random() < 0.5)
                patches.append(_square_crop(pil, cx + dx, cy + dy, 2 * size * scale, flip))
                labels.append(int(label))
                objects += 1
        # background: windows whose central half overlaps no box (ignore regions included)
        wanted = max(6, objects // 2) if augment else 8
        tries = 0
        while wanted > 0 and tries < 400:
            tries += 1
            side = float(rng.uniform(40, min(height, width) * 0.9))
            cx = float(rng.uniform(side / 2, width - side / 2))
            cy = float(rng.uniform(side / 2, height - side / 2))
            q = side / 4
            if len(item.boxes) and np.any(
                (item.boxes[:, 0] < cx + q)
                & (item.boxes[:, 2] > cx - q)
                & (item.boxes[:, 1] < cy + q)
                & (item.boxes[:, 3] > cy - q)
            ):
                continue
            patches.append(_square_crop(pil, cx, cy, side, bool(augment and rng.random() < 0.5)))
            labels.append(0)
            wanted -= 1
    return np.stack(patches), np.asarray(labels, dtype=np.int64)


def _normalise_images(patches: NDArray[np.uint8], rng: np.random.Generator | None) -> torch.Tensor:
    x: NDArray[np.float32] = patches.astype(np.float32) / np.float32(255.0)
    if rng is not None:  # colour jitter: brightness, contrast, per-channel gain
        n = len(x)
        bright = rng.uniform(0.75, 1.25, size=(n, 1, 1, 1)).astype(np.float32)
        contrast = rng.uniform(0.75, 1.25, size=(n, 1, 1, 1)).astype(np.float32)
        gain = rng.uniform(0.9, 1.1, size=(n, 1, 1, 3)).astype(np.float32)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = np.clip(((x - mean) * contrast + mean) * bright * gain, 0.0, 1.0).astype(np.float32)
    mean_rgb = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std_rgb = np.asarray(IMAGENET_STD, dtype=np.float32)
    normalised = np.divide(np.subtract(x, mean_rgb), std_rgb, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))


def _centre_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, T, K, h, w) -> (B, T, K): mean over the cells that cover the patch's centre half."""
    h, w = logits.shape[-2:]
    return logits[..., h // 4 : h - h // 4, w // 4 : w - w // 4].mean(dim=(-2, -1))


def _class_weights(labels: NDArray[np.int64], classes: int, power: float = 0.5) -> torch.Tensor:
    counts = np.bincount(labels[labels >= 0], minlength=classes).astype(np.float64)
    weights = np.power(np.maximum(counts, 1.0), -power)
    weights = weights / weights[counts > 0].mean()
    return torch.tensor(weights, dtype=torch.float32)


def _accuracy_report(
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


def _train_camera(
    images: Sequence[LabelledImage],
    settings: _Settings,
    seed: int,
    *,
    net: CameraNet | None = None,
    epochs: int | None = None,
    lr: float = 3e-3,
) -> tuple[CameraNet, dict[str, Any]]:
    """Train a camera net (or fine-tune ``net``) on ``images`` outside the holdout; report
    its accuracy on the holdout images (:data:`CAMERA_HOLDOUT`), never trained on."""
    rng = np.random.default_rng(seed)
    train = [i for i in images if i.name not in CAMERA_HOLDOUT]
    held = [i for i in images if i.name in CAMERA_HOLDOUT]
    if net is None:
        net = CameraNet(len(CAMERA_CLASSES), members=4, width=settings.camera_width)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    total_epochs = settings.camera_epochs if epochs is None else epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: 0.5 * (1 + math.cos(math.pi * e / total_epochs))
    )
    for _epoch in range(total_epochs):
        patches, labels = _camera_patches(train, rng, augment=True, repeats=settings.camera_repeats)
        x = _normalise_images(patches, rng)
        y = torch.from_numpy(labels)
        weights = _class_weights(labels, len(CAMERA_CLASSES))
        # online bootstrap: each committee member sees its own Poisson(1) resample
        boot = torch.from_numpy(rng.poisson(1.0, size=(len(y), net.members)).astype(np.float32))
        net.train()
        order = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(y), 64):
            idx = order[start : start + 64]
            logits = _centre_logits(net(x[idx]))  # (B, T, K)
            loss = torch.zeros(())
            for member in range(net.members):
                per = nn.functional.cross_entropy(
                    logits[:, member], y[idx], weight=weights, reduction="none"
                )
                loss = loss + (per * boot[idx, member]).sum() / boot[idx, member].sum().clamp(
                    min=1.0
                )
            opt.zero_grad()
            torch.autograd.backward(loss)
            opt.step()
        sched.step()
    return net, camera_holdout(net, held, seed)


def camera_holdout(net: CameraNet, held: Sequence[LabelledImage], seed: int) -> dict[str, Any]:
    """Accuracy of ``net`` on the holdout images' patches (the same patches for a seed)."""
    net.eval()
    patches, labels = _camera_patches(
        held, np.random.default_rng(seed + 1), augment=False, repeats=1
    )
    with torch.no_grad():
        probs = torch.softmax(_centre_logits(net(_normalise_images(patches, None))), dim=-1).mean(
            dim=1
        )
    report = _accuracy_report(probs.argmax(dim=1).numpy(), labels, CAMERA_CLASSES)
    report["holdout_images"] = [i.name for i in held]
    report["unit"] = "patches (objects from the 2D boxes + background windows)"
    return report


def export_camera(
    net: CameraNet, meta: ModelMetadata, path: Path, sample: NDArray[np.uint8]
) -> tuple[str, float]:
    """Export ``net`` to ONNX at ``path`` and check the edge runner against torch on
    ``sample``; ``(sha256, max |diff|)``, ``RuntimeError`` when they disagree."""
    export = CameraExport(net).eval()
    tensor = prepare_image(sample, meta)
    digest = export_onnx(export, torch.from_numpy(tensor), path, meta, ["probs", "embedding"])
    with torch.no_grad():
        probs, emb = export(torch.from_numpy(tensor))
    cpu = RunnerConfig(providers=("cpu",), intra_op_threads=1)
    got = CameraModel(ModelRunner(path, sha256=digest, config=cpu)).score(sample)
    return digest, _parity([probs.numpy(), emb.numpy()], [got.probs, got.embedding], str(path))


def save_camera_checkpoint(net: CameraNet, path: Path, settings: _Settings, quick: bool) -> None:
    """The torch weights beside the ONNX: what a fine-tuning run starts from."""
    torch.save(
        {
            "state_dict": net.state_dict(),
            "width": settings.camera_width,
            "members": net.members,
            "quick": quick,
        },
        path,
    )


def load_camera_checkpoint(path: Path) -> tuple[CameraNet, bool]:
    """``(net, quick)`` from :func:`save_camera_checkpoint`."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net = CameraNet(len(CAMERA_CLASSES), members=int(saved["members"]), width=int(saved["width"]))
    net.load_state_dict(saved["state_dict"])
    return net, bool(saved["quick"])


# -- lidar -------------------------------------------------------------------------------------
def _lidar_metadata(
    settings: _Settings, quick: bool, data_root: Path, extra: dict[str, str]
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


def _train_lidar(
    sweeps: Sequence[LabelledSweep], meta: ModelMetadata, settings: _Settings, seed: int
) -> tuple[PointNetSeg, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    net = PointNetSeg(len(LIDAR_CLASSES), in_features=3, width=settings.lidar_width)
    all_labels = np.concatenate([s.labels[~s.holdout] for s in sweeps])
    weights = _class_weights(all_labels, len(LIDAR_CLASSES), power=0.5)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = settings.lidar_steps
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
    report = _accuracy_report(np.concatenate(preds), np.concatenate(truths), LIDAR_CLASSES)
    report["per_sweep_accuracy"] = per_sweep
    report["unit"] = (
        "points: the held-out region of every sweep (rear-left quadrant of the 360-degree "
        "sweeps, left half of the KITTI ones), as scored at inference (seeded subsample)"
    )
    return net, report


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
    digest = _sha256(path)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return digest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parity(
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


def build_reference_models(
    out: Path,
    data_root: Path,
    *,
    quick: bool = False,
    seed: int = 0,
    kinds: Sequence[str] = ("camera", "lidar"),
) -> list[ReferenceResult]:
    """Train, export and verify the reference models; returns one result per model."""
    settings = QUICK if quick else FULL
    results = []
    cpu = RunnerConfig(providers=("cpu",), intra_op_threads=1)
    if "camera" in kinds:
        torch.manual_seed(seed)
        start = time.perf_counter()
        images = load_camera_images(data_root)
        net, holdout = _train_camera(images, settings, seed)
        seconds = time.perf_counter() - start
        meta = _camera_metadata(
            settings, quick, data_root, {"holdout_accuracy": json.dumps(holdout["accuracy"])}
        )
        path = out / "camera.onnx"
        sample = next(i for i in images if i.name in CAMERA_HOLDOUT).image
        digest, diff = export_camera(net, meta, path, sample)
        save_camera_checkpoint(net, out / "camera.pt", settings, quick)
        results.append(
            ReferenceResult("camera", path, digest, meta.version, seconds, holdout, diff)
        )
    if "lidar" in kinds:
        torch.manual_seed(seed)
        start = time.perf_counter()
        sweeps = load_lidar_sweeps(data_root)
        meta = _lidar_metadata(settings, quick, data_root, {})
        lnet, holdout = _train_lidar(sweeps, meta, settings, seed)
        seconds = time.perf_counter() - start
        meta = _lidar_metadata(
            settings, quick, data_root, {"holdout_accuracy": json.dumps(holdout["accuracy"])}
        )
        path = out / "lidar.onnx"
        lexport = LidarExport(lnet).eval()
        points = sweeps[2].points  # the nuScenes sweep
        tensor, _ = prepare_points(points, meta, ("x", "y", "z"))
        digest = export_onnx(lexport, torch.from_numpy(tensor), path, meta, ["logits", "embedding"])
        with torch.no_grad():
            logits, emb = lexport(torch.from_numpy(tensor))
        got = LidarModel(
            ModelRunner(path, sha256=digest, config=cpu), fields=("x", "y", "z")
        ).score(points)
        expected_probs = torch.softmax(logits, dim=-1).numpy()
        diff = _parity([expected_probs, emb.numpy()], [got.probs, got.embedding], str(path))
        results.append(ReferenceResult("lidar", path, digest, meta.version, seconds, holdout, diff))
    return results


def _build_one(
    out: Path, data_root: Path, quick: bool, seed: int, kind: str, threads: int
) -> list[ReferenceResult]:
    """Worker-process entry: one model, its own torch thread count."""
    torch.set_num_threads(threads)
    return build_reference_models(out, data_root, quick=quick, seed=seed, kinds=(kind,))


def _build_parallel(
    out: Path, data_root: Path, quick: bool, seed: int, threads: int
) -> list[ReferenceResult]:
    """Camera and LiDAR in two processes: two cores, one model each."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        futures = [
            pool.submit(_build_one, out, data_root, quick, seed, kind, threads)
            for kind in ("camera", "lidar")
        ]
        return [result for future in futures for result in future.result()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ingest_service.training.reference.train",
        description="Train the reference camera + LiDAR models on data/ and export them to ONNX.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (models/)")
    parser.add_argument(
        "--data", type=Path, default=Path("data"), help="real data root (default: data)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny models in seconds (tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: OpenMP spin-waits badly when the cores are shared)",
    )
    parser.add_argument("--only", choices=("camera", "lidar"), help="build one model only")
    parser.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=2,
        help="2 (default): train camera and LiDAR in two processes at once; 1: one after the other",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, args.threads))
    kinds = (args.only,) if args.only else ("camera", "lidar")
    start = time.perf_counter()
    try:
        if args.jobs == 2 and len(kinds) == 2:
            results = _build_parallel(args.out, args.data, args.quick, args.seed, args.threads)
        else:
            results = build_reference_models(
                args.out, args.data, quick=args.quick, seed=args.seed, kinds=kinds
            )
    except (OSError, RuntimeError) as exc:
        print(f"reference model build failed: {exc}", file=sys.stderr)
        return 1
    report = {
        "seconds_total": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "jobs": args.jobs,
        "models": {
            r.kind: {
                "file": r.path.name,
                "version": r.version,
                "sha256": r.sha256,
                "train_seconds": round(r.train_seconds, 1),
                "parity_max_abs_diff": r.parity_max_abs_diff,
                "holdout": r.holdout,
            }
            for r in results
        },
    }
    (args.out / "training_report.json").write_text(
        json.dumps(report, indent=2) + "\n", encoding="utf-8"
    )
    for r in results:
        print(
            f"{r.kind}: {r.path} {r.version} sha256={r.sha256[:12]} "
            f"trained in {r.train_seconds:.1f} s, "
            f"holdout accuracy {r.holdout['accuracy']} (balanced {r.holdout['balanced_accuracy']}, "
            f"majority baseline {r.holdout['majority_baseline']}, n={r.holdout['n']}), "
            f"onnxruntime parity max |diff| {r.parity_max_abs_diff:.2e}"
        )
    print(f"total {report['seconds_total']} s; report in {args.out / 'training_report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
