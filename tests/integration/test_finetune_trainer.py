"""The camera fine-tuning trainer, run by the retrain worker through the documented contract:
queue labels on real bundled images -> a fine-tuned ONNX the edge runner loads, scored on a
holdout it never trained on. Real queue (SQLite), real blob store, real torch and
onnxruntime; the reference models are built quick for the test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.models import RunnerConfig, load_model, read_metadata
from ingest_service.blobstore import LocalBlobStore
from ingest_service.queue import LabelQueue
from ingest_service.retrain import JobState, JobStore
from ingest_service.retrain.worker import TrainerCommand, work_once
from ingest_service.training.finetune import main as finetune
from ingest_service.training.queue_data import queue_sweeps
from ingest_service.training.reference.data import (
    CAMERA_CLASSES,
    CAMERA_HOLDOUT,
    IGNORE,
    LIDAR_CLASSES,
    load_camera_images,
    load_lidar_sweeps,
)
from tests.support.queue_labels import label_bundled_images, label_bundled_sweep

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"


@pytest.fixture
def models(quick_models: Path) -> Path:
    assert (quick_models / "camera.pt").exists()  # the weights a fine-tune starts from
    assert (quick_models / "lidar.pt").exists()
    return quick_models


def _trainer(models: Path, blobs: LocalBlobStore, tmp_path: Path) -> TrainerCommand:
    return TrainerCommand(
        (
            sys.executable, "-m", "ingest_service.training.finetune",
            "--models", str(models), "--data", str(DATA), "--epochs", "1",
            "--lidar-steps", "3", "--margin", "1.0",
        ),
        tmp_path / "work",
        {"backend": "local", "root": str(blobs.root)},
    )  # fmt: skip


def test_the_worker_fine_tunes_the_camera_model_on_queue_labels(
    models: Path, tmp_path: Path
) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    train_names = ["nuscenes/CAM_FRONT", "kitti/000000", CAMERA_HOLDOUT[1]]
    with LabelQueue.open(tmp_path / "queue.db") as queue:
        label_bundled_images(queue, blobs, train_names)
        store = JobStore(queue.db)
        job, _ = store.enqueue("camera", "on demand", 3, timeout_s=600)
        (done,) = work_once(store, queue, ["camera"], _trainer(models, blobs, tmp_path), worker="w")
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


def test_the_worker_fine_tunes_the_lidar_model_on_queue_3d_boxes(
    models: Path, tmp_path: Path
) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    with LabelQueue.open(tmp_path / "queue.db") as queue:
        boxes = label_bundled_sweep(queue, blobs)
        store = JobStore(queue.db)
        job, _ = store.enqueue("lidar", "on demand", 1, timeout_s=600)
        (done,) = work_once(store, queue, ["lidar"], _trainer(models, blobs, tmp_path), worker="w")
    assert boxes > 10
    assert done.state is JobState.SUCCEEDED, done.detail
    assert done.labels_used == 1
    assert "1 queue sweeps from 1 tasks" in done.detail
    assert "held-out points of 6 bundled sweeps" in done.detail
    assert done.model_version is not None
    assert done.model_version.endswith(f"-ft{job.id}")
    onnx_path = tmp_path / "work" / f"lidar-{job.id}-1" / "lidar.onnx"
    meta = read_metadata(onnx_path)
    assert (meta.kind, meta.version) == ("lidar", done.model_version)
    model = load_model(onnx_path, config=RunnerConfig(providers=("cpu",)))
    sweep = next(s for s in load_lidar_sweeps(DATA) if s.name == "nuscenes/LIDAR_TOP")
    assert model.score(sweep.points).probs.shape[-1] == len(LIDAR_CLASSES)


def test_queue_sweeps_label_the_points_in_each_box_and_hold_out_the_left_half(
    tmp_path: Path,
) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    with LabelQueue.open(tmp_path / "queue.db") as queue:
        label_bundled_sweep(queue, blobs)
        labels = tmp_path / "labels.jsonl"
        rows = [
            {"task_id": item.task_id, "label": item.payload, "blob_refs": {
                k: {"sha256": r.sha256, "size": r.size} for k, r in item.frame.blob_refs.items()
            }}
            for item in queue.export_labeled()
        ]  # fmt: skip
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (sweep,) = queue_sweeps(labels, {"backend": "local", "root": str(blobs.root)}, set()).items
    bundled = next(s for s in load_lidar_sweeps(DATA) if s.name == "nuscenes/LIDAR_TOP")
    assert len(sweep.points) == len(bundled.points)
    # the same boxes as the bundled labels (quantised to 1 mm on the wire), ignore regions aside
    same = (sweep.labels == bundled.labels) | (bundled.labels == IGNORE)
    assert same.mean() > 0.999
    assert (sweep.labels > 0).sum() > 100
    assert np.array_equal(sweep.holdout, sweep.points[:, 1] > 0)


def test_a_job_for_an_unknown_kind_is_refused_with_exit_2(models: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "job.json").write_text(json.dumps({"kind": "radar", "job_id": 1}))
    assert finetune(["--job-dir", str(job_dir), "--models", str(models)]) == 2
    (job_dir / "job.json").write_text(json.dumps({"kind": "lidar", "job_id": 1}))
    assert finetune(["--job-dir", str(job_dir), "--models", str(tmp_path / "none")]) == 2
