"""The retrain worker runs the trainer on a Ray cluster (``[retrain] runner = "ray"``): a real
local Ray head the test starts (loopback, token authentication), a real SQLite queue. The
trainer runs as a Ray task in a temporary job directory of its node; its result, its model
and its log come back to the local job directory; the job's deadline kills the driver and
Ray the task. The service's process is never a Ray driver, so a cluster that goes away fails
the attempt and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.ray.local import LocalRay
from ingest_service.blobstore import BlobRef
from ingest_service.queue import FrameRecord, LabelQueue
from ingest_service.retrain import JobState, JobStore
from ingest_service.retrain.ray_runner import RayTarget
from ingest_service.retrain.worker import TrainerCommand, work_once

pytestmark = pytest.mark.integration

TRAINER = """\
import json, os, sys, time
d = sys.argv[sys.argv.index('--job-dir') + 1]
spec = json.load(open(os.path.join(d, 'job.json')))
if spec['kind'] == 'lidar':
    time.sleep(600)  # a trainer that overruns its deadline
labels = open(spec['labels_file']).read().splitlines()
open(os.path.join(d, 'm.onnx'), 'wb').write(b'model bytes')
print('trained in', d, 'under', open('/proc/%d/cmdline' % os.getppid()).read().replace('\\0', ' '))
json.dump({'status': 'succeeded', 'metric': 0.5, 'labels_used': len(labels),
           'model_version': 'ray-1', 'model_path': 'm.onnx',
           'detail': 'job dir ' + d}, open(spec['result_file'], 'w'))
"""


@pytest.fixture(scope="module")
def ray_head() -> Iterator[LocalRay]:
    with LocalRay(num_cpus=1) as head:
        yield head


def _label(queue: LabelQueue, n: int) -> None:
    ref = {"camera/CAM_FRONT": BlobRef("0" * 64, 1)}
    for seq in range(n):
        queue.ingest_frame(FrameRecord("veh", "d1", seq, seq, 0.5, "margin", {"c": "1"}), ref)
        task = queue.claim("alice", 60.0)
        assert task is not None
        queue.submit_label(task.id, "alice", {"boxes_2d": [], "boxes_3d": []})


def test_the_trainer_runs_as_a_ray_task_and_its_outputs_come_back(
    ray_head: LocalRay, tmp_path: Path
) -> None:
    trainer = tmp_path / "trainer.py"
    trainer.write_text(TRAINER)
    target = RayTarget(ray_head.address, ray_head.token_file, num_cpus=1)
    command = TrainerCommand(
        (sys.executable, str(trainer)), tmp_path / "work", {"backend": "local"}, ray=target
    )
    with LabelQueue.open(tmp_path / "queue.db") as queue:
        _label(queue, 3)
        store = JobStore(queue.db)
        camera, _ = store.enqueue("camera", "on demand", 3, timeout_s=300)
        store.enqueue("lidar", "on demand", 3, timeout_s=8, max_attempts=1)
        done = work_once(store, queue, ["camera", "lidar"], command, worker="w")
    by_kind = {j.kind: j for j in done}
    ok = by_kind["camera"]
    assert ok.state is JobState.SUCCEEDED, ok.detail
    assert (ok.labels_used, ok.model_version) == (3, "ray-1")
    local = tmp_path / "work" / f"camera-{camera.id}-1"
    assert (local / "m.onnx").read_bytes() == b"model bytes"  # shipped back from the node
    remote_dir = ok.detail.removeprefix("job dir ")
    assert remote_dir != str(local)  # it ran in the task's own directory
    assert not Path(remote_dir).exists()  # removed with the task
    log = (local / "trainer.log").read_text()
    assert log.startswith("[ray driver] connected to ")
    assert "\n[ray node " in log  # the node's log follows the driver's
    assert "under ray::_train_on_node" in log  # the parent: the Ray worker running the task
    result = json.loads((local / "result.json").read_text())
    assert result["labels_used"] == 3
    late = by_kind["lidar"]
    assert late.state is JobState.FAILED  # one attempt, past its deadline: cancelled
    assert "timed out" in late.detail
    assert "[ray driver] connected to " in late.detail  # the end of the driver's log
    deadline = time.monotonic() + 15
    while _running(str(trainer)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(str(trainer))  # the overrunning trainer died with its task


def test_a_cluster_that_goes_away_fails_the_attempt_and_not_the_service(tmp_path: Path) -> None:
    """Regression: the worker used to ``ray.init`` in the service's own process, and when the
    cluster stopped Ray's core worker ended that process (the whole test run died with exit 1
    after this module). Now the driver is a subprocess: here a job runs on a head, the head
    stops, and the next job's attempt fails with the reason while this process goes on."""
    trainer = tmp_path / "trainer.py"
    trainer.write_text(TRAINER)
    with LabelQueue.open(tmp_path / "queue.db") as queue:
        _label(queue, 2)
        store = JobStore(queue.db)
        with LocalRay(num_cpus=1) as head:
            target = RayTarget(head.address, head.token_file, num_cpus=1)
            command = TrainerCommand(
                (sys.executable, str(trainer)), tmp_path / "work", {"backend": "local"}, target
            )
            store.enqueue("camera", "on demand", 2, timeout_s=300)
            (first,) = work_once(store, queue, ["camera"], command, worker="w")
            assert first.state is JobState.SUCCEEDED, first.detail
        time.sleep(2.0)  # before the fix, this process was gone by now
        store.enqueue("camera", "on demand", 2, timeout_s=60, max_attempts=1)
        started = time.monotonic()
        (second,) = work_once(store, queue, ["camera"], command, worker="w")
        assert time.monotonic() - started < 30  # refused at once, not after Ray's reconnects
    assert second.state is JobState.FAILED
    assert "trainer exited 3" in second.detail
    assert f"no Ray cluster answers at {head.address}" in second.detail
    assert "ray_address" in second.detail  # what to fix
    assert "ray" not in sys.modules  # nothing here imported Ray, let alone connected


def test_the_driver_refuses_a_command_line_without_a_job_dir() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "ingest_service.retrain.ray_runner", "--address", "x:1", "--", "t"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "--job-dir DIR" in run.stderr


def _running(needle: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(proc.name))
    return found
