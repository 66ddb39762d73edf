"""Fine-tune the current model of a job's kind on the label queue's boxes: a trainer that
follows the retrain worker's contract (``docs/loop.md``, :mod:`ingest_service.retrain.worker`).

::

    python -m ingest_service.training.finetune --models models/ --data data/ --job-dir DIR

1. reads ``DIR/job.json`` and ``DIR/labels.jsonl`` (:mod:`ingest_service.training.queue_data`):
   **camera** jobs take every labeled task's 2D boxes on each camera's image (class names:
   ours, KITTI's or nuScenes'; others are ignore regions); **LiDAR** jobs take the 3D boxes on
   the task's sweep as per-point labels (points in a box take its class, the rest background);
2. starts from the current model's torch weights (``models/camera.pt`` / ``models/lidar.pt``,
   written by ``make models`` beside the ONNX files) and fine-tunes on the queue's examples
   plus the bundled training data (so that it does not forget it);
3. scores the starting model and the fine-tuned one on the **holdout**, fixed and never
   trained on: for the camera the bundled holdout images (``CAMERA_HOLDOUT``), identified by
   the sha256 of their files (a queue image with a holdout image's bytes is left out); for
   LiDAR the held-out points of the bundled sweeps (the rear-left quadrant of the 360-degree
   sweeps, the left half of the KITTI ones), identified by the sha256 of the sweep files (a
   queue sweep with their bytes is left out, and the left half of every queue sweep is kept
   out of the loss, so that a copy of a bundled sweep cannot leak its held-out points);
4. exports ``DIR/<kind>.onnx`` with the metadata the edge runner reads, checks onnxruntime
   against torch (a mismatch fails the run, exit 1), and writes ``DIR/<kind>.pt`` and
   ``DIR/result.json``: ``succeeded`` when the holdout accuracy is not worse than the starting
   model's by more than ``--margin``, else ``rejected``.

Exit codes: 0 (a result written), 1 (training or the parity check failed), 2 (bad job: an
unknown kind, a missing input; the message names it).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from edge_agent.models.metadata import ModelMetadata
from ingest_service.errors import BlobStoreError
from ingest_service.training.queue_data import JobError, queue_images, queue_sweeps
from ingest_service.training.reference.common import FULL, QUICK
from ingest_service.training.reference.data import (
    CAMERA_HOLDOUT,
    camera_image_files,
    lidar_files,
    load_camera_images,
    load_lidar_sweeps,
)
from ingest_service.training.reference.train import (
    _camera_metadata,
    _train_camera,
    camera_holdout,
    export_camera,
    load_camera_checkpoint,
    save_camera_checkpoint,
)
from ingest_service.training.reference.train_lidar import (
    export_lidar,
    lidar_holdout,
    lidar_metadata,
    load_lidar_checkpoint,
    save_lidar_checkpoint,
    train_lidar,
)

__all__ = ["finetune", "finetune_camera", "finetune_lidar", "main"]

log = logging.getLogger(__name__)


def holdout_digests(data_root: Path) -> dict[str, str]:
    """sha256 of each holdout image file, by image name (the holdout's identity)."""
    files = camera_image_files(data_root)
    return {name: hashlib.sha256(files[name].read_bytes()).hexdigest() for name in CAMERA_HOLDOUT}


def finetune_camera(
    job_dir: Path,
    models: Path,
    data_root: Path,
    *,
    epochs: int = 5,
    margin: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the camera job in ``job_dir``; returns the result it wrote to ``result.json``."""
    spec, checkpoint = _spec(job_dir, "camera", models)
    start = time.perf_counter()
    digests = holdout_digests(data_root)
    queue = queue_images(Path(spec["labels_file"]), spec["blobs"], set(digests.values()))
    bundled = load_camera_images(data_root)
    held = [i for i in bundled if i.name in CAMERA_HOLDOUT]
    torch.manual_seed(seed)
    net, quick = load_camera_checkpoint(checkpoint)
    before = camera_holdout(net, held, seed)
    settings = QUICK if quick else FULL
    net, after = _train_camera(
        [*bundled, *queue.items], settings, seed, net=net, epochs=epochs, lr=1e-3
    )
    holdout_id = _digest(digests)
    extra = _lineage(after, holdout_id, checkpoint, spec, queue.tasks_used)
    meta = _versioned(_camera_metadata(settings, quick, data_root, extra), spec)
    version = meta.version
    digest, diff = export_camera(net, meta, job_dir / "camera.onnx", held[0].image)
    save_camera_checkpoint(net, job_dir / "camera.pt", settings, quick)
    return _result(
        spec,
        "camera",
        before["accuracy"],
        after["accuracy"],
        margin,
        version,
        f"holdout {holdout_id} accuracy {after['accuracy']} (before {before['accuracy']},"
        f" margin {margin}); {len(queue.items)} queue images from {queue.tasks_used} tasks"
        f" ({queue.skipped_holdout} holdout images left out); sha256 {digest[:12]};"
        f" parity {diff:.1e}; {time.perf_counter() - start:.1f} s",
        queue.tasks_used,
    )


def _lineage(
    after: Mapping[str, Any], holdout_id: str, checkpoint: Path, spec: Mapping[str, Any], used: int
) -> dict[str, str]:
    """What the fine-tuned model's metadata says about where it comes from."""
    return {
        "holdout_accuracy": json.dumps(after["accuracy"]),
        "holdout_id": holdout_id,
        "finetuned_from": str(checkpoint),
        "retrain_job": str(spec["job_id"]),
        "queue_labels_used": str(used),
    }


def _versioned(meta: ModelMetadata, spec: Mapping[str, Any]) -> ModelMetadata:
    """``meta`` with the version the edge sees: ``<base>-ft<job id>``."""
    return dataclasses.replace(meta, version=f"{meta.version}-ft{spec['job_id']}")


def _digest(files: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def _spec(job_dir: Path, kind: str, models: Path) -> tuple[dict[str, Any], Path]:
    spec: dict[str, Any] = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    if spec.get("kind") != kind:
        raise JobError(f"this trainer fine-tunes the {kind} model, not {spec.get('kind')!r}")
    checkpoint = models / f"{kind}.pt"
    if not checkpoint.exists():
        raise JobError(f"{checkpoint} missing: run `make models` (it writes {kind}.pt)")
    return spec, checkpoint


def finetune_lidar(
    job_dir: Path,
    models: Path,
    data_root: Path,
    *,
    steps: int = 60,
    margin: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the LiDAR job in ``job_dir``; returns the result it wrote to ``result.json``."""
    spec, checkpoint = _spec(job_dir, "lidar", models)
    start = time.perf_counter()
    digests = {
        str(p.relative_to(data_root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in lidar_files(data_root)
    }
    queue = queue_sweeps(Path(spec["labels_file"]), spec["blobs"], set(digests.values()))
    bundled = load_lidar_sweeps(data_root)
    torch.manual_seed(seed)
    net, quick = load_lidar_checkpoint(checkpoint)
    settings = QUICK if quick else FULL
    holdout_id = _digest(digests)
    meta = lidar_metadata(settings, quick, data_root, {})
    before = lidar_holdout(net, bundled, meta)
    net, after = train_lidar(
        [*bundled, *queue.items], meta, settings, seed, net=net, steps=steps, lr=1e-3,
        holdout=bundled,
    )  # fmt: skip
    extra = _lineage(after, holdout_id, checkpoint, spec, queue.tasks_used)
    meta = _versioned(lidar_metadata(settings, quick, data_root, extra), spec)
    version = meta.version
    sample = next(s for s in bundled if s.name == "nuscenes/LIDAR_TOP").points
    digest, diff = export_lidar(net, meta, job_dir / "lidar.onnx", sample)
    save_lidar_checkpoint(net, job_dir / "lidar.pt", settings, quick)
    return _result(
        spec,
        "lidar",
        before["accuracy"],
        after["accuracy"],
        margin,
        version,
        f"holdout {holdout_id} (held-out points of {len(bundled)} bundled sweeps) accuracy "
        f"{after['accuracy']} (before {before['accuracy']}, margin {margin}); "
        f"{len(queue.items)} queue sweeps from {queue.tasks_used} tasks "
        f"({queue.skipped_holdout} holdout sweeps left out); {steps} steps; sha256 "
        f"{digest[:12]}; parity {diff:.1e}; {time.perf_counter() - start:.1f} s",
        queue.tasks_used,
    )


def _result(
    spec: Mapping[str, Any],
    kind: str,
    before: float,
    after: float,
    margin: float,
    version: str,
    detail: str,
    labels_used: int,
) -> dict[str, Any]:
    result = {
        "status": "succeeded" if after >= before - margin else "rejected",
        "metric": after,
        "labels_used": labels_used,
        "model_version": version,
        "model_path": f"{kind}.onnx",
        "detail": detail,
    }
    Path(spec["result_file"]).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def finetune(
    job_dir: Path, models: Path, data_root: Path, *, epochs: int, steps: int, margin: float
) -> dict[str, Any]:
    """Run the job in ``job_dir`` with the trainer of its kind."""
    spec = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    kind = spec.get("kind")
    if kind == "camera":
        return finetune_camera(job_dir, models, data_root, epochs=epochs, margin=margin)
    if kind == "lidar":
        return finetune_lidar(job_dir, models, data_root, steps=steps, margin=margin)
    raise JobError(f"no fine-tuning trainer for a {kind!r} model (camera, lidar)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ingest_service.training.finetune", description=__doc__
    )
    p.add_argument("--job-dir", type=Path, required=True)
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--epochs", type=int, default=5, help="camera: epochs over the images")
    p.add_argument("--lidar-steps", type=int, default=60, help="LiDAR: optimiser steps")
    p.add_argument("--margin", type=float, default=0.0, help="accepted holdout accuracy loss")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, args.threads))
    try:
        result = finetune(
            args.job_dir,
            args.models,
            args.data,
            epochs=args.epochs,
            steps=args.lidar_steps,
            margin=args.margin,
        )
    except (JobError, KeyError, FileNotFoundError, BlobStoreError) as exc:
        print(f"finetune: bad job {args.job_dir}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"finetune: failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
