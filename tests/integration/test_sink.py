"""The Kafka sink against a real broker: delivery, broker outage, agent killed mid-send.

Every wait is a bounded polling loop with a generous deadline (a noisy 2-core machine runs a
JVM broker next to these tests); nothing here can hang past pytest's timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from deploy.kafka.broker import LocalKafka
from edge_agent.sink import KafkaSink, SinkConfig
from edge_agent.spool import Spool
from schemas.chunking import Reassembler
from schemas.errors import DuplicateChunkError
from tests.support.kafka_leaks import LEAK_FILTER, collect_leaked_sockets

__all__ = ["collect_leaked_sockets"]  # the autouse fixture, imported to take effect

pytestmark = [pytest.mark.integration, LEAK_FILTER]


ROOT = Path(__file__).resolve().parents[2]
CHILD = ROOT / "tests" / "integration" / "spool_crash_child.py"
TOPIC_PARTITIONS = 3  # as tests/conftest.py creates them


def payload(key: str, size: int) -> bytes:
    """Deterministic, incompressible-looking bytes for ``key``."""
    out = bytearray()
    block = hashlib.sha256(key.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def fast_config(bootstrap: str, topic: str, **overrides: Any) -> SinkConfig:
    """Short timeouts so an outage is noticed in seconds, not minutes."""
    settings: dict[str, Any] = {
        "bootstrap_servers": (bootstrap,),
        "topic": topic,
        "request_timeout_ms": 5_000,
        "delivery_timeout_ms": 12_000,
        "bootstrap_timeout_ms": 3_000,
        "max_block_ms": 3_000,
        "backoff_initial_s": 0.2,
        "backoff_max_s": 2.0,
        "batch_max_frames": 4,
        "batch_max_bytes": 8 << 20,
    }
    settings.update(overrides)
    return SinkConfig(**settings)


def consume(
    bootstrap: str, topic: str, expected: set[str], *, timeout_s: float = 120.0
) -> tuple[dict[str, bytes], Counter[str]]:
    """Read the topic from the start, reassemble frames; stop once all expected are complete
    and the topic has been quiet for 2 s. Returns payload by key and how often each completed.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
    )
    reassembler = Reassembler(max_frame_bytes=64 << 20, max_inflight_bytes=1 << 30, timeout_s=600)
    frames: dict[str, bytes] = {}
    completions: Counter[str] = Counter()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(TOPIC_PARTITIONS)])
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=500)
            if batches:
                quiet_since = time.monotonic()
            for records in batches.values():
                for record in records:
                    assert record.key is not None
                    try:
                        whole = reassembler.add(record.value, now=time.monotonic())
                    except DuplicateChunkError:
                        continue  # a resent chunk of a frame still being reassembled
                    if whole is not None:
                        key = record.key.decode()
                        assert key not in frames or frames[key] == whole
                        frames[key] = whole
                        completions[key] += 1
            if expected <= frames.keys() and time.monotonic() - quiet_since > 2.0:
                break
    finally:
        consumer.close()
    return frames, completions


@pytest.fixture
def own_kafka() -> Iterator[LocalKafka]:
    """A private broker for tests that kill it: the session broker is left alone."""
    broker = LocalKafka()
    broker.start(timeout_s=180.0)
    try:
        yield broker
    finally:
        broker.stop()


def test_frames_are_delivered_whole_and_removed_only_after_ack(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    sizes = [0, 1, 1000, 899_000, 900_000, 2_500_000, 50_000, 3_100_000, 123_456, 7]
    keys = [f"veh-1/drive-1/{i:06d}" for i in range(len(sizes))]
    sent: dict[str, list[Any]] = {}
    violations: list[str] = []

    class RecordingProducer:
        def __init__(self, kwargs: Any) -> None:
            from kafka import KafkaProducer

            self.inner = KafkaProducer(**kwargs)

        def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
            future = self.inner.send(topic, value=value, key=key)
            assert key is not None
            sent.setdefault(key.decode(), []).append(future)
            return future

        def flush(self, timeout: float | None = None) -> None:
            self.inner.flush(timeout)

        def close(self, timeout: float | None = None) -> None:
            self.inner.close(timeout)

    with Spool(tmp_path / "spool.db", max_bytes=1 << 30) as spool:
        real_ack = spool.ack

        def checked_ack(frame_keys: Any) -> int:
            frame_keys = list(frame_keys)
            for key in frame_keys:
                futures = sent.get(key, [])
                if not futures or not all(f.is_done and f.succeeded() for f in futures):
                    violations.append(key)
            return real_ack(frame_keys)

        spool.ack = checked_ack  # type: ignore[method-assign]
        for key, size in zip(keys, sizes, strict=True):
            assert spool.put(key, payload(key, size), score=size / 1e7).stored
        sink = KafkaSink(
            fast_config(kafka.bootstrap, topic), spool, producer_factory=RecordingProducer
        )
        try:
            assert sink.flush(timeout=120.0), sink.stats()
        finally:
            sink.close()
        assert spool.stats().frames == 0
        stats = sink.stats()
    assert violations == []
    assert stats.frames_sent_total == len(keys)
    assert stats.bytes_sent_total == sum(sizes)
    assert stats.send_errors_total == 0
    # 900 KB chunks: the 3.1 MB frame needs 4 chunks, all on one partition, in order.
    assert stats.chunks_sent_total == sum(len(sent[k]) for k in keys)
    for key in keys:
        partitions = {f.value.partition for f in sent[key]}
        offsets = [f.value.offset for f in sent[key]]
        assert len(partitions) == 1
        assert offsets == sorted(offsets)

    frames, completions = consume(kafka.bootstrap, topic, set(keys))
    assert set(frames) == set(keys)
    for key, size in zip(keys, sizes, strict=True):
        assert frames[key] == payload(key, size)
    assert set(completions.values()) == {1}  # no failures, so no duplicates either


def test_broker_down_for_a_while_pipeline_never_blocks_and_nothing_is_lost(
    own_kafka: LocalKafka, tmp_path: Path
) -> None:
    topic = "fleet-frames-outage"
    own_kafka.create_topic(topic, partitions=TOPIC_PARTITIONS)
    size = 1_500_000
    put_latencies: list[float] = []
    expected: dict[str, int] = {}

    def put(spool: Spool, key: str) -> None:
        data = payload(key, size)
        started = time.perf_counter()
        result = spool.put(key, data, score=0.5)
        put_latencies.append(time.perf_counter() - started)
        assert result.stored
        expected[key] = size

    with Spool(tmp_path / "spool.db", max_bytes=1 << 30) as spool:
        sink = KafkaSink(fast_config(own_kafka.bootstrap, topic), spool)
        sink.start()
        try:
            for i in range(24):
                put(spool, f"before/{i:04d}")
            # Kill the broker mid-send: as soon as the first frames are acknowledged.
            deadline = time.monotonic() + 60
            while sink.stats().frames_sent_total == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert sink.stats().frames_sent_total > 0, sink.stats()
            own_kafka.kill()
            # The outage: the pipeline keeps selecting frames, and put() stays fast.
            outage_started = time.monotonic()
            i = 0
            while time.monotonic() - outage_started < 15.0:
                put(spool, f"during/{i:04d}")
                i += 1
                time.sleep(0.25)
            assert spool.stats().frames > 0
            own_kafka.restart(timeout_s=180.0)
            for i in range(8):
                put(spool, f"after/{i:04d}")
            assert sink.flush(timeout=180.0), (sink.stats(), spool.stats())
        finally:
            sink.close(timeout=10.0)
        stats = sink.stats()
        assert spool.stats().frames == 0
    assert stats.send_errors_total + stats.producer_errors_total > 0, "the outage went unnoticed"

    frames, completions = consume(own_kafka.bootstrap, topic, set(expected))
    assert set(frames) == set(expected), "frames lost across the outage"
    for key in expected:
        assert frames[key] == payload(key, size)
    duplicates = sum(n - 1 for n in completions.values())
    print(
        f"\noutage: {len(expected)} frames, {duplicates} delivered twice (at-least-once), "
        f"send errors {stats.send_errors_total} {dict(stats.send_errors_by_type)}, "
        f"producer errors {stats.producer_errors_total}; put latency median "
        f"{statistics.median(put_latencies) * 1e3:.1f} ms, max {max(put_latencies) * 1e3:.1f} ms"
    )
    # The pipeline thread never waited for the network: put() is a local fsync, with a wide
    # margin for a noisy machine that also restarts a JVM.
    assert statistics.median(put_latencies) < 0.25
    assert max(put_latencies) < 3.0


def test_agent_killed_mid_send_then_a_new_sink_resends_the_rest(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    db = tmp_path / "spool.db"
    keys = [f"veh-9/drive-3/{i:06d}" for i in range(40)]
    sizes = {k: 400_000 + 97_000 * (i % 9) for i, k in enumerate(keys)}
    with Spool(db, max_bytes=1 << 30) as spool:
        for key in keys:
            spool.put(key, payload(key, sizes[key]), score=0.5)

    seen = threading.Event()
    stop_watch = threading.Event()

    def watch() -> None:
        # Any record on the topic means the child is sending: kill it right then.
        consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(TOPIC_PARTITIONS)])
            while not stop_watch.is_set() and not seen.is_set():
                if consumer.poll(timeout_ms=100):
                    seen.set()
        finally:
            consumer.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    args = [str(CHILD), "sink", str(db), kafka.bootstrap, topic]
    with subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
            assert seen.wait(timeout=120), "the child never sent anything"
            time.sleep(0.3)  # let it get part of the way: some frames acked, some in flight
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            stop_watch.set()
            watcher.join(timeout=30)
    assert child.returncode == -signal.SIGKILL

    with Spool(db, max_bytes=1 << 30) as spool:
        left = spool.stats().frames
        assert spool.keys("inflight") == []
        # Same chunk size as the child: a resent frame's chunks then match the partial copy the
        # killed sender left on the topic (the reassembler skips the repeated chunks).
        config = fast_config(kafka.bootstrap, topic, max_message_bytes=100_000)
        sink = KafkaSink(config, spool)
        try:
            assert sink.flush(timeout=180.0), sink.stats()
        finally:
            sink.close()
        assert spool.stats().frames == 0
        resent = sink.stats().frames_sent_total
    assert resent == left

    frames, completions = consume(kafka.bootstrap, topic, set(keys))
    assert set(frames) == set(keys), "frames lost when the agent was killed"
    for key in keys:
        assert frames[key] == payload(key, sizes[key])
    duplicates = sum(n - 1 for n in completions.values())
    print(
        f"\nkill -9 mid-send: {len(keys) - left} acked before the kill, {left} resent, "
        f"{duplicates} duplicates"
    )


def test_unreachable_broker_at_start_does_not_crash_and_is_retried(tmp_path: Path) -> None:
    # Nothing listens on this port: construction fails, is counted, backs off; nothing is lost.
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Spool(tmp_path / "spool.db", max_bytes=1 << 20) as spool:
        spool.put("k", b"x" * 100, 0.5)
        sink = KafkaSink(fast_config(f"127.0.0.1:{port}", "t", bootstrap_timeout_ms=500), spool)
        assert sink.run_once() == 0
        assert sink.run_once() == 0
        stats = sink.stats()
        assert stats.producer_errors_total == 2
        assert stats.consecutive_failures == 2
        assert 0 < stats.backoff_s <= 2.0 * 1.2
        assert not sink.flush(timeout=1.0)
        sink.close()
        assert spool.keys("pending") == ["k"]


def test_a_frame_too_large_for_the_topic_is_held_and_the_others_are_delivered(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    # The broker refuses any record batch over the topic's max.message.bytes for good
    # (MESSAGE_TOO_LARGE): the big frame can never be sent as it is.
    topic = f"t-held-{time.monotonic_ns()}"
    kafka.create_topic(topic, partitions=TOPIC_PARTITIONS, configs={"max.message.bytes": "20000"})
    big = "veh-1/drive-1/000000"
    small = {f"veh-1/drive-1/{i:06d}": payload(f"s{i}", 2_000) for i in range(1, 13)}
    with Spool(tmp_path / "spool.db", max_bytes=1 << 30) as spool:
        spool.put(big, payload(big, 100_000), 0.99)  # the best score: first in every batch
        for i, (key, data) in enumerate(small.items()):
            spool.put(key, data, 0.5 - i / 100)
        sink = KafkaSink(fast_config(kafka.bootstrap, topic, batch_max_frames=4), spool)
        start = time.monotonic()
        sink.start()
        try:
            assert sink.flush(timeout=90.0), "the small frames were held back"
            elapsed = time.monotonic() - start
        finally:
            sink.close(timeout=10.0)
        stats = sink.stats()
        print(f"\n12 small frames delivered past a held 100 kB frame in {elapsed:.2f} s")
        assert stats.frames_sent_total == len(small)
        assert stats.rounds_failed_total == 0  # no backoff, no reconnect for it
        assert stats.producer_errors_total == 0
        assert stats.held_by_type == {"MessageSizeTooLargeError": 1}
        assert spool.keys() == [big]
        assert spool.keys("held") == [big]
        [held] = spool.held_frames()
        assert held.error == "MessageSizeTooLargeError"
        assert held.attempts == 1
        assert spool.stats().held_bytes == 100_000
    frames, _ = consume(kafka.bootstrap, topic, set(small), timeout_s=60.0)
    assert frames == small
