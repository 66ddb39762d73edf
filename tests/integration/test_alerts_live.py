"""An alert driven to firing and back on the real system: a real Prometheus (the shipped
alerts.yml) scrapes a running edge-agent daemon and a running ingest service whose retrain runs
fail; after the third failure in a row FleetalRetrainFailing fires, and once a run trains again
it resolves. The agent's series (with its vehicle label) are in the same Prometheus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.prometheus.local import LocalPrometheus
from ingest_service.blobstore import BlobRef
from ingest_service.config import load_ingest_config
from ingest_service.queue import FrameRecord, LabelQueue
from ingest_service.service import IngestService
from tests.support.agent_process import REPO, spawn_agent
from tests.support.ports import free_port
from tests.support.tiny_models import build_camera, build_lidar
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TRAINER = """\
import json, os, sys
d = sys.argv[sys.argv.index('--job-dir') + 1]
spec = json.load(open(os.path.join(d, 'job.json')))
if os.path.exists({flag!r}):
    sys.exit('a trainer that fails while the flag file exists')
json.dump({{'status': 'succeeded', 'metric': 0.5, 'labels_used': spec['labels'],
           'model_version': None, 'detail': 'trained'}}, open(spec['result_file'], 'w'))
"""
FIRING = 'ALERTS{alertname="FleetalRetrainFailing", alertstate="firing", kind="camera"}'


def _wait(what: str, ok: Callable[[], object], timeout_s: float = 90.0) -> None:
    wait_until(what, ok, timeout_s, interval_s=0.5)


def _agent(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """An edge-agent daemon on tiny models, its broker away (it keeps running and serving)."""
    port = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        "\n".join(
            [
                "[agent]",
                'vehicle_id = "veh-live"',
                f'data_dir = "{tmp_path / "agent"}"',
                "drain_timeout_s = 1.0",
                "[source]",
                f'path = "{tmp_path / "bridge"}"',
                "[models]",
                f'camera = "{build_camera(tmp_path / "camera.onnx")}"',
                f'lidar = "{build_lidar(tmp_path / "lidar.onnx")}"',
                "[kafka]",
                f'bootstrap_servers = ["127.0.0.1:{free_port()}"]',
                "bootstrap_timeout_ms = 1000",
                "max_block_ms = 1000",
                "[metrics]",
                f"port = {port}",
                "",
            ]
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return spawn_agent(cfg, env, tmp_path / "agent.log"), port


def test_the_retrain_failure_alert_fires_and_resolves(tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    flag.write_text("fail\n")
    trainer = tmp_path / "trainer.py"
    trainer.write_text(TRAINER.format(flag=str(flag)))
    with LabelQueue.open(tmp_path / "queue.db") as queue:
        queue.ingest_frame(
            FrameRecord("veh", "d1", 0, 0, 0.5, "margin", {"camera": "1"}),
            {"camera/CAM_FRONT": BlobRef("0" * 64, 1)},
        )
        task = queue.claim("alice", 60.0)
        assert task is not None
        queue.submit_label(task.id, "alice", {"boxes_2d": []})
    ops_port = free_port()
    cfg = load_ingest_config(
        data={
            "kafka": {"bootstrap_servers": [f"127.0.0.1:{free_port()}"], "topic": "t"},
            "queue": {"database": str(tmp_path / "queue.db")},
            "blobs": {"root": str(tmp_path / "blobs"), "fsync": False},
            "api": {"enabled": False},
            "metrics": {"port": ops_port},
            "retrain": {
                "enabled": True,
                "tick_s": 0.2,
                "command": [sys.executable, str(trainer)],
                "work_dir": str(tmp_path / "work"),
                # a failed run trained nothing: its label stays new, so the next run is due
                "camera": {"every_labels": 1, "min_interval_s": 0.0, "max_attempts": 1},
                "lidar": {"every_labels": 1000},
            },
        }
    )
    service = IngestService(cfg)
    service.start()
    agent, agent_port = _agent(tmp_path)
    targets = {
        f"127.0.0.1:{ops_port}": {"instance": "centre"},
        f"127.0.0.1:{agent_port}": {"instance": "vehicle", "vehicle": "veh-live"},
    }
    try:
        with LocalPrometheus(targets) as prom:
            prom.wait_for('up{instance="centre"} == 1')
            prom.wait_for('up{instance="vehicle", vehicle="veh-live"} == 1', timeout_s=90)
            assert prom.wait_for('fleetal_edge_selection_target_rate{vehicle="veh-live"}')
            _wait("the third failure in a row", lambda: prom.query(
                'fleetal_ingest_retrain_consecutive_failures{kind="camera"} >= 3'))  # fmt: skip
            _wait("the alert firing", lambda: prom.query(FIRING))
            (alert,) = prom.query(FIRING)
            assert alert["metric"]["severity"] == "warning"
            flag.unlink()  # the trainer works again: the next run trains
            _wait("a run that trained", lambda: prom.query(
                'fleetal_ingest_retrain_consecutive_failures{kind="camera"} == 0'))  # fmt: skip
            _wait("the alert resolved", lambda: not prom.query(FIRING))
    finally:
        service.close()
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(10)
