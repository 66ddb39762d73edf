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
import json
import logging
import math
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from edge_agent.models.metadata import ModelMetadata
from edge_agent.models.preprocess import prepare_image
from edge_agent.models.runner import CameraModel, ModelRunner, RunnerConfig
from ingest_service.training.reference.camera import CameraExport, CameraNet
from ingest_service.training.reference.common import (
    FULL,
    LICENCE,
    QUICK,
    VERSION,
    Settings,
    accuracy_report,
    class_weights,
    export_onnx,
    parity,
)
from ingest_service.training.reference.data import (
    CAMERA_CLASSES,
    CAMERA_HOLDOUT,
    LabelledImage,
    camera_files,
    load_camera_images,
    load_lidar_sweeps,
)
from ingest_service.training.reference.train_lidar import (
    export_lidar,
    lidar_metadata,
    save_lidar_checkpoint,
    train_lidar,
)

__all__ = [
    "ReferenceResult",
    "build_reference_models",
    "camera_holdout",
    "export_camera",
    "load_camera_checkpoint",
    "main",
    "save_camera_checkpoint",
]

_log = logging.getLogger(__name__)

PATCH = 64  # camera training patch (px); the object fills the central half
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    settings: Settings, quick: bool, data_root: Path, extra: dict[str, str]
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


def _train_camera(
    images: Sequence[LabelledImage],
    settings: Settings,
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
        weights = class_weights(labels, len(CAMERA_CLASSES))
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
    report = accuracy_report(probs.argmax(dim=1).numpy(), labels, CAMERA_CLASSES)
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
    return digest, parity([probs.numpy(), emb.numpy()], [got.probs, got.embedding], str(path))


def save_camera_checkpoint(net: CameraNet, path: Path, settings: Settings, quick: bool) -> None:
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
        meta = lidar_metadata(settings, quick, data_root, {})
        lnet, holdout = train_lidar(sweeps, meta, settings, seed)
        seconds = time.perf_counter() - start
        meta = lidar_metadata(
            settings, quick, data_root, {"holdout_accuracy": json.dumps(holdout["accuracy"])}
        )
        path = out / "lidar.onnx"
        digest, diff = export_lidar(lnet, meta, path, sweeps[2].points)  # the nuScenes sweep
        save_lidar_checkpoint(lnet, out / "lidar.pt", settings, quick)
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
