"""The safe-offset rule for chunked frames, and the consumer's bookkeeping around it.

The consumer tests here drive :class:`IngestConsumer` record by record with fake Kafka records
and a fake dead-letter producer (no broker): which offsets become committable when frames
complete, fail or time out, and what a revocation drops. The real broker is in
``tests/integration/test_ingest_consumer.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from ingest_service.blobstore import LocalBlobStore
from ingest_service.config import load_ingest_config
from ingest_service.consumer import IngestConsumer
from ingest_service.metrics import IngestMetrics
from ingest_service.offsets import SafeOffsetTracker
from ingest_service.queue import LabelQueue
from schemas.chunking import split_payload
from schemas.messages import CameraPayload, EgoPose, FrameEnvelope, SelectionRecord
from schemas.wire import encode

P0 = ("frames", 0)
P1 = ("frames", 1)


# --- the tracker -----------------------------------------------------------------------------


def test_nothing_held_means_last_plus_one() -> None:
    t = SafeOffsetTracker()
    for off in range(5):
        t.consumed(P0, off)
    assert t.safe_offsets() == {P0: 5}


def test_an_open_frame_holds_its_partition_back_to_its_first_chunk() -> None:
    t = SafeOffsetTracker()
    t.hold(P0, 3, "a")
    t.consumed(P0, 4)
    t.hold(P0, 5, "a")
    t.hold(P1, 9, "b")
    assert t.safe_offsets() == {P0: 3, P1: 9}
    t.release("a")
    assert t.safe_offsets() == {P0: 6, P1: 9}
    assert t.holds("b")
    assert not t.holds("a")


def test_to_commit_reports_only_offsets_that_moved() -> None:
    t = SafeOffsetTracker()
    t.consumed(P0, 0)
    assert t.to_commit() == {P0: 1}
    t.mark_committed({P0: 1})
    assert t.to_commit() == {}
    t.hold(P0, 1, "a")
    assert t.to_commit() == {}  # held at 1: nothing new
    t.release("a")
    assert t.to_commit() == {P0: 2}


def test_forget_drops_the_partition_and_names_its_frames() -> None:
    t = SafeOffsetTracker()
    t.hold(P0, 0, "a")
    t.hold(P0, 1, "b")
    t.hold(P1, 0, "c")
    assert sorted(t.forget([P0])) == ["a", "b"]
    assert t.safe_offsets() == {P1: 0}
    assert t.held_keys(P1) == ["c"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(1, 4)),  # (frame id, chunks)
        min_size=1,
        max_size=12,
        unique_by=lambda x: x[0],
    ),
    st.randoms(use_true_random=False),
)
def test_the_safe_offset_never_passes_a_chunk_of_an_unfinished_frame(
    frames: list[tuple[int, int]], rnd: Any
) -> None:
    # Interleave the chunks of the frames on one partition, in per-frame order.
    pending = {f"f{fid}": count for fid, count in frames}
    log: list[str] = []
    while pending:
        key = rnd.choice(sorted(pending))
        log.append(key)
        pending[key] -= 1
        if not pending[key]:
            del pending[key]
    remaining = {f"f{fid}": count for fid, count in frames}
    finished: set[str] = set()
    t = SafeOffsetTracker()
    for offset, key in enumerate(log):
        t.hold(P0, offset, key)
        remaining[key] -= 1
        if remaining[key] == 0 and rnd.random() < 0.7:  # complete, and stored at once
            t.release(key)
            finished.add(key)
        safe = t.safe_offsets()[P0]
        # every record below the safe offset belongs to a finished frame
        assert all(log[o] in finished for o in range(safe))
        # and the first record of every unfinished frame is at or above it
        unfinished = {k for k in log[: offset + 1] if k not in finished}
        assert all(log.index(k) >= safe for k in unfinished)


# --- the consumer's bookkeeping --------------------------------------------------------------


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None


@dataclass
class Future:
    def get(self, timeout: float | None = None) -> None:
        return None


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = field(default_factory=list)

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Any) -> Future:
        self.sent.append((topic, key, value, dict(headers)))
        return Future()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def _envelope(seq: int) -> FrameEnvelope:
    return FrameEnvelope(
        vehicle_id="veh-1",
        drive_id="d-1",
        frame_seq=seq,
        timestamp_ns=1_000 + seq,
        pose=EgoPose((0.0, 0.0, 0.0)),
        cameras=(CameraPayload("CAM_FRONT", "jpeg", 4, 4, bytes([seq % 256]) * 3000),),
        lidar=None,
        selection=SelectionRecord(0.5, 0.4, "entropy", "selected", "0" * 64),
        models=(),
        agent_version="0.1.0",
    )


def _chunks(seq: int) -> tuple[str, list[bytes]]:
    env = _envelope(seq)
    return env.key, split_payload(env.key, encode(env), 1200)


class Harness:
    def __init__(self, tmp_path: Path, timeout_s: float = 60.0) -> None:
        cfg = load_ingest_config(
            data={
                "kafka": {"topic": "frames"},
                "queue": {"database": str(tmp_path / "q.db")},
                "reassembly": {"timeout_s": timeout_s},
            }
        )
        self.now = 0.0
        self.registry = CollectorRegistry()
        self.consumer = IngestConsumer(
            cfg,
            queue_factory=lambda: LabelQueue.open(tmp_path / "q.db"),
            blobs=LocalBlobStore(tmp_path / "blobs", fsync=False),
            metrics=IngestMetrics(self.registry),
            clock=lambda: self.now,
        )
        self.producer = FakeProducer()
        self.consumer._producer = self.producer
        self.consumer._assigned = {P0, P1}
        self.offsets = {P0: 0, P1: 0}

    def feed(self, tp: tuple[str, int], *values: bytes) -> None:
        """Records at the next offsets of ``tp``, handled and stored as one poll would."""
        completed: list[Any] = []
        for value in values:
            rec = Record(tp[0], tp[1], self.offsets[tp], value)
            self.offsets[tp] += 1
            self.consumer._handle(rec, self.now, completed)
        self.consumer._reassembler.expire(self.now)
        if completed:
            assert self.consumer._store(completed, threading.Event())
        assert self.consumer._flush_dead_letters(threading.Event())

    def safe(self) -> dict[tuple[str, int], int]:
        return self.consumer._tracker.safe_offsets()

    def tasks(self) -> int:
        return sum(self.consumer._get_queue().stats().values())


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.consumer.close()


def test_offsets_of_a_half_read_frame_are_held_until_it_is_stored(harness: Harness) -> None:
    _ka, a = _chunks(1)
    _kb, b = _chunks(2)
    assert len(a) == len(b) == 3
    harness.feed(P0, a[0], b[0], a[1])
    assert harness.safe() == {P0: 0}
    harness.feed(P0, a[2])  # a complete and stored; b still open from offset 1
    assert harness.safe() == {P0: 1}
    assert harness.tasks() == 1
    harness.feed(P0, b[1], b[2])
    assert harness.safe() == {P0: 6}
    assert harness.tasks() == 2
    assert harness.consumer.counts["ingested"] == 2


def test_resent_frames_and_trailing_chunks_count_as_duplicates(harness: Harness) -> None:
    _key, a = _chunks(1)
    harness.feed(P0, *a)
    harness.feed(P0, *a)  # the vehicle re-sent it: skipped before reassembly
    harness.feed(P0, a[1], a[2])  # a successor re-reading the tail of a stored frame
    assert harness.tasks() == 1
    assert harness.consumer.counts["duplicates"] == 2
    assert harness.consumer._reassembler.inflight_frames == 0
    assert harness.safe() == {P0: 8}


def test_a_revocation_drops_only_the_revoked_partitions_partial_frames(harness: Harness) -> None:
    ka, a = _chunks(1)
    kb, b = _chunks(2)
    harness.feed(P0, a[0])
    harness.feed(P1, b[0], b[1])
    harness.consumer._on_revoked([P0])  # commit is a no-op: no Kafka consumer in this test
    assert harness.consumer.assigned == {P1}
    assert ka not in harness.consumer._frames
    assert harness.consumer._reassembler.pending_keys() == [kb]
    assert harness.producer.sent == [], "a revoked frame is not dead-lettered"
    harness.feed(P1, b[2])  # b's earlier chunks survived the rebuild
    assert harness.tasks() == 1
    assert harness.safe() == {P1: 3}


def test_garbage_and_a_timed_out_frame_are_dead_lettered_and_release_offsets(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, timeout_s=5.0)
    try:
        _check_garbage_and_timeout(h)
    finally:
        h.consumer.close()


def _check_garbage_and_timeout(h: Harness) -> None:
    _key, a = _chunks(1)
    h.feed(P0, b"garbage", a[0], a[2])  # a[1] never comes
    assert h.safe() == {P0: 1}
    [(topic, _, value, headers)] = h.producer.sent
    assert topic == "frames.dlq"
    assert value == b"garbage"
    assert headers["fleetal.dlq.reason"] == b"not_a_chunk"
    assert headers["fleetal.source.offset"] == b"0"
    h.now = 10.0
    h.feed(P0)
    reasons = [s[3]["fleetal.dlq.reason"] for s in h.producer.sent]
    assert reasons == [b"not_a_chunk", b"incomplete_timeout", b"incomplete_timeout"]
    assert [s[2] for s in h.producer.sent[1:]] == [a[0], a[2]]
    assert [s[3]["fleetal.source.offset"] for s in h.producer.sent[1:]] == [b"1", b"2"]
    assert h.safe() == {P0: 3}
    assert (
        h.registry.get_sample_value(
            "fleetal_ingest_dead_lettered_total", {"reason": "incomplete_timeout"}
        )
        == 2
    )
