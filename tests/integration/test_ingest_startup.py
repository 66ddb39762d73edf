"""The ingest service started before Kafka: it waits for the brokers, the API serves, and
``/healthz``, the metrics and ``ingest-service check`` say what is missing.

It used to exit 1 after 30 s with a ``KafkaTimeoutError`` traceback, taking the labeling API
down with it, while ``check`` printed ``broker: unreachable`` and then ``ok``, exit 0. The
session's broker is killed for the test and restarted (same port) half way through.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

from deploy.kafka.broker import LocalKafka
from ingest_service.config import load_ingest_config
from ingest_service.service import IngestService
from tests.integration.ingest_child import DEADLINE_S, frame_records, make_envelope, producer, send

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-0123456789abcdef"


def _healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _wait(what: str, cond: object) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_ingest_waits_for_kafka_and_serves_meanwhile(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    data = {
        "kafka": {"bootstrap_servers": [kafka.bootstrap], "topic": topic, "group_id": topic},
        "consumer": {"poll_timeout_ms": 200, "retry_initial_s": 0.2, "retry_max_s": 1.0},
        "queue": {"database": str(tmp_path / "queue.db")},
        "blobs": {"root": str(tmp_path / "blobs"), "fsync": False},
        "api": {"port": 0, "tokens_file": str(tmp_path / "tokens.toml")},
        "metrics": {"port": 0},
    }
    (tmp_path / "tokens.toml").write_text(f'"{TOKEN}" = "alice"\n')
    config_file = tmp_path / "ingest.toml"
    config_file.write_text(
        "\n".join(
            [
                "[kafka]",
                f'bootstrap_servers = ["{kafka.bootstrap}"]',
                f'topic = "{topic}"',
                "[queue]",
                f'database = "{tmp_path / "queue.db"}"',
                "[blobs]",
                f'root = "{tmp_path / "blobs"}"',
                "[api]",
                "enabled = false",
            ]
        )
        + "\n"
    )
    kafka.kill()
    try:
        check = subprocess.run(
            [sys.executable, "-m", "ingest_service.cli", "check", "--config", str(config_file)],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            cwd=ROOT,
        )
        assert check.returncode == 1, check.stdout + check.stderr
        assert f"broker: unreachable at {kafka.bootstrap}" in check.stderr
        assert "ingest-service check: ok" not in check.stdout

        service = IngestService(load_ingest_config(data=data), tokens={TOKEN: "alice"})
        service.start()
        try:
            ops = service.ops_port
            assert ops is not None
            time.sleep(3)
            threads = threading.active_count()
            time.sleep(10)  # longer than one bootstrap attempt: it used to give up here
            # kafka-python leaks a thread per client that fails to bootstrap: none are built
            assert threading.active_count() <= threads + 1
            assert service._consumer_thread is not None
            assert service._consumer_thread.is_alive(), "the consumer gave up"
            status, body = _healthz(ops)
            assert status == 503
            assert f"Kafka unreachable at {kafka.bootstrap}" in body
            assert _metric(ops, "fleetal_ingest_kafka_connected") == 0
            assert _metric(ops, "fleetal_ingest_kafka_connect_failures_total") >= 1
            api = httpx.get(
                f"http://127.0.0.1:{service.api_port}/v1/queue/stats",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            )
            assert api.status_code == 200, api.text  # the labeling API serves meanwhile

            kafka.restart(timeout_s=120)
            prod = producer(kafka.bootstrap)
            try:
                send(prod, topic, frame_records(make_envelope(0)))
            finally:
                prod.close(timeout=30)
            _wait("healthy once Kafka is up", lambda: _healthz(ops)[0] == 200)
            assert _metric(ops, "fleetal_ingest_kafka_connected") == 1
            _wait("the frame ingested", lambda: sum(service.queue_stats().values()) == 1)
        finally:
            service.request_stop()
            service.close()
        assert service.wait(0) == 0
    finally:
        if not kafka.running:
            kafka.restart(timeout_s=120)
