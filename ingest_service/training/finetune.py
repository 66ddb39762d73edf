"""Fine-tune the current camera model on the label queue's 2D boxes: a trainer that follows
the retrain worker's contract (``docs/loop.md``, :mod:`ingest_service.retrain.worker`).

::

    python -m ingest_service.training.finetune --models models/ --data data/ --job-dir DIR

1. reads ``DIR/job.json`` and ``DIR/labels.jsonl``; for every labeled task, the 2D boxes of
   each camera, with the camera image read from the blob store (``blobs.root``), become a
   training image (class names: ours, KITTI's or nuScenes'; others are ignore regions);
2. starts from the current model's torch weights (``models/camera.pt``, written by ``make
   models`` beside ``camera.onnx``) and fine-tunes on the queue's images plus the bundled
   training images (so that it does not forget them), a few epochs;
3. scores the starting model and the fine-tuned one on the **holdout**: the bundled holdout
   images (``CAMERA_HOLDOUT``), fixed, identified by the sha256 of their files, and never
   trained on: a queue image whose bytes are a holdout image's is left out of training;
4. exports ``DIR/camera.onnx`` with the metadata the edge runner reads, checks onnxruntime
   against torch (a mismatch fails the run, exit 1), and writes ``DIR/camera.pt`` and
   ``DIR/result.json``: ``succeeded`` when the holdout accuracy is not worse than the starting
   model's by more than ``--margin``, else ``rejected``.

Exit codes: 0 (a result written), 1 (training or the parity check failed), 2 (bad job: a
kind other than camera, a missing input; the message names it).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ingest_service.blobrefs import BlobRefs
from ingest_service.blobstore import LocalBlobStore
from ingest_service.errors import BlobStoreError
from ingest_service.training.reference.data import (
    _KITTI_CAMERA,
    _NUSC_CAMERA,
    CAMERA_CLASSES,
    CAMERA_HOLDOUT,
    IGNORE,
    LabelledImage,
    camera_image_files,
    load_camera_images,
)
from ingest_service.training.reference.train import (
    FULL,
    QUICK,
    _camera_metadata,
    _train_camera,
    camera_holdout,
    export_camera,
    load_camera_checkpoint,
    save_camera_checkpoint,
)

__all__ = ["JobError", "class_index", "finetune_camera", "main", "queue_images"]

log = logging.getLogger(__name__)


class JobError(ValueError):
    """The job's inputs are unusable (exit 2)."""


def class_index(name: str) -> int:
    """A box's class name -> the camera model's class index (``IGNORE`` if unknown)."""
    if name in CAMERA_CLASSES:
        return CAMERA_CLASSES.index(name)
    if name in _KITTI_CAMERA:
        return _KITTI_CAMERA[name]
    return _NUSC_CAMERA.get(name.lower(), IGNORE)


@dataclass(frozen=True, slots=True)
class QueueImages:
    images: list[LabelledImage]
    tasks_used: int
    skipped_holdout: int


def queue_images(
    labels_file: Path, blobs: Mapping[str, str], holdout_sha256: set[str]
) -> QueueImages:
    """The training images of the queue's labels (2D boxes per camera)."""
    if blobs.get("backend") != "local" or "root" not in blobs:
        raise JobError(f"only the local blob store is read here, got {dict(blobs)}")
    store = LocalBlobStore(blobs["root"])
    images: list[LabelledImage] = []
    used, skipped = 0, 0
    for line_no, line in enumerate(labels_file.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        boxes: dict[str, list[tuple[list[float], int]]] = {}
        for box in row["label"].get("boxes_2d", []):
            coords = [float(box["x1"]), float(box["y1"]), float(box["x2"]), float(box["y2"])]
            boxes.setdefault(str(box["camera"]), []).append(
                (coords, class_index(box["class_name"]))
            )
        task_used = False
        try:
            cameras = BlobRefs.from_json(row["blob_refs"]).cameras
        except (KeyError, ValueError) as exc:
            raise JobError(f"{labels_file} line {line_no}: blob_refs: {exc}") from exc
        for camera, items in boxes.items():
            blob = cameras.get(camera)
            if blob is None:
                log.warning(
                    "%s line %d: no image of camera %r among %s",
                    labels_file,
                    line_no,
                    camera,
                    sorted(cameras),
                )
                continue
            if blob.ref.sha256 in holdout_sha256:
                skipped += 1  # the holdout is never trained on
                continue
            data = store.get(blob.ref)
            rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)
            images.append(
                LabelledImage(
                    name=f"queue/{row['task_id']}/{camera}",
                    image=rgb,
                    boxes=np.asarray([c for c, _ in items], dtype=np.float32).reshape(-1, 4),
                    labels=np.asarray([k for _, k in items], dtype=np.int64),
                )
            )
            task_used = True
        used += task_used
    return QueueImages(images, used, skipped)


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
    """Run the job in ``job_dir``; returns the result it wrote to ``result.json``."""
    spec = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    if spec.get("kind") != "camera":
        raise JobError(f"this trainer fine-tunes the camera model, not {spec.get('kind')!r}")
    checkpoint = models / "camera.pt"
    if not checkpoint.exists():
        raise JobError(f"{checkpoint} missing: run `make models` (it writes camera.pt)")
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
        [*bundled, *queue.images], settings, seed, net=net, epochs=epochs, lr=1e-3
    )
    holdout_id = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]
    extra = {
        "holdout_accuracy": json.dumps(after["accuracy"]),
        "holdout_id": holdout_id,
        "finetuned_from": str(checkpoint),
        "retrain_job": str(spec["job_id"]),
        "queue_labels_used": str(queue.tasks_used),
    }
    meta = _camera_metadata(settings, quick, data_root, extra)
    version = f"{meta.version}-ft{spec['job_id']}"
    meta = dataclasses.replace(meta, version=version)
    digest, diff = export_camera(net, meta, job_dir / "camera.onnx", held[0].image)
    save_camera_checkpoint(net, job_dir / "camera.pt", settings, quick)
    better = after["accuracy"] >= before["accuracy"] - margin
    result = {
        "status": "succeeded" if better else "rejected",
        "metric": after["accuracy"],
        "labels_used": queue.tasks_used,
        "model_version": version,
        "model_path": "camera.onnx",
        "detail": (
            f"holdout {holdout_id} accuracy {after['accuracy']} (before {before['accuracy']},"
            f" margin {margin}); {len(queue.images)} queue images from {queue.tasks_used} tasks"
            f" ({queue.skipped_holdout} holdout images left out); sha256 {digest[:12]};"
            f" parity {diff:.1e}; {time.perf_counter() - start:.1f} s"
        ),
    }
    Path(spec["result_file"]).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ingest_service.training.finetune", description=__doc__
    )
    p.add_argument("--job-dir", type=Path, required=True)
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--margin", type=float, default=0.0, help="accepted holdout accuracy loss")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, args.threads))
    try:
        result = finetune_camera(
            args.job_dir, args.models, args.data, epochs=args.epochs, margin=args.margin
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
