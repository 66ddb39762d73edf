"""The ingest consumer: chunks from ``fleet.frames`` into blobs and label tasks, once in effect.

One thread owns a kafka-python ``KafkaConsumer`` in the group ``kafka.group_id``. Per poll:

1. every record is decoded as a chunk (:func:`schemas.chunking.decode_chunk`; garbage is
   dead-lettered) and added to the :class:`~schemas.chunking.Reassembler`;
2. a complete payload is decoded (:func:`schemas.wire.decode_frame`; an unknown major
   version, a contract violation or a corrupt body is dead-lettered with its reason);
3. the frames completed by the poll are stored: every camera image, the LiDAR payload and the
   whole envelope into the content-addressed blob store (idempotent), then every frame and its
   task in ONE label-queue transaction (a frame key already there is a duplicate: no second
   task);
4. only then are the frames released from the :class:`~ingest_service.offsets.SafeOffsetTracker`
   and each partition's offset committed up to its safe offset (below the first chunk of any
   frame still held on it). Dead letters are acknowledged by the broker before any commit.

A database or blob-store failure is retried with exponential backoff, and nothing is committed
meanwhile: the frame is never skipped. Frames incomplete after ``reassembly.timeout_s`` (or
pushed out by ``max_inflight_bytes``) are dead-lettered (``incomplete_timeout``,
``incomplete_memory``) and their offsets released. On a rebalance the revoked partitions'
partial frames are dropped; their new owner re-reads them from the committed offset.

Dead letters go to ``kafka.dlq`` with the original record value (for a frame-level failure:
the frame's chunks, byte-identical to what was sent) and headers ``fleetal.dlq.reason``,
``fleetal.dlq.error``, ``fleetal.source.topic``, ``fleetal.source.partition``,
``fleetal.source.offset`` and ``fleetal.frame_key``. See ``docs/ingest.md``.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from ingest_service.blobrefs import BlobRefs
from ingest_service.blobstore import BlobRef, BlobStore
from ingest_service.config import IngestConfig
from ingest_service.errors import IngestError
from ingest_service.group_assign import AssignmentWatch
from ingest_service.metrics import IngestMetrics
from ingest_service.offsets import Partition, SafeOffsetTracker
from ingest_service.queue import FrameRecord, LabelQueue
from schemas.chunking import Chunk, Reassembler, decode_chunk, encode_chunk, split_payload
from schemas.errors import (
    ChecksumMismatchError,
    ChunkDecodeError,
    ChunkMismatchError,
    DecodeError,
    DuplicateChunkError,
    FrameTooLargeError,
    SchemaError,
    UnsupportedVersionError,
    ValidationError,
)
from schemas.kafka_net import METADATA_MAX_AGE_MS, first_reachable
from schemas.messages import FrameEnvelope
from schemas.wire import decode_frame

__all__ = [
    "DLQ_REASONS",
    "IngestConsumer",
    "QueueFactory",
    "blob_refs_for",
    "dead_letter_headers",
]

_BOOTSTRAP_TIMEOUT_MS: Final = 10_000
"""How long one attempt to reach the brokers waits (then :meth:`IngestConsumer.connect`
backs off and tries again)."""
T = TypeVar("T")
log = logging.getLogger(__name__)

QueueFactory = Callable[[], LabelQueue]

DLQ_REASONS: Final = (
    "not_a_chunk",
    "chunk_mismatch",
    "frame_too_large",
    "checksum_mismatch",
    "incomplete_timeout",
    "incomplete_memory",
    "unsupported_version",
    "invalid",
    "decode_error",
    "key_mismatch",
    "store_rejected",
)
_QUARANTINE_REASONS: Final = {
    "timeout": "incomplete_timeout",
    "memory": "incomplete_memory",
    "checksum": "checksum_mismatch",
}
_MAX_ERROR_HEADER: Final = 1000
_DLQ_MAX_REQUEST: Final = 2 * 1024 * 1024


def dead_letter_headers(
    reason: str, error: str, topic: str, partition: int, offset: int, frame_key: str | None
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter (what an operator filters on)."""
    headers = [
        ("fleetal.dlq.reason", reason.encode()),
        ("fleetal.dlq.error", error[:_MAX_ERROR_HEADER].encode("utf-8", "replace")),
        ("fleetal.source.topic", topic.encode()),
        ("fleetal.source.partition", str(partition).encode()),
        ("fleetal.source.offset", str(offset).encode()),
    ]
    if frame_key is not None:
        headers.append(("fleetal.frame_key", frame_key.encode("utf-8", "replace")))
    return headers


def blob_refs_for(env: FrameEnvelope, payload: bytes, blobs: BlobStore) -> dict[str, BlobRef]:
    """Put every camera image, the LiDAR payload and the whole envelope; the queue's refs.

    The layout is :class:`~ingest_service.blobrefs.BlobRefs` (flat keys ``camera/<NAME>``,
    ``lidar``, ``envelope``), which the labeling API reads back.
    """
    return BlobRefs.put_envelope(blobs, env, raw=payload).queue_refs()


class _Prefetched:
    """A blob store whose ``put`` answers from blobs already put (in parallel) by identity.

    Lets :meth:`BlobRefs.put_envelope` build the references of blobs that a thread pool
    stored (and hashed) already, without hashing them again.
    """

    def __init__(self, blobs: BlobStore, refs: Mapping[int, BlobRef]) -> None:
        self._blobs = blobs
        self._refs = refs

    def put(self, data: bytes) -> BlobRef:
        ref = self._refs.get(id(data))
        return ref if ref is not None else self._blobs.put(data)

    def get(self, ref: BlobRef) -> bytes:
        return self._blobs.get(ref)

    def exists(self, ref: BlobRef) -> bool:
        return self._blobs.exists(ref)

    def delete(self, ref: BlobRef) -> bool:
        return self._blobs.delete(ref)


def _own_error(fn: Callable[..., T], *args: Any) -> T | Exception:
    """``fn(*args)``, or the exception that is the record's own rather than the service's.

    :class:`IngestError` (a database or blob store failing) propagates, to be retried; any
    other exception is returned, to dead-letter the one record that caused it.
    """
    try:
        return fn(*args)
    except IngestError:
        raise
    except Exception as exc:
        return exc


def _blobs_of_frame(c: _Complete) -> list[bytes]:
    return _blobs_of(c.envelope, c.payload)


def _blobs_of(env: FrameEnvelope, payload: bytes) -> list[bytes]:
    data = [payload, *(cam.data for cam in env.cameras)]
    if env.lidar is not None:
        data.append(env.lidar.data)
    return data


@dataclass(slots=True)
class _Open:
    """A frame the consumer holds: where its chunks came from, for dead letters."""

    tp: Partition
    first_seen: float
    offsets: dict[int, int] = field(default_factory=dict)  # chunk index -> offset
    chunk_bytes: int = 0  # largest record value seen: the chunk size the sender used


@dataclass(slots=True)
class _Complete:
    key: str
    envelope: FrameEnvelope
    payload: bytes
    frame: _Open


@dataclass(slots=True)
class _DeadLetter:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: str
    future: Any = None


class _Rebalance:
    """Adapter to kafka-python's ConsumerRebalanceListener (built lazily: kafka is untyped)."""

    def __init__(self, owner: IngestConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.owner._on_revoked([(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.owner._on_assigned([(tp.topic, tp.partition) for tp in assigned])


def _listener(owner: IngestConsumer) -> Any:
    from kafka import ConsumerRebalanceListener

    class Listener(_Rebalance, ConsumerRebalanceListener):  # type: ignore[misc]
        pass

    return Listener(owner)


class IngestConsumer:
    """One member of the ingest consumer group; :meth:`run` until ``stop`` is set.

    ``queue_factory`` opens the label queue (again, after a database failure: a broken
    PostgreSQL connection does not heal). Not thread-safe: everything but :meth:`lag_snapshot`,
    :meth:`health` and :attr:`counts` belongs to the thread that calls :meth:`run`.
    """

    def __init__(
        self,
        config: IngestConfig,
        *,
        queue_factory: QueueFactory,
        blobs: BlobStore,
        metrics: IngestMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.queue_factory = queue_factory
        self.blobs = blobs
        self.metrics = metrics
        self.clock = clock
        self.counts: collections.Counter[str] = collections.Counter()
        self._tracker = SafeOffsetTracker()
        self._frames: dict[str, _Open] = {}
        self._reassembler = self._new_reassembler()
        self._rebuilding: tuple[Reassembler, dict[str, _Open]] | None = None
        self._known: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._completing: set[str] = set()
        self._dlq_pending: list[_DeadLetter] = []
        self._queue: LabelQueue | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._assigned: set[Partition] = set()
        self._assignment = AssignmentWatch(grace_s=2 * METADATA_MAX_AGE_MS / 1000, clock=clock)
        self._lag: dict[Partition, int] = {}
        self._lag_lock = threading.Lock()
        self._lag_at = -math.inf
        self._store_failing: str | None = None
        self._kafka_error: str | None = "not connected to Kafka yet"
        self._last_poll = -math.inf
        self._running = False
        workers = config.consumer.blob_workers
        self._pool = ThreadPoolExecutor(workers, "ingest-blobs") if workers > 1 else None

    # --- public ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; then finish the current write, commit and close.

        Brokers that are not up yet are waited for (:meth:`connect`), however long it takes.
        """
        if not self.connect(stop):
            return
        self._running = True
        try:
            while not stop.is_set():
                self.poll_once(stop)
            self._final_commit()
        finally:
            self._running = False
            self.close()

    def poll_once(self, stop: threading.Event) -> None:
        """One poll: reassemble, store what completed, dead-letter what failed, commit."""
        kafka = self.config.kafka
        batch = self._consumer.poll(
            timeout_ms=self.config.consumer.poll_timeout_ms, max_records=kafka.max_poll_records
        )
        self._last_poll = self.clock()
        self._rejoin_if_assigned_blind()
        now = self.clock()
        completed: list[_Complete] = []
        for records in batch.values():
            for record in records:
                self._handle(record, now, completed)
        self._reassembler.expire(now)
        stored = self._store(completed, stop) if completed else True
        if stored and self._flush_dead_letters(stop):
            self._commit()
        self._observe(now)

    def _rejoin_if_assigned_blind(self) -> None:
        """Rejoin the group when its leader (this member) gave a topic's partitions to no one
        for want of metadata (:mod:`ingest_service.group_assign`)."""
        if self._assigned:
            return  # it holds partitions: kafka-python's own rebalancing is at work
        topics = self._assignment.due(lambda t: bool(self._consumer.partitions_for_topic(t)))
        if not topics:
            return
        log.warning(
            "ingest: the group's assignment left %s to no member (the leader had no partition "
            "metadata for it yet); rejoining so that it is assigned",
            ", ".join(sorted(topics)),
        )
        self._consumer.unsubscribe()
        self._consumer.subscribe([self.config.kafka.topic], listener=_listener(self))

    def lag_snapshot(self) -> dict[Partition, int]:
        """The per-partition lag the loop cached last (safe from any thread)."""
        with self._lag_lock:
            return dict(self._lag)

    def connect(self, stop: threading.Event) -> bool:
        """Reach the brokers and subscribe, retrying with backoff until done (True) or
        ``stop`` is set (False). ``/healthz`` says not ready meanwhile, naming the address."""
        delay = self.config.consumer.retry_initial_s
        attempt = 0
        while not stop.is_set():
            attempt += 1
            servers = self.config.kafka.bootstrap_servers
            # kafka-python leaks a thread and sockets per client that fails to bootstrap:
            # build the clients only once a broker accepts connections (schemas.kafka_net).
            reachable, why = first_reachable(servers)
            try:
                if reachable is None:
                    raise ConnectionError(why)
                self._connect()
            except Exception as exc:  # refused, NoBrokersAvailable, KafkaTimeoutError, auth ...
                self.close_clients()
                self._kafka_error = (
                    f"Kafka unreachable at {', '.join(servers)} (attempt {attempt}, retrying in "
                    f"{delay:.1f} s): {type(exc).__name__}: {exc}"
                )
                if self.metrics is not None:
                    self.metrics.kafka_connected.set(0)
                    self.metrics.kafka_connect_failures.inc()
                log.warning("ingest: %s; check kafka.bootstrap_servers", self._kafka_error)
                stop.wait(delay)
                delay = min(delay * 2, self.config.consumer.retry_max_s)
                continue
            self._kafka_error = None
            if self.metrics is not None:
                self.metrics.kafka_connected.set(1)
            return True
        return False

    def health(self) -> tuple[bool, str]:
        """For ``/healthz``: the brokers reached, polling recently, the label queue writable."""
        if self._kafka_error is not None:
            return False, self._kafka_error
        if not self._running:
            return False, "consumer not running"
        idle = self.clock() - self._last_poll
        limit = max(60.0, self.config.consumer.poll_timeout_ms / 1000 * 10)
        if idle > limit:
            return False, f"consumer has not polled for {idle:.0f} s"
        if self._store_failing is not None:
            return False, f"storing frames fails: {self._store_failing}"
        return True, f"ok: {len(self._assigned)} partitions assigned"

    @property
    def assigned(self) -> set[Partition]:
        return set(self._assigned)

    def close(self) -> None:
        """Close the Kafka clients and the queue (without committing)."""
        self.close_clients()
        self._close_queue()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def close_clients(self) -> None:
        """Close the Kafka consumer and the dead-letter producer (without committing)."""
        if self._producer is not None:
            try:
                self._producer.close(timeout=10)
            except Exception:
                log.warning("ingest: closing the dead-letter producer failed", exc_info=True)
            self._producer = None
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:
                log.warning("ingest: closing the consumer failed", exc_info=True)
            self._consumer = None

    # --- Kafka ----------------------------------------------------------------------------

    def _connect(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        k = self.config.kafka
        security = k.security.kafka_kwargs()
        self._consumer = KafkaConsumer(
            bootstrap_servers=list(k.bootstrap_servers),
            client_id=k.client_id,
            group_id=k.group_id,
            enable_auto_commit=False,
            auto_offset_reset=k.auto_offset_reset,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_interval_ms=k.max_poll_interval_ms,
            max_poll_records=k.max_poll_records,
            max_partition_fetch_bytes=k.max_partition_fetch_bytes,
            request_timeout_ms=k.request_timeout_ms,
            bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            partition_assignment_strategy=self._assignment.strategies(),
            **security,
        )
        self._consumer.subscribe([k.topic], listener=_listener(self))
        self._producer = KafkaProducer(
            bootstrap_servers=list(k.bootstrap_servers),
            client_id=f"{k.client_id}-dlq",
            acks="all",
            enable_idempotence=True,
            max_in_flight_requests_per_connection=5,
            linger_ms=5,
            max_request_size=_DLQ_MAX_REQUEST,
            bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
            **security,
        )
        log.info("ingest: consuming %s as group %s, dead letters to %s", k.topic, k.group_id, k.dlq)

    def _on_assigned(self, partitions: list[Partition]) -> None:
        self._assigned = set(partitions)
        log.info("ingest: assigned %s", sorted(partitions))

    def _on_revoked(self, partitions: list[Partition]) -> None:
        """Commit what is safe, then drop the partial frames of the revoked partitions."""
        if self.metrics is not None:
            self.metrics.rebalances.inc()
        log.info("ingest: revoked %s", sorted(partitions))
        if self._flush_dead_letters(None):
            self._commit()
        dropped = set(self._tracker.forget(partitions))
        dropped |= {k for k, f in self._frames.items() if f.tp in set(partitions)}
        self._drop_frames(dropped)
        self._assigned -= set(partitions)
        with self._lag_lock:
            for tp in partitions:
                self._lag.pop(tp, None)

    def _commit(self) -> None:
        offsets = self._tracker.to_commit()
        offsets = {tp: off for tp, off in offsets.items() if tp in self._assigned}
        if not offsets:
            return
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        try:
            self._consumer.commit(
                {
                    TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                    for (t, p), o in offsets.items()
                }
            )
        except Exception as exc:  # a rebalance in between: the records are redelivered
            if self.metrics is not None:
                self.metrics.commit_failures.inc()
            log.warning("ingest: offset commit failed (%s); records will be redelivered", exc)
            return
        self._tracker.mark_committed(offsets)

    def _final_commit(self) -> None:
        if self._flush_dead_letters(None):
            self._commit()

    # --- records --------------------------------------------------------------------------

    def _handle(self, record: Any, now: float, completed: list[_Complete]) -> None:
        """One record; whatever fails in it (other than the service's own stores) is
        dead-lettered with its reason, and the loop goes on: no record can stop the group."""
        try:
            self._handle_record(record, now, completed)
        except IngestError:
            raise
        except Exception as exc:
            tp: Partition = (record.topic, record.partition)
            value = record.value if record.value is not None else b""
            log.exception("ingest: %s[%d]@%d failed unexpectedly", tp[0], tp[1], record.offset)
            self._dead_letter(record.key, value, "internal_error", exc, tp, record.offset, None)
            # A frame this chunk belonged to stays held until it completes or is quarantined.
            self._tracker.consumed(tp, record.offset)

    def _handle_record(self, record: Any, now: float, completed: list[_Complete]) -> None:
        tp: Partition = (record.topic, record.partition)
        offset: int = record.offset
        value: bytes = record.value if record.value is not None else b""
        if self.metrics is not None:
            self.metrics.consumed_bytes.inc(len(value))
        try:
            chunk = decode_chunk(value)
        except ChunkDecodeError as exc:
            self._dead_letter(record.key, value, "not_a_chunk", exc, tp, offset, exc.frame_key)
            self._tracker.consumed(tp, offset)
            return
        key = chunk.frame_key
        frame = self._frames.get(key)
        opened = frame is None
        if frame is None:
            if self._already_stored(key):
                # re-sent frame, or trailing chunks of a frame finished before our offset
                self._tracker.consumed(tp, offset)
                if chunk.index == chunk.count - 1:
                    self._count_duplicate()
                return
            frame = _Open(tp, now)
            self._frames[key] = frame
        frame.offsets.setdefault(chunk.index, offset)
        frame.chunk_bytes = max(frame.chunk_bytes, len(value))
        self._tracker.hold(tp, offset, key)
        try:
            payload = self._reassembler.add(chunk, now)
        except DuplicateChunkError:
            self.counts["duplicate_chunks"] += 1
            if self.metrics is not None:
                self.metrics.duplicate_chunks.inc()
            return
        except ChecksumMismatchError:
            return  # the quarantine hook dead-lettered the frame's chunks and released it
        except (ChunkMismatchError, FrameTooLargeError) as exc:
            reason = "frame_too_large" if isinstance(exc, FrameTooLargeError) else "chunk_mismatch"
            self._dead_letter(record.key, value, reason, exc, tp, offset, key)
            if opened:
                self._frames.pop(key, None)
                self._tracker.release(key)
            return
        if payload is None:
            return
        del self._frames[key]
        try:
            envelope = decode_frame(payload)
        except SchemaError as exc:
            self._dead_letter_frame(key, frame, payload, _decode_reason(exc), exc)
            self._tracker.release(key)
            return
        if envelope.key != key:
            error = f"envelope says {envelope.key!r}, its chunks say {key!r}"
            self._dead_letter_frame(key, frame, payload, "key_mismatch", ValueError(error))
            self._tracker.release(key)
            return
        self._completing.add(key)
        completed.append(_Complete(key, envelope, payload, frame))

    def _already_stored(self, key: str) -> bool:
        if key in self._known or key in self._completing:
            return True
        try:
            queue = self._get_queue()
            row = queue.db.execute("SELECT 1 FROM frames WHERE frame_key = ?", (key,)).one()
        except IngestError:
            self._close_queue()
            return False  # cannot tell: reassemble it; the idempotent insert decides
        if row is not None:
            self._remember(key)
            return True
        return False

    def _remember(self, key: str) -> None:
        limit = self.config.consumer.known_keys
        if limit <= 0:
            return
        self._known[key] = None
        self._known.move_to_end(key)
        while len(self._known) > limit:
            self._known.popitem(last=False)

    def _count_duplicate(self) -> None:
        self.counts["duplicates"] += 1
        if self.metrics is not None:
            self.metrics.duplicates.inc()

    # --- storing --------------------------------------------------------------------------

    def _store(self, completed: list[_Complete], stop: threading.Event) -> bool:
        """Blobs, then one transaction for every completed frame; retried until done or stop.

        Only the service's own failures (:class:`IngestError`: database, blob store) are
        retried; any other failure is the record's own and dead-letters that frame alone.
        """
        started = time.perf_counter()
        refs = self._retrying(stop, lambda: self._put_blobs(completed))
        if refs is None:
            self._abandon(completed)
            return False
        good: list[tuple[_Complete, dict[str, BlobRef]]] = []
        for c, r in zip(completed, refs, strict=True):
            if isinstance(r, Exception):
                self._reject(c, "invalid" if isinstance(r, ValueError) else "internal_error", r)
            else:
                good.append((c, r))
        if not good:
            return True
        try:
            results = self._retrying(stop, lambda: self._transaction(good))
        except Exception:  # a record the queue refuses: find it, store the others
            ok = True
            for item in good:
                ok = self._store_one(item, stop) and ok
            return ok
        if results is None:
            self._abandon([c for c, _ in good])
            return False
        for (c, _), inserted in zip(good, results, strict=True):
            self._stored(c, inserted)
        if self.metrics is not None:
            self.metrics.store_seconds.observe(time.perf_counter() - started)
        return True

    def _store_one(self, item: tuple[_Complete, dict[str, BlobRef]], stop: threading.Event) -> bool:
        c = item[0]
        try:
            results = self._retrying(stop, lambda: self._transaction([item]))
        except Exception as exc:
            reason = "store_rejected" if isinstance(exc, ValueError) else "internal_error"
            self._reject(c, reason, exc)
            return True
        if results is None:
            self._abandon([c])
            return False
        self._stored(c, results[0])
        return True

    def _put_blobs(self, completed: list[_Complete]) -> list[dict[str, BlobRef] | Exception]:
        """Every blob of the batch, written and fsynced by a small thread pool (the I/O and
        sha256 release the GIL), then each frame's references, or the error of that frame.

        :class:`IngestError` (the store failing) propagates, to be retried for the batch.
        """
        per_frame = [_own_error(_blobs_of_frame, c) for c in completed]
        data = [d for blobs in per_frame if not isinstance(blobs, Exception) for d in blobs]
        if self._pool is None or len(data) == 1:
            stored = [_own_error(self.blobs.put, d) for d in data]
        else:
            stored = list(self._pool.map(lambda d: _own_error(self.blobs.put, d), data))
        by_id = dict(zip(map(id, data), stored, strict=True))
        view = _Prefetched(
            self.blobs, {k: v for k, v in by_id.items() if not isinstance(v, Exception)}
        )
        out: list[dict[str, BlobRef] | Exception] = []
        for c, blobs in zip(completed, per_frame, strict=True):
            failed = (
                blobs
                if isinstance(blobs, Exception)
                else next((e for d in blobs if isinstance(e := by_id[id(d)], Exception)), None)
            )
            if failed is None:
                failed_or_refs = _own_error(blob_refs_for, c.envelope, c.payload, view)
                out.append(failed_or_refs)
            else:
                out.append(failed)
        return out

    def _transaction(self, items: list[tuple[_Complete, dict[str, BlobRef]]]) -> list[bool]:
        queue = self._get_queue()
        with queue.transaction() as tx:
            return [tx.ingest_frame(FrameRecord.from_envelope(c.envelope), r) for c, r in items]

    def _retrying(self, stop: threading.Event, attempt: Callable[[], Any]) -> Any:
        """``attempt()`` until it succeeds (its result) or ``stop`` is set (None).

        Only the service's own failures (database, blob store: :class:`IngestError`) are
        retried; a ``ValueError`` (the queue refusing a record) propagates.
        """
        delay = self.config.consumer.retry_initial_s
        deadline: float | None = None
        while True:
            try:
                result = attempt()
            except IngestError as exc:
                self._store_failing = str(exc)
                self._close_queue()
                name = type(exc).__name__
                self.counts[f"retry_{name}"] += 1
                if self.metrics is not None:
                    self.metrics.store_retries.labels(name).inc()
                log.error("ingest: storing frames failed, retrying in %.1f s: %s", delay, exc)
            else:
                self._store_failing = None
                return result
            if stop.is_set():
                if deadline is None:
                    deadline = self.clock() + self.config.consumer.drain_timeout_s
                if self.clock() >= deadline:
                    return None
                time.sleep(min(delay, max(0.0, deadline - self.clock())))
            else:
                stop.wait(delay)
            delay = min(delay * 2, self.config.consumer.retry_max_s)

    def _stored(self, c: _Complete, inserted: bool) -> None:
        self._tracker.release(c.key)
        self._completing.discard(c.key)
        self._remember(c.key)
        if inserted:
            self.counts["ingested"] += 1
            if self.metrics is not None:
                self.metrics.frames_ingested.inc()
                self.metrics.ingest_bytes.inc(len(c.payload))
        else:
            self._count_duplicate()

    def _reject(self, c: _Complete, reason: str, exc: BaseException) -> None:
        error = f"frame {c.key} not stored: {type(exc).__name__}: {exc}"
        self._dead_letter_frame(c.key, c.frame, c.payload, reason, ValueError(error))
        self._tracker.release(c.key)
        self._completing.discard(c.key)

    def _abandon(self, completed: list[_Complete]) -> None:
        """Stopping with frames unstored: keep them held so their offsets are not committed."""
        for c in completed:
            self._completing.discard(c.key)
        log.warning(
            "ingest: stopping with %d frames not stored; Kafka redelivers them", len(completed)
        )

    def _get_queue(self) -> LabelQueue:
        if self._queue is None:
            self._queue = self.queue_factory()
        return self._queue

    def _close_queue(self) -> None:
        if self._queue is not None:
            try:
                self._queue.close()
            except Exception:
                log.debug("ingest: closing a failed queue connection raised", exc_info=True)
            self._queue = None

    # --- reassembly -----------------------------------------------------------------------

    def _new_reassembler(self) -> Reassembler:
        r = self.config.reassembly
        return Reassembler(
            max_frame_bytes=r.max_frame_bytes,
            max_inflight_bytes=r.max_inflight_bytes,
            timeout_s=r.timeout_s,
            on_quarantine=self._on_quarantine,
        )

    def _on_quarantine(self, key: str, why: str, chunks: list[Chunk]) -> None:
        if self._rebuilding is not None:  # moving kept frames to a fresh reassembler
            fresh, keep = self._rebuilding
            frame = keep.get(key)
            if frame is not None:
                for chunk in chunks:
                    fresh.add(chunk, frame.first_seen)
            return
        reason = _QUARANTINE_REASONS.get(why, f"incomplete_{why}")
        frame = self._frames.pop(key, None)
        if why in ("timeout", "memory"):
            self.counts[f"expired_{why}"] += 1
            if self.metrics is not None:
                self.metrics.reassembly_expired.labels(why).inc()
        log.warning(
            "ingest: frame %s quarantined (%s), %d chunks dead-lettered", key, why, len(chunks)
        )
        for chunk in chunks:
            tp = frame.tp if frame is not None else ("?", -1)
            offset = frame.offsets.get(chunk.index, -1) if frame is not None else -1
            error = f"frame {key} quarantined by the reassembler: {why}"
            self._queue_dead_letter(
                key.encode(), encode_chunk(chunk), reason, error, tp, offset, key
            )
        self._tracker.release(key)

    def _drop_frames(self, keys: set[str]) -> None:
        """Forget partial frames without dead-lettering them (their partition was revoked)."""
        if not keys:
            return
        keep = {k: f for k, f in self._frames.items() if k not in keys}
        old, fresh = self._reassembler, self._new_reassembler()
        if keep:
            self._rebuilding = (fresh, keep)
            try:
                old.expire(math.inf)
            finally:
                self._rebuilding = None
        self._reassembler = fresh
        self._frames = keep
        for key in keys:
            self._completing.discard(key)
        log.info("ingest: dropped %d partial frames of revoked partitions", len(keys))

    # --- dead letters ---------------------------------------------------------------------

    def _dead_letter(
        self,
        key: bytes | None,
        value: bytes,
        reason: str,
        exc: BaseException,
        tp: Partition,
        offset: int,
        frame_key: str | None,
    ) -> None:
        log.warning("ingest: %s[%d]@%d dead-lettered (%s): %s", tp[0], tp[1], offset, reason, exc)
        self._queue_dead_letter(key, value, reason, str(exc), tp, offset, frame_key)

    def _dead_letter_frame(
        self, key: str, frame: _Open, payload: bytes, reason: str, exc: BaseException
    ) -> None:
        """Dead-letter a whole frame as the chunks it came in (byte-identical)."""
        log.warning("ingest: frame %s dead-lettered (%s): %s", key, reason, exc)
        # The largest chunk seen is the size the sender cut at: re-cutting the payload at it
        # gives back the very records that were sent.
        chunks = split_payload(key, payload, frame.chunk_bytes)
        for index, value in enumerate(chunks):
            offset = frame.offsets.get(index, -1)
            self._queue_dead_letter(key.encode(), value, reason, str(exc), frame.tp, offset, key)

    def _queue_dead_letter(
        self,
        key: bytes | None,
        value: bytes,
        reason: str,
        error: str,
        tp: Partition,
        offset: int,
        frame_key: str | None,
    ) -> None:
        headers = dead_letter_headers(reason, error, tp[0], tp[1], offset, frame_key)
        letter = _DeadLetter(key, value, headers, reason)
        self._send_dead_letter(letter)
        self._dlq_pending.append(letter)
        self.counts[f"dlq_{reason}"] += 1
        if self.metrics is not None:
            self.metrics.dead_lettered.labels(reason).inc()

    def _send_dead_letter(self, letter: _DeadLetter) -> None:
        try:
            letter.future = self._producer.send(
                self.config.kafka.dlq, key=letter.key, value=letter.value, headers=letter.headers
            )
        except Exception as exc:  # buffer full, metadata timeout: retried at flush
            log.warning("ingest: dead-letter send failed (%s); will retry", exc)
            letter.future = None

    def _flush_dead_letters(self, stop: threading.Event | None) -> bool:
        """Wait until the broker acknowledged every dead letter; resend failures.

        False when they could not be delivered before ``stop`` (then nothing is committed).
        """
        delay = self.config.consumer.retry_initial_s
        deadline = None if stop is not None else self.clock() + 30.0
        while self._dlq_pending:
            self._producer.flush(timeout=30)
            failed = []
            for letter in self._dlq_pending:
                try:
                    if letter.future is None:
                        raise RuntimeError("not sent")
                    letter.future.get(timeout=30)
                except Exception as exc:
                    log.warning("ingest: dead letter not acknowledged (%s); resending", exc)
                    failed.append(letter)
            self._dlq_pending = failed
            if not failed:
                return True
            if (stop is not None and stop.is_set()) or (
                deadline is not None and self.clock() > deadline
            ):
                return False
            time.sleep(delay)
            delay = min(delay * 2, self.config.consumer.retry_max_s)
            for letter in failed:
                self._send_dead_letter(letter)
        return True

    # --- observability --------------------------------------------------------------------

    def _observe(self, now: float) -> None:
        if self.metrics is not None:
            self.metrics.inflight_frames.set(self._reassembler.inflight_frames)
            self.metrics.inflight_bytes.set(self._reassembler.inflight_bytes)
            self.metrics.assigned_partitions.set(len(self._assigned))
        if now - self._lag_at < self.config.consumer.lag_interval_s:
            return
        self._lag_at = now
        self._refresh_lag()

    def _refresh_lag(self) -> None:
        from kafka import TopicPartition

        tps = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        lag: dict[Partition, int] = {}
        if tps:
            try:
                ends = self._consumer.end_offsets(tps, timeout_ms=5000)
                for tp in tps:
                    position = self._consumer.position(tp, timeout_ms=1000)
                    end = ends.get(tp)
                    if position is not None and end is not None:
                        lag[(tp.topic, tp.partition)] = max(0, int(end) - int(position))
            except Exception as exc:
                log.debug("ingest: lag refresh failed: %s", exc)
                return
        with self._lag_lock:
            self._lag = lag


def _decode_reason(exc: SchemaError) -> str:
    if isinstance(exc, UnsupportedVersionError):
        return "unsupported_version"
    if isinstance(exc, ValidationError):
        return "invalid"
    if isinstance(exc, DecodeError):
        return "decode_error"
    return "decode_error"


def queue_opener(config: IngestConfig) -> QueueFactory:
    """A :data:`QueueFactory` for ``config.queue``."""
    from ingest_service.queue import QueueConfig

    q = config.queue

    def open_queue() -> LabelQueue:
        return LabelQueue.open(
            q.database,
            config=QueueConfig(ageing_per_hour=q.ageing_per_hour, max_attempts=q.max_attempts),
            busy_timeout_s=q.busy_timeout_s,
        )

    return open_queue


def counts_summary(counts: Mapping[str, int]) -> str:
    """A one-line summary of :attr:`IngestConsumer.counts` for logs."""
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
