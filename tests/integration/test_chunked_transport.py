"""Frames bigger than a Kafka message cross a real broker in chunks and come back byte-identical.

The broker keeps Kafka's default 1 MB message limit. Producers key every chunk by its frame
key, so all chunks of a frame land on one partition, in order; consumers reassemble with
:class:`schemas.chunking.Reassembler`. The last test kills a consumer in the middle of a frame
and checks that the offsets it committed (:class:`SafeOffsetTracker`) let a successor finish
every frame.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from deploy.kafka.broker import LocalKafka
from schemas.chunking import Chunk, Reassembler, decode_chunk, split_payload

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data"
# Kafka's default limit is 1,048,588 bytes per record batch; a 900 kB chunk leaves ample room
# for the record key, headers and batch overhead.
MAX_MESSAGE_BYTES = 900_000
MAX_FRAME_BYTES = 32 * 1024 * 1024
DEADLINE_S = 120.0  # a bound on every waiting loop: fail with a message, never hang


# --- the piece the ingest service will own --------------------------------------------------


class SafeOffsetTracker:
    """Per partition, the offset a consumer may commit without losing a half-read frame.

    Chunks of one frame share a partition (frame key = record key). Committing "last consumed
    + 1" would skip the earlier chunks of a frame that is still incomplete, and a successor
    could never finish it. The safe offset is the offset of the first chunk of the oldest
    incomplete frame on the partition, or last consumed + 1 when none is incomplete.

    A successor that resumes there may re-read trailing chunks of frames already delivered
    (their first chunk lies before the safe offset); those never complete and must be
    recognised by frame key as already stored (the ingest's idempotency key).
    """

    def __init__(self) -> None:
        self._next: dict[TopicPartition, int] = {}
        self._open: dict[TopicPartition, dict[str, int]] = {}

    def consumed(self, tp: TopicPartition, offset: int, frame_key: str, *, complete: bool) -> None:
        """The chunk at ``offset`` was processed; ``complete``: it finished its frame."""
        frames = self._open.setdefault(tp, {})
        if complete:
            frames.pop(frame_key, None)
        else:
            frames.setdefault(frame_key, offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def forget(self, frame_key: str) -> None:
        """A frame left the consumer some other way (quarantined): stop holding offsets back."""
        for frames in self._open.values():
            frames.pop(frame_key, None)

    def safe_offsets(self) -> dict[TopicPartition, int]:
        safe = {}
        for tp, next_offset in self._next.items():
            frames = self._open.get(tp)
            safe[tp] = min(frames.values()) if frames else next_offset
        return safe

    def commit_offsets(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """What to pass to ``KafkaConsumer.commit``."""
        return {tp: OffsetAndMetadata(off, "", -1) for tp, off in self.safe_offsets().items()}


# --- helpers --------------------------------------------------------------------------------


def _producer(bootstrap: str) -> KafkaProducer:
    # acks=all with idempotence (kafka-python's default) and the default 1 MB max_request_size.
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=10,
        batch_size=256 * 1024,
        max_in_flight_requests_per_connection=5,
        request_timeout_ms=60_000,
    )


def _chunks(frame_key: str, payload: bytes) -> list[bytes]:
    chunks = split_payload(frame_key, payload, MAX_MESSAGE_BYTES)
    assert all(len(c) <= MAX_MESSAGE_BYTES for c in chunks)
    return chunks


def _send_all(
    producer: KafkaProducer, topic: str, records: Iterable[tuple[str, bytes]]
) -> list[Any]:
    """Send (frame_key, chunk) records keyed by frame key; the per-record futures."""
    return [producer.send(topic, key=key.encode(), value=value) for key, value in records]


def _await_acks(producer: KafkaProducer, futures: list[Any]) -> None:
    producer.flush(timeout=DEADLINE_S)
    for future in futures:
        future.get(timeout=DEADLINE_S)  # raises what the broker answered, if not an ack


def _interleaved(frames: list[tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
    """Chunks of consecutive pairs of frames alternately: a0 b0 a1 b1 a2 ..."""
    for pair in itertools.zip_longest(*[iter(frames)] * 2):
        chunk_lists = [[(key, c) for c in _chunks(key, payload)] for key, payload in pair if key]
        for group in itertools.zip_longest(*chunk_lists):
            yield from (item for item in group if item is not None)


def _assigned_consumer(bootstrap: str, topic: str) -> KafkaConsumer:
    """A group-less consumer of every partition of ``topic``, from the beginning."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    partitions = consumer.partitions_for_topic(topic)
    assert partitions, f"no metadata for {topic}"
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    return consumer


def _new_reassembler(quarantined: list[tuple[str, str]]) -> Reassembler:
    return Reassembler(
        max_frame_bytes=MAX_FRAME_BYTES,
        max_inflight_bytes=8 * MAX_FRAME_BYTES,
        timeout_s=600.0,
        on_quarantine=lambda key, reason, _chunks: quarantined.append((key, reason)),
    )


@dataclass
class _Collector:
    """Feeds records to a reassembler; keeps what completes, where chunks landed, interleaving."""

    reassembler: Reassembler
    frames: dict[str, bytes] = field(default_factory=dict)
    placements: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    open_by_partition: dict[int, set[str]] = field(default_factory=dict)
    interleaved: set[str] = field(default_factory=set)
    records: int = 0

    def add(self, record: Any) -> bytes | None:
        """``record``: a kafka-python ConsumerRecord (the client ships no type stubs)."""
        chunk: Chunk = decode_chunk(record.value)
        key = chunk.frame_key
        assert record.key == key.encode(), "a chunk's record key must be its frame key"
        partition: int = record.partition
        offset: int = record.offset
        self.records += 1
        self.placements.setdefault(key, []).append((partition, offset, chunk.index))
        open_frames = self.open_by_partition.setdefault(partition, set())
        if open_frames - {key}:
            self.interleaved.add(key)
        payload = self.reassembler.add(chunk, now=time.monotonic())
        if payload is None:
            open_frames.add(key)
            return None
        open_frames.discard(key)
        assert key not in self.frames, f"frame {key} delivered twice"
        self.frames[key] = payload
        return payload


def _end_offsets(consumer: KafkaConsumer) -> dict[TopicPartition, int]:
    return dict(consumer.end_offsets(list(consumer.assignment())))


def _drain(consumer: KafkaConsumer, collector: _Collector, expected: int) -> None:
    """Poll until ``expected`` frames are complete and every partition is read to its end."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        if len(collector.frames) >= expected:
            ends = _end_offsets(consumer)
            if all(consumer.position(tp) >= end for tp, end in ends.items()):
                return
        assert time.monotonic() < deadline, (
            f"{len(collector.frames)} of {expected} frames after {DEADLINE_S:.0f} s; "
            f"pending {collector.reassembler.pending_keys()[:5]}"
        )
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                collector.add(record)


def _real_sensor_frame(target_bytes: int) -> tuple[bytes, np.ndarray]:
    """Six real nuScenes camera JPEGs, repeated, then a 130k-point KITTI sweep (float32 x,y,z,i)."""
    jpegs = [p.read_bytes() for p in sorted((DATA / "nuscenes_sample").glob("*.jpg"))]
    assert len(jpegs) == 6, "expected the six nuScenes camera images in data/nuscenes_sample"
    points = np.fromfile(DATA / "kitti_object/training/velodyne/000000.bin", dtype="<f4")
    sweep = np.resize(points.reshape(-1, 4), (130_000, 4))  # tiles the real sweep to 130k
    sweep_bytes = sweep.tobytes()
    images = b"".join(jpegs)
    repeats = -(-(target_bytes - len(sweep_bytes)) // len(images))
    return images * repeats + sweep_bytes, sweep


# --- tests ----------------------------------------------------------------------------------


def test_a_20_mb_frame_of_real_sensor_data_crosses_in_chunks(kafka: LocalKafka, topic: str) -> None:
    payload, sweep = _real_sensor_frame(20 * 1024 * 1024)
    assert len(payload) >= 20 * 1024 * 1024
    key = "veh-0001/drive-0001/000042"
    chunks = _chunks(key, payload)
    assert len(chunks) > 20

    producer = _producer(kafka.bootstrap)
    try:
        _await_acks(producer, _send_all(producer, topic, ((key, c) for c in chunks)))
    finally:
        producer.close(timeout=30)

    quarantined: list[tuple[str, str]] = []
    collector = _Collector(_new_reassembler(quarantined))
    consumer = _assigned_consumer(kafka.bootstrap, topic)
    try:
        _drain(consumer, collector, expected=1)
    finally:
        consumer.close(autocommit=False)

    got = collector.frames[key]
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert got == payload
    tail = np.frombuffer(got[-sweep.nbytes :], dtype="<f4").reshape(-1, 4)
    np.testing.assert_array_equal(tail, sweep)
    placements = collector.placements[key]
    assert len({partition for partition, _, _ in placements}) == 1, "chunks split over partitions"
    assert [i for _, _, i in sorted(placements)] == list(range(len(chunks))), "out of order"
    assert collector.records == len(chunks)
    assert quarantined == []
    assert collector.reassembler.inflight_frames == 0


def _fleet_frames(vehicle: int, count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` frames of 1 kB-200 kB (log-uniform), every 32nd one 1-3 MB (chunked)."""
    rng = np.random.default_rng(seed)
    frames = []
    for seq in range(count):
        if seq % 32 == 7:
            size = int(rng.integers(1_000_000, 3_000_000))
        else:
            size = int(np.exp(rng.uniform(np.log(1_000), np.log(200_000))))
        frames.append((f"veh-{vehicle:04d}/drive-0001/{seq:06d}", rng.bytes(size)))
    return frames


def _produce_vehicle(bootstrap: str, topic: str, frames: list[tuple[str, bytes]]) -> int:
    producer = _producer(bootstrap)
    try:
        futures = _send_all(producer, topic, _interleaved(frames))
        _await_acks(producer, futures)
        return len(futures)
    finally:
        producer.close(timeout=30)


def test_a_thousand_frames_from_four_vehicles_interleave_and_reassemble(
    kafka: LocalKafka, topic: str
) -> None:
    vehicles = {v: _fleet_frames(v, 250, seed=v) for v in range(1, 5)}
    sent = {key: payload for frames in vehicles.values() for key, payload in frames}
    assert len(sent) == 1000
    assert sum(len(_chunks(k, p)) > 1 for k, p in sent.items()) >= 28

    quarantined: list[tuple[str, str]] = []
    collector = _Collector(_new_reassembler(quarantined))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="vehicle") as pool:
        producing = [
            pool.submit(_produce_vehicle, kafka.bootstrap, topic, f) for f in vehicles.values()
        ]
        consumer = _assigned_consumer(kafka.bootstrap, topic)
        try:
            _drain(consumer, collector, expected=1000)
        finally:
            consumer.close(autocommit=False)
        records_sent = sum(f.result(timeout=DEADLINE_S) for f in producing)
    elapsed = time.monotonic() - started

    assert set(collector.frames) == set(sent), "frames missing or extra"
    for key, payload in sent.items():
        assert collector.frames[key] == payload, f"{key} differs from what was sent"
    assert collector.records == records_sent, "records duplicated or lost"
    assert collector.reassembler.inflight_frames == 0
    assert quarantined == []
    for key, placements in collector.placements.items():
        assert len({p for p, _, _ in placements}) == 1, f"{key} split over partitions"
        assert [i for _, _, i in sorted(placements)] == sorted(i for _, _, i in placements)
    assert collector.interleaved, "no frame's chunks interleaved with another's on a partition"
    total_mb = sum(map(len, sent.values())) / 1e6
    print(f"\n1000 frames, {total_mb:.0f} MB, {records_sent} records in {elapsed:.1f} s")


def test_a_consumer_dying_mid_frame_loses_nothing(kafka: LocalKafka, topic: str) -> None:
    rng = np.random.default_rng(7)
    sizes = [2_200_000 if i % 2 == 0 else 40_000 for i in range(30)]  # 3-chunk and 1-chunk
    frames = [(f"veh-0009/drive-0003/{i:06d}", rng.bytes(n)) for i, n in enumerate(sizes)]
    sent = dict(frames)
    producer = _producer(kafka.bootstrap)
    try:
        _await_acks(producer, _send_all(producer, topic, _interleaved(frames)))
    finally:
        producer.close(timeout=30)
    group = f"g-{topic}"

    # Consumer A commits only safe offsets, then "crashes" while a frame is half read.
    quarantined: list[tuple[str, str]] = []
    a = _Collector(_new_reassembler(quarantined))
    tracker = SafeOffsetTracker()
    last_chunk: dict[str, tuple[TopicPartition, int]] = {}
    consumer_a = KafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=4,
    )
    committed: dict[TopicPartition, int] = {}
    naive: dict[TopicPartition, int] = {}
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not (a.records >= 16 and len(a.frames) >= 4 and a.reassembler.inflight_frames):
            assert time.monotonic() < deadline, f"consumer A read only {a.records} records"
            for tp, records in consumer_a.poll(timeout_ms=500).items():
                for record in records:
                    done = a.add(record) is not None
                    key = decode_chunk(record.value).frame_key
                    tracker.consumed(tp, record.offset, key, complete=done)
                    if done:
                        last_chunk[key] = (tp, record.offset)
                    naive[tp] = record.offset + 1
            offsets = tracker.commit_offsets()
            if offsets:
                consumer_a.commit(offsets)  # the frames themselves are "stored" by now
                committed = {tp: om.offset for tp, om in offsets.items()}
        half_read = set(a.reassembler.pending_keys())
    finally:
        consumer_a.close(autocommit=False)  # no final commit: as if the process died

    assert half_read, "consumer A should have stopped in the middle of a frame"
    assert any(committed[tp] < naive[tp] for tp in committed), (
        "the safe offset never held back: committing last+1 would have been tested just as well"
    )

    # Consumer B joins the same group and resumes from what A committed.
    b = _Collector(_new_reassembler(quarantined))
    consumer_b = KafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not consumer_b.assignment() or any(
            consumer_b.position(tp) < end for tp, end in _end_offsets(consumer_b).items()
        ):
            assert time.monotonic() < deadline, f"consumer B has {len(b.frames)} frames"
            for records in consumer_b.poll(timeout_ms=500).values():
                for record in records:
                    b.add(record)
        assert {tp: consumer_b.committed(tp) for tp in committed} == committed
    finally:
        consumer_b.close(autocommit=False)

    assert set(a.frames) | set(b.frames) == set(sent), "a frame was lost between A and B"
    assert half_read <= set(b.frames), "B did not finish the frames A was reading"
    for key, payload in b.frames.items():
        assert payload == sent[key], f"{key} differs from what was sent"
    redone = {k for k, (tp, off) in last_chunk.items() if off < committed.get(tp, 0)} & set(
        b.frames
    )
    assert redone == set(), f"frames committed by A were delivered again: {sorted(redone)}"
    # What B cannot finish are trailing chunks of frames A already delivered.
    assert set(b.reassembler.pending_keys()) <= set(a.frames)
    assert quarantined == []
