"""The retrain scheduler inside ``ingest-service``: at start it takes back the job a previous
process left running, then queues jobs by policy; /metrics reports them; the CLI queues and
lists jobs. Against a real SQLite file (the consumer has no broker here and keeps retrying:
the scheduler does not depend on it)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import httpx

from deploy.kafka.broker import LocalKafka
from edge_agent.models.hotswap import ModelSlot
from edge_agent.models.runner import RunnerConfig, load_model
from edge_agent.rollout import ModelRollout
from ingest_service.api import ApiServer, create_app
from ingest_service.blobstore import BlobRef, LocalBlobStore
from ingest_service.config import load_ingest_config
from ingest_service.queue import FrameRecord, LabelQueue, connect
from ingest_service.registry import ModelRegistry
from ingest_service.retrain import JobState, JobStore, RetrainPolicy
from ingest_service.service import IngestService
from schemas.signing import generate_keypair, load_public_key
from tests.support.ports import free_port
from tests.support.rollout_listener import listening
from tests.support.tiny_models import build_lidar, lidar_props
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CPU = RunnerConfig(providers=("CPUExecutionProvider",))
DEADLINE_S = 60.0


def _label(queue: LabelQueue, n: int) -> None:
    ref = {"camera": BlobRef("0" * 64, 1)}
    for seq in range(n):
        record = FrameRecord("veh", "d1", seq, seq, 0.5, "margin", {"camera": "1"})
        queue.ingest_frame(record, ref)
        task = queue.claim("alice", 60.0)
        assert task is not None
        queue.submit_label(task.id, "alice", {"boxes": []})


def _config(tmp_path: Path) -> dict[str, object]:
    return {
        "kafka": {"bootstrap_servers": [f"127.0.0.1:{free_port()}"], "topic": "t"},
        "consumer": {"retry_initial_s": 0.2, "retry_max_s": 1.0},
        "queue": {"database": str(tmp_path / "queue.db")},
        "blobs": {"root": str(tmp_path / "blobs"), "fsync": False},
        "api": {"enabled": False},
        "metrics": {"port": 0},
        "retrain": {
            "enabled": True,
            "tick_s": 0.2,
            "camera": {"every_labels": 3, "min_interval_s": 0.0},
            "lidar": {"every_labels": 3, "min_interval_s": 0.0},
        },
    }


def _wait(what: str, ok: Callable[[], object], timeout_s: float = DEADLINE_S) -> None:
    wait_until(what, ok, timeout_s, interval_s=0.1)


def test_the_service_recovers_then_schedules_and_reports(tmp_path: Path) -> None:
    db_path = tmp_path / "queue.db"
    with LabelQueue.open(db_path) as queue:
        _label(queue, 4)
        store = JobStore(queue.db)
        left, _ = store.enqueue("camera", "on demand", 0)
        assert store.start("camera", "a-process-that-died") is not None

    service = IngestService(load_ingest_config(data=_config(tmp_path)))
    service.start()
    try:
        with connect(db_path) as db:
            watcher = JobStore(db)
            camera = watcher.get(left.id)
            assert camera.state is JobState.QUEUED  # taken back at start, not run twice
            assert "restart" in camera.detail
            _wait("the lidar job queued by policy", lambda: watcher.active("lidar") is not None)
            lidar = watcher.active("lidar")
            assert lidar is not None
            assert (lidar.trigger, lidar.labels_at) == ("4 new labels", 4)
            assert watcher.active("camera") == watcher.get(left.id)  # still the one job
        body = urllib.request.urlopen(
            f"http://127.0.0.1:{service.ops_port}/metrics", timeout=30
        ).read()
        assert b'fleetal_ingest_retrain_jobs{kind="camera",state="queued"} 1.0' in body
        assert b'fleetal_ingest_retrain_jobs{kind="lidar",state="queued"} 1.0' in body
        assert b'fleetal_ingest_retrain_jobs{kind="lidar",state="failed"} 0.0' in body
    finally:
        service.close()


def test_the_cli_queues_once_and_lists(tmp_path: Path) -> None:
    config = tmp_path / "ingest.toml"
    config.write_text(f'[queue]\ndatabase = "{tmp_path / "queue.db"}"\n')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ingest_service.cli", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            cwd=ROOT,
        )

    first = cli("retrain-request", "--kind", "lidar")
    assert first.returncode == 0, first.stderr
    assert "queued retrain job 1 for lidar" in first.stdout
    again = cli("retrain-request", "--kind", "lidar", "--reason", "new sensor")
    assert again.returncode == 0, again.stderr
    assert "already has retrain job 1 (queued)" in again.stdout
    listed = cli("retrain-jobs")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["id"], r["kind"], r["state"], r["trigger"]) for r in rows] == [
        (1, "lidar", "queued", "on demand")
    ]
    bad = cli("retrain-request", "--kind", "radar")
    assert bad.returncode == 2


def test_the_api_queues_a_retrain_on_demand_and_lists_jobs(queue_db: str, tmp_path: Path) -> None:
    token = {"Authorization": "Bearer tok-0123456789abcdef"}
    with LabelQueue.open(queue_db) as queue:
        _label(queue, 2)
        app = create_app(
            queue,
            LocalBlobStore(tmp_path / "blobs", fsync=False),
            tokens={"tok-0123456789abcdef": "alice"},
            retrain_policies=[RetrainPolicy("camera"), RetrainPolicy("lidar")],
        )
        bare = create_app(
            queue, LocalBlobStore(tmp_path / "b2", fsync=False), tokens={"tok-x" * 4: "bob"}
        )
        with ApiServer(app, port=0) as server, httpx.Client(base_url=server.url) as client:
            first = client.post("/v1/retrain/camera", headers=token)
            assert first.status_code == 202, first.text
            body = first.json()
            assert body["created"] is True
            assert body["job"]["trigger"] == "on demand by alice"
            assert body["job"]["labels_at"] == 2
            again = client.post("/v1/retrain/camera", headers=token)
            assert again.status_code == 200
            assert again.json() == {"job": body["job"], "created": False}
            assert client.post("/v1/retrain/radar", headers=token).status_code == 422
            assert client.post("/v1/retrain/camera").status_code == 401
            jobs = client.get("/v1/retrain/jobs", params={"kind": "camera"}, headers=token)
            assert jobs.status_code == 200
            assert [j["id"] for j in jobs.json()] == [body["job"]["id"]]
        with ApiServer(bare, port=0) as server, httpx.Client(base_url=server.url) as client:
            off = client.post(
                "/v1/retrain/lidar", headers={"Authorization": "Bearer " + "tok-x" * 4}
            )
            assert off.status_code == 404
            assert "not configured" in off.text


def test_the_service_runs_the_trainer_command_for_a_due_job(tmp_path: Path) -> None:
    trainer = tmp_path / "trainer.py"
    trainer.write_text(
        "import json, sys\n"
        "d = sys.argv[sys.argv.index('--job-dir') + 1]\n"
        "spec = json.load(open(d + '/job.json'))\n"
        "json.dump({'status': 'succeeded', 'metric': 0.7, 'labels_used': spec['labels'],"
        " 'model_version': spec['kind'] + '-2'}, open(spec['result_file'], 'w'))\n"
    )
    with LabelQueue.open(tmp_path / "queue.db") as queue:
        _label(queue, 3)
    data = _config(tmp_path)
    retrain = data["retrain"]
    assert isinstance(retrain, dict)
    retrain["command"] = [sys.executable, str(trainer)]
    retrain["work_dir"] = str(tmp_path / "work")
    service = IngestService(load_ingest_config(data=data))
    service.start()
    try:
        with connect(tmp_path / "queue.db") as db:
            store = JobStore(db)

            def both_trained() -> bool:
                done = [store.last_finished(k) for k in ("camera", "lidar")]
                return all(j is not None and j.state is JobState.SUCCEEDED for j in done)

            _wait("both kinds trained by the worker", both_trained)
            camera = store.last_finished("camera")
            assert camera is not None
            assert (camera.labels_used, camera.model_version) == (3, "camera-2")
        body = urllib.request.urlopen(
            f"http://127.0.0.1:{service.ops_port}/metrics", timeout=30
        ).read()
        assert b'fleetal_ingest_retrain_last_metric{kind="camera"} 0.7' in body
        assert b'fleetal_ingest_retrain_last_labels_used{kind="lidar"} 3.0' in body
    finally:
        service.close()


def test_the_centre_closes_the_loop_labels_to_a_signed_model_on_the_fleet_topic(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    """Labels in the queue -> a due job -> the trainer -> the registry (promoted) -> published,
    signed, on the real broker -> an agent's rollout swaps to it."""
    generate_keypair(tmp_path / "centre.pem", tmp_path / "fleet.pub.pem")
    model = build_lidar(
        tmp_path / "trained.onnx", props=lidar_props(version="tiny-lidar-7", name="tiny-lidar")
    )
    trainer = tmp_path / "trainer.py"
    trainer.write_text(
        "import json, shutil, sys\n"
        "d = sys.argv[sys.argv.index('--job-dir') + 1]\n"
        "spec = json.load(open(d + '/job.json'))\n"
        f"shutil.copy({str(model)!r}, d + '/m.onnx')\n"
        "json.dump({'status': 'succeeded', 'metric': 0.8, 'labels_used': spec['labels'],"
        " 'model_path': 'm.onnx'}, open(spec['result_file'], 'w'))\n"
    )
    with LabelQueue.open(tmp_path / "queue.db") as queue:
        _label(queue, 3)
    data = _config(tmp_path)
    data["kafka"] = {"bootstrap_servers": [kafka.bootstrap], "topic": f"{topic}-frames"}
    data["retrain"] = {
        "enabled": True,
        "tick_s": 0.2,
        "command": [sys.executable, str(trainer)],
        "work_dir": str(tmp_path / "work"),
        "camera": {"every_labels": 1000},
        "lidar": {"every_labels": 3, "min_interval_s": 0.0},
    }
    data["registry"] = {"data_dir": str(tmp_path / "registry")}
    data["rollout"] = {
        "topic": topic,
        "signing_key": str(tmp_path / "centre.pem"),
        "auto_publish": True,
        "max_message_bytes": 4096,
    }
    service = IngestService(load_ingest_config(data=data))
    service.start()
    v1 = build_lidar(tmp_path / "v1.onnx")
    slot = ModelSlot(load_model(v1, config=CPU), config=CPU)
    rollout = ModelRollout({"lidar": slot}, tmp_path / "models", keep=[v1])
    rollout.public_key = load_public_key(tmp_path / "fleet.pub.pem")
    try:
        with listening(rollout, kafka.bootstrap, topic, "edge-veh-loop"):
            _wait(
                "the agent running the retrained model",
                lambda: slot.current.metadata.version == "tiny-lidar-7",
                timeout_s=120,
            )
        body = urllib.request.urlopen(
            f"http://127.0.0.1:{service.ops_port}/metrics", timeout=30
        ).read()
        assert b'fleetal_ingest_models_published_total{kind="lidar",result="ok"} 1.0' in body
    finally:
        service.close()
    registry = ModelRegistry.embedded(tmp_path / "registry")
    production = registry.alias("lidar", "production")
    assert production is not None
    assert production.version == 1
    assert production.tags["labels"] == "3"
