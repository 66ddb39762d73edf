"""The ingest consumer against a real broker, into SQLite and into a real PostgreSQL.

Frames are built and sent the way the vehicle does (real nuScenes JPEGs and LiDAR sweep,
``schemas.wire.encode``, 900 kB chunks keyed by frame key, ``acks=all``). Every waiting loop
is bounded and fails with a message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from deploy.kafka.broker import LocalKafka
from ingest_service.blobstore import BlobRef, BlobStore, LocalBlobStore, open_blob_store
from ingest_service.config import IngestConfig, load_ingest_config
from ingest_service.consumer import IngestConsumer, QueueFactory, queue_opener
from ingest_service.errors import DatabaseError
from ingest_service.metrics import IngestMetrics
from ingest_service.queue import LabelQueue
from schemas import wire
from schemas.wire import decode_frame, encode
from tests.integration.ingest_child import (
    DEADLINE_S,
    chunks_of,
    frame_records,
    make_envelope,
    producer,
    send,
)
from tests.support.notify_socket import notify_listener

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database(queue_db: str) -> str:
    """A fresh label-queue database of each backend (``queue_db`` in conftest.py)."""
    return queue_db


def make_config(
    kafka: LocalKafka, topic: str, database: str, blob_root: Path, **reassembly: Any
) -> IngestConfig:
    return load_ingest_config(
        data={
            "kafka": {
                "bootstrap_servers": [kafka.bootstrap],
                "topic": topic,
                "group_id": f"g-{topic}",
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
                "max_poll_records": 16,
            },
            "consumer": {"poll_timeout_ms": 200, "retry_initial_s": 0.1, "lag_interval_s": 0.5},
            "queue": {"database": database},
            "blobs": {"root": str(blob_root), "fsync": False},
            "reassembly": {"timeout_s": 60.0, **reassembly},
        }
    )


_RUNNING: list[Running] = []


@pytest.fixture(autouse=True)
def _stop_leftover_consumers() -> Iterator[None]:
    """A failed test must not leave its consumer thread polling into the next one."""
    yield
    while _RUNNING:
        running = _RUNNING.pop()
        running.stop_event.set()
        running.thread.join(DEADLINE_S)


class Running:
    """An IngestConsumer on a thread."""

    def __init__(
        self,
        cfg: IngestConfig,
        queue_factory: QueueFactory | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        _RUNNING.append(self)
        self.registry = CollectorRegistry()
        self.consumer = IngestConsumer(
            cfg,
            queue_factory=queue_factory or queue_opener(cfg),
            # the configured backend (fsync off in make_config)
            blobs=blobs if blobs is not None else open_blob_store(cfg),
            metrics=IngestMetrics(self.registry),
        )
        assert self.consumer.metrics is not None
        self.consumer.metrics.watch_lag(self.consumer.lag_snapshot)
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.consumer.run(self.stop_event)
        except BaseException as exc:
            self.error = exc
            raise

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive(), "consumer did not stop within the deadline"
        assert self.error is None, f"consumer crashed: {self.error!r}"

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def wait_for(what: str, cond: Callable[[], bool], running: Running | None = None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        if running is not None and running.error is not None:
            raise AssertionError(f"consumer crashed while waiting for {what}: {running.error!r}")
        assert time.monotonic() < deadline, f"timed out after {DEADLINE_S:.0f} s waiting for {what}"
        time.sleep(0.2)


def task_count(database: str) -> int:
    with LabelQueue.open(database) as q:
        return sum(q.stats().values())


def committed_all(kafka: LocalKafka, topic: str, group: str) -> bool:
    """Whether the group's committed offsets reached the end of every partition of ``topic``."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        ends = consumer.end_offsets(tps)
        return all((consumer.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        consumer.close(autocommit=False)


def read_dlq(kafka: LocalKafka, dlq: str, expected: int) -> list[Any]:
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        parts = consumer.partitions_for_topic(dlq) or {0}
        consumer.assign([TopicPartition(dlq, p) for p in parts])
        out: list[Any] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(out) < expected:
            assert time.monotonic() < deadline, f"{len(out)} of {expected} dead letters arrived"
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        for records in consumer.poll(timeout_ms=1000).values():  # nothing more should come
            out.extend(records)
        return out
    finally:
        consumer.close()


def headers(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


# --- tests -----------------------------------------------------------------------------------


def test_every_frame_twice_and_a_restart_give_one_task_per_frame(
    kafka: LocalKafka, topic: str, database: str, tmp_path: Path
) -> None:
    cfg = make_config(kafka, topic, database, tmp_path / "blobs")
    kafka.create_topic(cfg.kafka.dlq, partitions=1)
    envelopes = [make_envelope(seq, vehicle=f"veh-{seq % 3:04d}") for seq in range(12)]
    records = {env.key: frame_records(env) for env in envelopes}
    assert all(len(r) == 2 for r in records.values()), "a frame should span two chunks"
    prod = producer(kafka.bootstrap)
    try:
        # First half, each frame twice (a vehicle re-sending after a crash)
        first = envelopes[:6]
        send(prod, topic, [r for env in first for r in records[env.key]])
        send(prod, topic, [r for env in first for r in records[env.key]])

        a = Running(cfg)
        wait_for("3 tasks from consumer A", lambda: task_count(database) >= 3, a)
        a.stop()  # mid-stream: a graceful stop commits what is stored

        # the rest, twice, interleaved with the first copies while nobody consumes
        rest = envelopes[6:]
        send(prod, topic, [r for env in rest for r in records[env.key]])
        b = Running(cfg)
        send(prod, topic, [r for env in reversed(rest) for r in records[env.key]])
        send(prod, topic, [r for env in first for r in records[env.key]])  # a third copy
        wait_for("12 tasks", lambda: task_count(database) >= 12, b)
        wait_for(
            "the group's commits to reach the end of the topic",
            lambda: committed_all(kafka, topic, cfg.kafka.group_id),
            b,
        )
        wait_for(
            "a cached lag of 0 on every partition",
            lambda: sorted(b.consumer.lag_snapshot().values()) == [0, 0, 0],
            b,
        )
        for partition in ("0", "1", "2"):
            labels = {"topic": topic, "partition": partition}
            assert b.registry.get_sample_value("fleetal_ingest_consumer_lag_records", labels) == 0
        b.stop()
    finally:
        prod.close(timeout=30)

    assert task_count(database) == 12, "exactly one task per selected frame"
    ingested = a.consumer.counts["ingested"] + b.consumer.counts["ingested"]
    assert ingested == 12
    duplicates = a.consumer.counts["duplicates"] + b.consumer.counts["duplicates"]
    assert duplicates >= 12 + 6, f"every re-sent copy should count as a duplicate: {duplicates}"
    assert b.metric("fleetal_ingest_frames_ingested_total") == b.consumer.counts["ingested"]
    assert not any(k.startswith("dlq_") for k in (a.consumer.counts | b.consumer.counts))

    blobs = LocalBlobStore(tmp_path / "blobs")
    with LabelQueue.open(database) as q:
        for env in envelopes:
            stored = q.get_frame(env.key)
            assert stored.record.score == env.selection.score
            refs: dict[str, BlobRef] = dict(stored.blob_refs)
            assert decode_frame(blobs.get(refs["envelope"])) == env
            assert blobs.get(refs["lidar"]) == env.lidar.data  # type: ignore[union-attr]
            for cam in env.cameras:
                assert blobs.get(refs[f"camera/{cam.name}"]) == cam.data


def test_poison_goes_to_the_dead_letter_topic_and_good_frames_around_it_are_ingested(
    kafka: LocalKafka, topic: str, database: str, tmp_path: Path
) -> None:
    cfg = make_config(kafka, topic, database, tmp_path / "blobs")
    kafka.create_topic(cfg.kafka.dlq, partitions=1)
    good = [make_envelope(seq, drive="drive-good") for seq in range(4)]

    v2_env = make_envelope(100, drive="drive-v2")
    v2 = bytearray(encode(v2_env))
    v2[4] = 2  # major version 2: a newer vehicle than this reader
    nan_env = make_envelope(101, drive="drive-nan")
    nan_record = wire._frame_to_record(nan_env)  # a faulty writer that skips validation
    nan_record["selection"]["score"] = math.nan
    nan_payload = wire.encode_record("FrameEnvelope", nan_record)
    not_an_envelope = make_envelope(102, drive="drive-junk").key

    poison: list[tuple[str | None, bytes]] = [
        ("junk", b"\x00\xffnot a chunk at all" * 10),
        (None, b""),
        *chunks_of(v2_env.key, bytes(v2)),
        *chunks_of(nan_env.key, nan_payload),
        *chunks_of(not_an_envelope, b"FAL\x01\x01\x00 truncated body"),
    ]
    prod = producer(kafka.bootstrap)
    try:
        send(prod, topic, frame_records(good[0]) + frame_records(good[1]))
        send(prod, topic, poison)
        send(prod, topic, frame_records(good[2]) + frame_records(good[3]))
    finally:
        prod.close(timeout=30)

    running = Running(cfg)
    try:
        wait_for("4 good frames", lambda: task_count(database) >= 4, running)
        wait_for(
            "every offset committed",
            lambda: committed_all(kafka, topic, cfg.kafka.group_id),
            running,
        )
    finally:
        running.stop()

    assert task_count(database) == 4
    v2_chunks = len(chunks_of(v2_env.key, bytes(v2)))
    nan_chunks = len(chunks_of(nan_env.key, nan_payload))
    letters = read_dlq(kafka, cfg.kafka.dlq, expected=2 + v2_chunks + nan_chunks + 1)
    by_reason: dict[str, list[Any]] = {}
    for letter in letters:
        by_reason.setdefault(headers(letter)["fleetal.dlq.reason"], []).append(letter)
    assert {r: len(v) for r, v in by_reason.items()} == {
        "not_a_chunk": 2,
        "unsupported_version": v2_chunks,
        "invalid": nan_chunks,
        "decode_error": 1,
    }
    # the original records, with where they came from
    assert {bytes(x.value) for x in by_reason["not_a_chunk"]} == {
        b"\x00\xffnot a chunk at all" * 10,
        b"",
    }
    assert [bytes(x.value) for x in by_reason["unsupported_version"]] == [
        c for _, c in chunks_of(v2_env.key, bytes(v2))
    ]
    h = headers(by_reason["invalid"][0])
    assert h["fleetal.source.topic"] == topic
    assert h["fleetal.frame_key"] == nan_env.key
    assert "score" in h["fleetal.dlq.error"]
    assert int(h["fleetal.source.offset"]) >= 0
    assert running.metric("fleetal_ingest_dead_lettered_total", reason="invalid") == nan_chunks


class _BrokenOn(LocalBlobStore):
    """The real store, with a bug that hits one blob: what no single record may turn into a
    dead consumer (the fault is injected; the store, queue and broker are real)."""

    def __init__(self, root: Path, poisoned: bytes) -> None:
        super().__init__(root, fsync=False)
        self.poisoned = poisoned

    def put(self, data: bytes) -> BlobRef:
        if data == self.poisoned:
            raise RuntimeError("a bug that only this frame's data triggers")
        return super().put(data)


def test_no_single_record_stops_the_group(
    kafka: LocalKafka, topic: str, database: str, tmp_path: Path
) -> None:
    """A ROS-topic camera name ("/" is illegal in a blob name) once killed the consumer thread
    outside the dead-letter handling, uncommitted, to be read again at every restart."""
    cfg = make_config(kafka, topic, database, tmp_path / "blobs")
    kafka.create_topic(cfg.kafka.dlq, partitions=1)
    slash_env = make_envelope(200, drive="drive-mcap")
    slash = wire._frame_to_record(slash_env)  # an older agent: no name check on encode
    slash["cameras"][0]["name"] = "/camera/front/image_raw"
    slash_payload = wire.encode_record("FrameEnvelope", slash)
    buggy_env = make_envelope(201, drive="drive-bug")
    buggy_env = dataclasses.replace(
        buggy_env, cameras=(dataclasses.replace(buggy_env.cameras[0], data=b"\xff\xd8 odd"),)
    )
    good = [make_envelope(seq, drive="drive-after") for seq in range(3)]
    prod = producer(kafka.bootstrap)
    try:
        send(prod, topic, chunks_of(slash_env.key, slash_payload))
        send(prod, topic, frame_records(buggy_env))
        send(prod, topic, [r for env in good for r in frame_records(env)])
    finally:
        prod.close(timeout=30)

    blobs = _BrokenOn(tmp_path / "blobs", poisoned=b"\xff\xd8 odd")
    running = Running(cfg, blobs=blobs)
    try:
        wait_for("the 3 frames after the bad ones", lambda: task_count(database) >= 3, running)
        wait_for(
            "every offset committed",
            lambda: committed_all(kafka, topic, cfg.kafka.group_id),
            running,
        )
        assert running.thread.is_alive()
    finally:
        running.stop()
    assert task_count(database) == 3
    slash_chunks = len(chunks_of(slash_env.key, slash_payload))
    buggy_chunks = len(frame_records(buggy_env))
    letters = read_dlq(kafka, cfg.kafka.dlq, expected=slash_chunks + buggy_chunks)
    by_key = {headers(x)["fleetal.frame_key"]: headers(x) for x in letters}
    assert by_key[slash_env.key]["fleetal.dlq.reason"] == "invalid"
    assert "cameras[0].name" in by_key[slash_env.key]["fleetal.dlq.error"]
    assert by_key[buggy_env.key]["fleetal.dlq.reason"] == "internal_error"
    assert "only this frame" in by_key[buggy_env.key]["fleetal.dlq.error"]
    assert running.metric("fleetal_ingest_dead_lettered_total", reason="internal_error") == (
        buggy_chunks
    )


def test_a_frame_missing_a_chunk_is_quarantined_after_the_timeout(
    kafka: LocalKafka, topic: str, database: str, tmp_path: Path
) -> None:
    cfg = make_config(kafka, topic, database, tmp_path / "blobs", timeout_s=3.0)
    kafka.create_topic(cfg.kafka.dlq, partitions=1)
    broken = make_envelope(7, drive="drive-broken")
    # a bigger frame: three chunks, the middle one never sent
    big = dataclasses.replace(
        broken,
        cameras=broken.cameras
        + tuple(dataclasses.replace(c, name=c.name + "_2") for c in broken.cameras),
    )
    parts = frame_records(big)
    assert len(parts) == 3
    good = [make_envelope(seq, drive="drive-ok") for seq in range(3)]
    prod = producer(kafka.bootstrap)
    try:
        send(prod, topic, [parts[0], parts[2]])
        send(prod, topic, [r for env in good for r in frame_records(env)])
    finally:
        prod.close(timeout=30)

    running = Running(cfg)
    try:
        wait_for("3 good frames", lambda: task_count(database) >= 3, running)
        wait_for(
            "the quarantine and every offset committed",
            lambda: committed_all(kafka, topic, cfg.kafka.group_id),
            running,
        )
        assert running.metric("fleetal_ingest_reassembly_expired_total", reason="timeout") == 1
    finally:
        running.stop()

    letters = read_dlq(kafka, cfg.kafka.dlq, expected=2)
    assert [headers(x)["fleetal.dlq.reason"] for x in letters] == ["incomplete_timeout"] * 2
    assert [bytes(x.value) for x in letters] == [parts[0][1], parts[2][1]]
    assert {headers(x)["fleetal.frame_key"] for x in letters} == {big.key}
    assert task_count(database) == 3


def test_a_database_outage_commits_nothing_and_loses_no_frame(
    kafka: LocalKafka, topic: str, database: str, tmp_path: Path
) -> None:
    cfg = make_config(kafka, topic, database, tmp_path / "blobs")
    down = threading.Event()

    def flaky_queue() -> LabelQueue:
        if down.is_set():
            raise DatabaseError(f"{database}: connection refused (outage simulated by the test)")
        return queue_opener(cfg)()

    running = Running(cfg, queue_factory=flaky_queue)
    prod = producer(kafka.bootstrap)
    try:
        send(prod, topic, frame_records(make_envelope(0, drive="drive-outage")))
        wait_for("the first frame", lambda: task_count(database) == 1, running)
        wait_for("its commit", lambda: committed_all(kafka, topic, cfg.kafka.group_id), running)
        down.set()
        if not database.endswith(".db"):  # PostgreSQL: also break the live connection
            with psycopg.connect(database, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'fleetal-ingest' AND pid <> pg_backend_pid()"
                )
        else:  # SQLite cannot go down; make the open connection fail instead
            running.consumer._close_queue()
        send(prod, topic, [r for s in (1, 2, 3) for r in frame_records(make_envelope(s))])
        wait_for(
            "three failed attempts to store",
            lambda: (
                running.metric("fleetal_ingest_store_retries_total", error="DatabaseError") >= 3
            ),
            running,
        )
        assert not committed_all(kafka, topic, cfg.kafka.group_id), "committed during the outage"
        assert task_count(database) == 1
        assert running.consumer.health()[0] is False
        down.clear()
        wait_for("every frame after the outage", lambda: task_count(database) == 4, running)
        wait_for("the commits", lambda: committed_all(kafka, topic, cfg.kafka.group_id), running)
        assert running.consumer.health()[0] is True
    finally:
        prod.close(timeout=30)
        running.stop()
    assert running.metric("fleetal_ingest_store_retries_total", error="DatabaseError") >= 3
    assert running.consumer.counts["ingested"] == 4


def test_the_cli_runs_serves_metrics_health_and_the_api_and_exits_0_on_sigterm(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    database = tmp_path / "queue.db"
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('"tok-0123456789abcdef" = "alice"\n')
    config = tmp_path / "ingest.toml"
    config.write_text(
        f"""
[kafka]
bootstrap_servers = ["{kafka.bootstrap}"]
topic = "{topic}"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000

[queue]
database = "{database}"

[blobs]
root = "{tmp_path / "blobs"}"
fsync = false

[api]
port = 0
tokens_file = "{tokens}"

[metrics]
port = 0
"""
    )
    check = subprocess.run(
        [sys.executable, "-m", "ingest_service.cli", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        cwd=ROOT,
    )
    # a fresh database is not migrated yet: check says so
    assert check.returncode == 1, check.stdout + check.stderr
    assert "run the migrations" in check.stderr
    assert "reachable" in check.stdout

    prod = producer(kafka.bootstrap)
    try:
        send(prod, topic, [r for s in range(3) for r in frame_records(make_envelope(s))])
    finally:
        prod.close(timeout=30)
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log_file, notify_listener(tmp_path / "notify.sock") as systemd:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest_service.cli", "run", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONWARNINGS": "ignore::DeprecationWarning",
                "FLEETAL_KAFKA__GROUP_ID": f"cli-{topic}",
                **systemd.env(watchdog_s=1.0),  # as under the Type=notify unit
            },
        )
        try:
            assert f"STATUS=consuming {topic}" in systemd.wait_for("READY=1")
            systemd.wait_for("WATCHDOG=1")  # every thread alive
            wait_for(
                "3 tasks from the CLI", lambda: database.exists() and task_count(str(database)) == 3
            )
            wait_for(
                "the CLI's commits",
                lambda: committed_all(kafka, topic, f"cli-{topic}"),
            )
            text = log_path.read_text()
            ops = int(re.search(r"/metrics and /healthz on http://[^:]+:(\d+)", text).group(1))  # type: ignore[union-attr]
            api = int(re.search(r"labeling API on [^:]+:(\d+)", text).group(1))  # type: ignore[union-attr]
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{ops}/metrics", timeout=30).read()
            assert b"fleetal_ingest_frames_ingested_total 3.0" in metrics
            assert b'fleetal_ingest_queue_tasks{state="new"} 3.0' in metrics
            health = urllib.request.urlopen(f"http://127.0.0.1:{ops}/healthz", timeout=30)
            assert health.status == 200
            request = urllib.request.Request(
                f"http://127.0.0.1:{api}/v1/queue/stats",
                headers={"Authorization": "Bearer tok-0123456789abcdef"},
            )
            stats = json.loads(urllib.request.urlopen(request, timeout=30).read())
            assert stats["new"] == 3
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{ops}/metrics", timeout=30).read()
            assert b"fleetal_ingest_api_request_seconds_count" in metrics
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(DEADLINE_S) == 0, log_path.read_text()[-3000:]
            systemd.wait_for("STOPPING=1", timeout_s=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)

    stats_out = subprocess.run(
        [sys.executable, "-m", "ingest_service.cli", "queue-stats", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        cwd=ROOT,
    )
    assert stats_out.returncode == 0, stats_out.stderr
    assert json.loads(stats_out.stdout)["new"] == 3
    check = subprocess.run(
        [sys.executable, "-m", "ingest_service.cli", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        cwd=ROOT,
    )
    assert check.returncode == 0, check.stdout + check.stderr
