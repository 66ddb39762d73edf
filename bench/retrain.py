"""What one turn of the centre's loop costs: a retrain job from queue labels to production.

Run from the repository root (``make bench`` runs it; it needs ``models/camera.pt`` from
``make models``): ``.venv/bin/python -m bench.retrain [--epochs N]``.

Four bundled camera images (nuScenes CAM_FRONT and CAM_FRONT_LEFT, KITTI 000000 and 000002)
become labeled tasks of a fresh SQLite label queue, with their own boxes as labels; the retrain
worker then runs the real trainer (``python -m ingest_service.training.finetune``, FULL
reference camera model, ``--epochs``) and registers and promotes the result in a fresh
embedded MLflow registry. Printed: seconds to open the registry, seconds of the job (trainer
subprocess: fine-tune, export, parity check; then register and promote), the trainer's own
seconds from its detail, and the job's outcome. The four images are bundled training images,
so the holdout accuracy is not expected to move: this measures cost, not quality.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from ingest_service.blobstore import LocalBlobStore
from ingest_service.queue import LabelQueue
from ingest_service.registry import ModelRegistry
from ingest_service.retrain import JobStore
from ingest_service.retrain.worker import TrainerCommand, work_once
from tests.support.queue_labels import label_bundled_images

NAMES = ["nuscenes/CAM_FRONT", "nuscenes/CAM_FRONT_LEFT", "kitti/000000", "kitti/000002"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrain", description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    if not (args.models / "camera.pt").exists():
        print(f"{args.models / 'camera.pt'} missing: run `make models`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        blobs = LocalBlobStore(tmp / "blobs", fsync=False)
        with LabelQueue.open(tmp / "queue.db") as queue:
            label_bundled_images(queue, blobs, NAMES)
            store = JobStore(queue.db)
            store.enqueue("camera", "bench", len(NAMES), timeout_s=3600)
            command = TrainerCommand(
                (
                    sys.executable, "-m", "ingest_service.training.finetune",
                    "--models", str(args.models), "--data", "data",
                    "--epochs", str(args.epochs),
                ),
                tmp / "work",
                {"backend": "local", "root": str(blobs.root)},
            )  # fmt: skip
            start = time.perf_counter()
            registry = ModelRegistry.embedded(tmp / "registry")
            opened = time.perf_counter()
            (job,) = work_once(store, queue, ["camera"], command, worker="bench", registry=registry)
            done = time.perf_counter()
    print(f"{len(NAMES)} labeled tasks, FULL camera model, {args.epochs} epochs")
    print(f"registry opened (embedded, fresh) in {opened - start:.1f} s")
    print(f"job: trainer subprocess + register + promote in {done - opened:.1f} s")
    print(f"outcome: {job.state.value}, holdout {job.metric}, {job.model_version}")
    print(f"detail: {job.detail}")
    return 0 if job.state.value == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
