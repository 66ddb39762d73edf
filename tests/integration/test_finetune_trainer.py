"""The camera fine-tuning trainer, run by the retrain worker through the documented contract:
queue labels on real bundled images -> a fine-tuned ONNX the edge runner loads, scored on a
holdout it never trained on. Real queue (SQLite), real blob store, real torch and
onnxruntime; the reference models are built quick for the test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edge_agent.models import RunnerConfig, load_model, read_metadata
from ingest_service.blobstore import LocalBlobStore
from ingest_service.queue import LabelQueue
from ingest_service.retrain import JobState, JobStore
from ingest_service.retrain.worker import TrainerCommand, work_once
from ingest_service.training.finetune import main as finetune
from ingest_service.training.reference.data import (
    CAMERA_CLASSES,
    CAMERA_HOLDOUT,
    load_camera_images,
)
from tests.support.queue_labels import label_bundled_images

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"


@pytest.fixture
def models(quick_camera_models: Path) -> Path:
    assert (quick_camera_models / "camera.pt").exists()  # the weights a fine-tune starts from
    return quick_camera_models


def test_the_worker_fine_tunes_the_camera_model_on_queue_labels(
    models: Path, tmp_path: Path
) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    train_names = ["nuscenes/CAM_FRONT", "kitti/000000", CAMERA_HOLDOUT[1]]
    with LabelQueue.open(tmp_path / "queue.db") as queue:
        label_bundled_images(queue, blobs, train_names)
        store = JobStore(queue.db)
        job, _ = store.enqueue("camera", "on demand", 3, timeout_s=600)
        command = TrainerCommand(
            (
                sys.executable, "-m", "ingest_service.training.finetune",
                "--models", str(models), "--data", str(DATA), "--epochs", "1",
                "--margin", "1.0",
            ),
            tmp_path / "work",
            {"backend": "local", "root": str(blobs.root)},
        )  # fmt: skip
        (done,) = work_once(store, queue, ["camera"], command, worker="w")
    assert done.state is JobState.SUCCEEDED, done.detail
    assert done.labels_used == 2  # the holdout image from the queue was left out
    assert "1 holdout images left out" in done.detail
    assert done.model_version is not None
    assert done.model_version.endswith(f"-ft{job.id}")
    assert done.metric is not None
    assert 0.0 <= done.metric <= 1.0
    onnx_path = tmp_path / "work" / f"camera-{job.id}-1" / "camera.onnx"
    meta = read_metadata(onnx_path)
    assert meta.version == done.model_version
    assert meta.extra["retrain_job"] == str(job.id)
    model = load_model(onnx_path, config=RunnerConfig(providers=("cpu",)))
    image = load_camera_images(DATA)[0].image
    out = model.score(image)
    assert out.probs.shape[-1] == len(CAMERA_CLASSES)


def test_a_job_for_another_kind_is_refused_with_exit_2(models: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "job.json").write_text(json.dumps({"kind": "lidar", "job_id": 1}))
    assert finetune(["--job-dir", str(job_dir), "--models", str(models)]) == 2
