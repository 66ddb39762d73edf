"""Scale-out: two ingest processes in one consumer group; one is killed with SIGKILL mid-stream.

Both consume the same 3-partition topic into one label queue (a SQLite WAL file written by two
processes, or PostgreSQL). While frames are still arriving, one process is killed without any
chance to commit; after the session timeout the survivor takes over its partitions, re-reads
from the committed offsets, and at the end the queue holds exactly one task per frame sent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.kafka.broker import LocalKafka
from deploy.lifetime import die_with_parent
from ingest_service.queue import LabelQueue
from tests.integration.ingest_child import (
    DEADLINE_S,
    frame_records,
    make_envelope,
    producer,
    send,
)
from tests.integration.test_ingest_consumer import committed_all

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 36


@pytest.fixture
def database(queue_db: str) -> str:
    """A fresh label-queue database of each backend (``queue_db`` in conftest.py)."""
    return queue_db


class Child:
    """One ingest consumer process; its status lines are collected by a reader thread."""

    def __init__(self, name: str, config: Path, log_dir: Path) -> None:
        self.name = name
        self.stderr = (log_dir / f"{name}.stderr").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.ingest_child", str(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"},
            preexec_fn=die_with_parent,
        )
        self.ready = threading.Event()
        self.status: dict[str, Any] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line == "ready":
                self.ready.set()
            elif line.startswith("{"):
                self.status = json.loads(line)

    @property
    def assigned(self) -> list[list[Any]]:
        return list(self.status.get("assigned", []))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(30)
        self.reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()


def _tasks(database: str) -> int:
    with LabelQueue.open(database) as q:
        return sum(q.stats().values())


def _wait(what: str, cond: Any, children: list[Child], log_dir: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        for child in children:
            if child.proc.poll() not in (None, -signal.SIGKILL):
                err = (log_dir / f"{child.name}.stderr").read_text()[-3000:]
                raise AssertionError(f"{child.name} exited {child.proc.returncode}:\n{err}")
        if time.monotonic() > deadline:
            states = {c.name: (c.alive(), c.status) for c in children}
            raise AssertionError(f"timed out after {DEADLINE_S:.0f} s waiting for {what}: {states}")
        time.sleep(0.25)


def test_killing_one_of_two_consumers_mid_stream_loses_and_doubles_nothing(
    kafka: LocalKafka, topic: str, database: str, tmp_path: Path
) -> None:
    group = f"g-{topic}"
    kafka.create_topic(f"{topic}.dlq", partitions=1)
    config = tmp_path / "ingest.toml"
    config.write_text(
        f"""
[kafka]
bootstrap_servers = ["{kafka.bootstrap}"]
topic = "{topic}"
group_id = "{group}"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
max_poll_records = 8

[consumer]
poll_timeout_ms = 200
retry_initial_s = 0.1
lag_interval_s = 1.0

[queue]
database = "{database}"

[blobs]
root = "{tmp_path / "blobs"}"
fsync = false
"""
    )
    children = [Child(name, config, tmp_path) for name in ("a", "b")]
    prod = producer(kafka.bootstrap)
    sent: list[str] = []
    produce_error: list[BaseException] = []
    keep_sending = threading.Event()
    keep_sending.set()

    def produce() -> None:
        try:
            for seq in range(FRAMES):
                env = make_envelope(seq, vehicle=f"veh-{seq % 4:04d}", drive="drive-scale")
                send(prod, topic, frame_records(env))
                sent.append(env.key)
                if seq % 6 == 5:  # a vehicle re-sending a frame it was not sure about
                    send(prod, topic, frame_records(env))
                time.sleep(0.15)
        except BaseException as exc:
            produce_error.append(exc)

    try:
        _wait(
            "both consumers ready",
            lambda: all(c.ready.is_set() for c in children),
            children,
            tmp_path,
        )
        _wait(
            "the group to split the partitions between both",
            lambda: all(c.assigned for c in children),
            children,
            tmp_path,
        )
        producing = threading.Thread(target=produce, name="vehicles")
        producing.start()
        _wait("a few frames stored", lambda: _tasks(database) >= 8, children, tmp_path)
        assert producing.is_alive(), "frames should still be arriving when the consumer dies"
        victim, survivor = children
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(30)
        producing.join(DEADLINE_S)
        assert not producing.is_alive(), "the producer did not finish"
        assert not produce_error, f"producing failed: {produce_error[0]!r}"
        _wait(
            "the survivor to own every partition",
            lambda: len(survivor.assigned) == 3,
            [survivor],
            tmp_path,
        )
        _wait(f"{FRAMES} tasks", lambda: _tasks(database) >= FRAMES, [survivor], tmp_path)
        _wait(
            "the group's commits to reach the end of the topic",
            lambda: committed_all(kafka, topic, group),
            [survivor],
            tmp_path,
        )
        survivor.proc.send_signal(signal.SIGTERM)
        assert survivor.proc.wait(60) == 0, "SIGTERM should end the consumer cleanly"
    finally:
        prod.close(timeout=30)
        for child in children:
            child.close()

    assert len(sent) == FRAMES
    with LabelQueue.open(database) as q:
        assert sum(q.stats().values()) == FRAMES, "exactly one task per frame sent"
        for key in sent:
            q.get_frame(key)  # every frame is there
    counts = survivor.status["counts"]
    assert not [k for k in counts if k.startswith("dlq_")], counts
