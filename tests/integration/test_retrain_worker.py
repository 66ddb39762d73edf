"""The retrain worker runs the trainer as an external command (the documented contract) in a
subprocess: inputs written, outcome recorded, failures retried, a hung trainer killed at its
deadline. Against a real SQLite file and the real PostgreSQL server; the trainer is a small
script that follows the contract (it stands for any trainer, ours or a cluster job's)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest_service.blobstore import BlobRef
from ingest_service.queue import FrameRecord, LabelQueue
from ingest_service.registry import ModelRegistry
from ingest_service.retrain import JobState, JobStore, RetrainJob
from ingest_service.retrain.worker import TrainerCommand, work_once

pytestmark = pytest.mark.integration

TRAINER = textwrap.dedent(
    """
    import json, os, sys, time
    mode = sys.argv[1]
    job_dir = sys.argv[sys.argv.index("--job-dir") + 1]
    assert os.environ["FLEETAL_RETRAIN_JOB_DIR"] == job_dir
    spec = json.load(open(os.path.join(job_dir, "job.json")))
    rows = [json.loads(line) for line in open(spec["labels_file"])]
    print(f"training {spec['kind']} on {len(rows)} labels", flush=True)
    if mode == "crash":
        print("CUDA out of memory (pretend)", flush=True)
        sys.exit(3)
    if mode == "hang":
        open(os.path.join(job_dir, "pid"), "w").write(str(os.getpid()))
        time.sleep(600)
    if mode == "garbage":
        open(spec["result_file"], "w").write('{"status": "great"}')
        sys.exit(0)
    if mode.startswith("model-"):
        open(os.path.join(job_dir, "m.onnx"), "wb").write(mode.encode())
        json.dump({"status": "succeeded", "metric": float(mode[6:]), "labels_used": len(rows),
                   "model_path": "m.onnx"}, open(spec["result_file"], "w"))
        sys.exit(0)
    if mode == "missing-model":
        json.dump({"status": "succeeded", "labels_used": 1, "model_path": "nope.onnx"},
                  open(spec["result_file"], "w"))
        sys.exit(0)
    status = "rejected" if mode == "worse" else "succeeded"
    result = {"status": status, "metric": 0.81, "labels_used": len(rows),
              "model_version": f"{spec['kind']}-{spec['job_id']}",
              "detail": rows[0]["label"]["note"]}
    json.dump(result, open(spec["result_file"], "w"))
    """
)


@pytest.fixture
def queue(queue_db: str) -> Iterator[LabelQueue]:
    with LabelQueue.open(queue_db) as q:
        for seq in range(3):
            record = FrameRecord("veh", "d1", seq, seq, 0.5, "margin", {"camera": "1"})
            q.ingest_frame(record, {"CAM_FRONT": BlobRef(f"{seq:064x}", 10 + seq)})
            task = q.claim("alice", 60.0)
            assert task is not None
            q.submit_label(task.id, "alice", {"note": "three labels", "boxes": []})
        yield q


def _command(tmp_path: Path, mode: str) -> TrainerCommand:
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    return TrainerCommand(
        (sys.executable, str(script), mode), tmp_path / "work", {"backend": "local", "root": "b"}
    )


def test_a_successful_training_is_recorded_with_its_inputs(
    queue: LabelQueue, tmp_path: Path
) -> None:
    store = JobStore(queue.db)
    job, _ = store.enqueue("camera", "on demand", 3)
    (done,) = work_once(store, queue, ["camera", "lidar"], _command(tmp_path, "ok"), worker="w")
    assert done.state is JobState.SUCCEEDED
    assert (done.labels_used, done.model_version, done.detail) == (
        3,
        f"camera-{job.id}",
        "three labels",
    )
    assert done.metric == pytest.approx(0.81)
    job_dir = tmp_path / "work" / f"camera-{job.id}-1"
    spec = json.loads((job_dir / "job.json").read_text())
    assert (spec["kind"], spec["attempt"], spec["labels"]) == ("camera", 1, 3)
    first = json.loads((job_dir / "labels.jsonl").read_text().splitlines()[0])
    assert first["blob_refs"] == {"CAM_FRONT": {"sha256": "0" * 64, "size": 10}}
    assert "training camera on 3 labels" in (job_dir / "trainer.log").read_text()


def test_a_worse_model_is_recorded_as_rejected(queue: LabelQueue, tmp_path: Path) -> None:
    store = JobStore(queue.db)
    store.enqueue("lidar", "on demand", 3)
    (done,) = work_once(store, queue, ["lidar"], _command(tmp_path, "worse"), worker="w")
    assert done.state is JobState.REJECTED


def test_a_crashing_trainer_is_retried_then_failed_with_its_log(
    queue: LabelQueue, tmp_path: Path
) -> None:
    store = JobStore(queue.db)
    job, _ = store.enqueue("camera", "on demand", 3, max_attempts=2)
    (first,) = work_once(store, queue, ["camera"], _command(tmp_path, "crash"), worker="w")
    assert (first.state, first.attempts) == (JobState.QUEUED, 1)
    assert "trainer exited 3" in first.detail
    assert "CUDA out of memory" in first.detail
    (second,) = work_once(store, queue, ["camera"], _command(tmp_path, "crash"), worker="w")
    assert (second.id, second.state, second.attempts) == (job.id, JobState.FAILED, 2)
    assert store.failures_in_a_row("camera") == 1


def test_an_invalid_result_fails_the_attempt_naming_it(queue: LabelQueue, tmp_path: Path) -> None:
    store = JobStore(queue.db)
    store.enqueue("camera", "on demand", 3, max_attempts=1)
    (done,) = work_once(store, queue, ["camera"], _command(tmp_path, "garbage"), worker="w")
    assert done.state is JobState.FAILED
    assert "status must be 'succeeded' or 'rejected', got 'great'" in done.detail


def test_a_hung_trainer_is_killed_at_the_deadline(queue: LabelQueue, tmp_path: Path) -> None:
    store = JobStore(queue.db)
    job, _ = store.enqueue("camera", "on demand", 3, max_attempts=1, timeout_s=3.0)
    (done,) = work_once(store, queue, ["camera"], _command(tmp_path, "hang"), worker="w")
    assert done.state is JobState.FAILED
    assert "timed out" in done.detail
    pid = int((tmp_path / "work" / f"camera-{job.id}-1" / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed, and reaped


def test_a_trained_model_is_registered_and_promoted_only_when_not_worse(
    queue: LabelQueue, tmp_path: Path
) -> None:
    registry = ModelRegistry.embedded(tmp_path / "registry")
    store = JobStore(queue.db)

    def run(mode: str) -> RetrainJob:
        store.enqueue("camera", "on demand", 3)
        (done,) = work_once(
            store, queue, ["camera"], _command(tmp_path, mode), worker="w", registry=registry,
            margin=0.02,
        )  # fmt: skip
        return done

    first = run("model-0.70")
    assert first.state is JobState.SUCCEEDED, first.detail
    assert first.model_version == "fleetal-camera:1"
    assert "production (was none)" in first.detail
    v1 = registry.get("camera", 1)
    assert v1.tags["labels"] == "3"
    assert v1.tags["parent_version"] == "none"
    assert v1.tags["retrain_job"] == str(first.id)
    assert len(v1.tags["labels_digest"]) == 64
    level = run("model-0.69")  # within the margin
    assert level.state is JobState.SUCCEEDED
    worse = run("model-0.50")
    assert worse.state is JobState.REJECTED
    assert "worse than production 2's" in worse.detail
    production = registry.alias("camera", "production")
    assert production is not None
    assert production.version == 2
    assert registry.get("camera", 3).tags["parent_version"] == "2"


def test_a_result_naming_a_missing_model_fails_the_attempt(
    queue: LabelQueue, tmp_path: Path
) -> None:
    store = JobStore(queue.db)
    store.enqueue("camera", "on demand", 3, max_attempts=1)
    (done,) = work_once(store, queue, ["camera"], _command(tmp_path, "missing-model"), worker="w")
    assert done.state is JobState.FAILED
    assert "model_path 'nope.onnx' is not a file" in done.detail
