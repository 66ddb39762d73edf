"""The Kafka sink: moves spooled frames to the ``fleet.frames`` topic, at least once.

One sender thread owns the producer. Each round it leases a batch from the spool, splits every
payload into chunks under ``max_message_bytes`` (:func:`schemas.chunking.split_payload`), sends
each chunk keyed by the frame key (so every chunk of a frame lands on one partition, in order),
and waits for the broker's acknowledgement of every chunk. Then, in one spool transaction:

* every frame whose chunks were all acknowledged is deleted from the spool (``ack``);
* a frame the broker refused for good (:func:`is_permanent`: too large for the broker, not
  authorised, an invalid record) is set aside in the spool (``hold``: kept, counted, never
  leased again by an ordinary round), and so is a frame that failed ``hold_after_attempts``
  times in rounds where other frames were delivered: it cannot hold back the others;
* every other frame goes back to pending (``nack``; ``attempts + 1`` only when something else
  in the round was delivered, i.e. the frame and not the link failed). Only when nothing was
  delivered and something failed for a retriable reason is the round failed: the producer is
  rebuilt and the sender backs off, exponentially with jitter, capped at ``backoff_max_s``.

Every ``held_retry_s`` one held frame (the one held longest) is sent again, alone; when it is
delivered, whatever held them was fixed (a broker limit raised, an ACL granted) and every held
frame goes back to pending. kafka-python 3.0.12's idempotent producer turns such a refusal into
a fatal state that fails every later send, so the producer is rebuilt once after a refusal, and
frames refused together are each sent alone before one is held (the innocent ones then go).

Nothing the pipeline thread does waits for the network: it only ever calls ``Spool.put``. A slow
or absent broker blocks this thread, and only this one. The producer is built lazily and rebuilt
after a failed round: kafka-python raises at construction when no broker answers within
``bootstrap_timeout_ms``, which the sink counts and retries with the same backoff.

Producer settings: ``acks="all"``, ``enable_idempotence=True`` (kafka-python 3 supports it and
needs ``max_in_flight_requests_per_connection <= 5``), retries bounded by
``delivery_timeout_ms``. kafka-python 3 has no ``buffer_memory`` bound; the sink bounds what it
hands to the producer instead: one leased batch (``batch_max_frames``, ``batch_max_bytes``) at a
time. docs/spool-and-sink.md has the guarantees and the numbers.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from edge_agent.spool import Spool, SpoolEntry, SpoolError
from schemas.chunking import split_payload
from schemas.errors import SchemaError
from schemas.kafka_config import KafkaSecurity
from schemas.kafka_net import first_reachable

log = logging.getLogger(__name__)

__all__ = [
    "KafkaSink",
    "Producer",
    "ProducerFactory",
    "RecordFuture",
    "SinkConfig",
    "SinkObserver",
    "SinkStats",
]

# Kafka's default broker limit (message.max.bytes) is 1 MiB plus a little; our chunks stay under
# max_message_bytes, and the producer's request limit leaves room for record and batch headers.
_KAFKA_DEFAULT_MAX_REQUEST: Final = 1_048_576
_WAIT_SLICE_S: Final = 0.2

# kafka-python errors after which resending the same frame can never succeed: the record is too
# large for the broker or invalid, or this client may not write to the topic. Matched by class
# name over the exception's MRO (no kafka import here; subclasses count). Every other error,
# including kafka-python's non-"retriable" ones such as BrokerNotAvailableError, is treated as
# a property of the link and retried.
PERMANENT_ERRORS: Final = frozenset(
    {
        "MessageSizeTooLargeError",
        "RecordListTooLargeError",
        "RecordTooLargeError",
        "InvalidRecordError",
        "InvalidTimestampError",
        "UnsupportedForMessageFormatError",
        "InvalidTopicError",
        "PolicyViolationError",
        "AuthorizationError",
        "TopicAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
        "TransactionalIdAuthorizationFailedError",
    }
)


def is_permanent(exc: BaseException) -> bool:
    """True when resending the same frame to the same topic can never succeed."""
    return any(cls.__name__ in PERMANENT_ERRORS for cls in type(exc).__mro__)


class RecordFuture(Protocol):
    """What the sink needs of kafka-python's ``FutureRecordMetadata``."""

    is_done: bool

    def get(self, timeout: float | None = None) -> Any: ...


class Producer(Protocol):
    """What the sink needs of ``kafka.KafkaProducer``; tests pass fakes."""

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


ProducerFactory = Callable[[Mapping[str, object]], Producer]


def kafka_producer(kwargs: Mapping[str, object]) -> Producer:
    """The default factory: a real ``kafka.KafkaProducer``, built only once a bootstrap server
    accepts connections.

    kafka-python 3.0.12 leaks a thread and four sockets for every ``KafkaProducer`` that fails
    to bootstrap (:mod:`schemas.kafka_net`); a vehicle offline for hours would retry that
    thousands of times. Raises ``ConnectionError`` naming the servers instead.
    """
    from kafka import KafkaProducer

    raw = kwargs.get("bootstrap_servers", ())
    servers = (
        [raw]
        if isinstance(raw, str)
        else [str(s) for s in raw]
        if isinstance(raw, list | tuple)
        else []
    )
    reachable, why = first_reachable(servers)
    if reachable is None:
        raise ConnectionError(f"no Kafka bootstrap server accepts connections: {why}")
    producer: Producer = KafkaProducer(**kwargs)
    return producer


def close_producer(producer: Producer, timeout: float) -> None:
    """Close ``producer`` for sure, within about ``timeout`` seconds.

    kafka-python 3.0.12's ``close(timeout)`` flushes first and raises ``KafkaTimeoutError``
    when records are still pending, *before* it stops its sender thread, which then keeps
    reconnecting (and leaking a socket per failed connect) for the life of the process. So when
    ``close`` raises, stop that thread the way ``close`` itself would have: ``force_close``
    fails the pending records (they are still in the spool, nacked) and ends the thread.
    """
    try:
        producer.close(timeout=timeout)
        return
    except Exception as exc:
        log.debug("sink: producer close() raised %s; forcing it", type(exc).__name__)
    sender = getattr(producer, "_sender", None)
    if sender is None:
        return
    try:
        sender.force_close()
        sender.join(max(timeout, 1.0))
        closer = getattr(producer, "close", None)
        if closer is not None and not sender.is_alive():
            with contextlib.suppress(Exception):
                closer(timeout=0)
    except Exception:
        log.warning("sink: could not force the Kafka producer closed", exc_info=True)


class SinkObserver(Protocol):
    """Optional hook for the metrics layer (histograms, error labels).

    An observer may also have ``held(frame_key, error)``: called for each frame set aside.
    """

    def delivered(self, frame_key: str, nbytes: int, seconds: float) -> None: ...

    def send_failed(self, error: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """The ``[kafka]`` table of the agent: where to send, how big, how patiently."""

    bootstrap_servers: tuple[str, ...] = ("localhost:9092",)
    topic: str = "fleet.frames"
    """The Kafka topic selected frames are sent to (the ingest service's kafka.topic)."""
    client_id: str = "edge-agent"
    """The producer's client id, in the brokers' logs and quotas."""
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # Chunk size bound, header included; under the broker's default 1 MB message limit.
    max_message_bytes: int = 900_000
    # One leased batch at a time: this bounds the producer's memory.
    batch_max_frames: int = 8
    batch_max_bytes: int = 32 * 1024 * 1024
    """Bytes of frames one leased batch holds at most."""
    linger_ms: int = 5
    """How long the producer waits to fill a batch (kafka-python linger_ms)."""
    request_timeout_ms: int = 15_000
    """How long the producer waits for a broker's answer to one request."""
    delivery_timeout_ms: int = 60_000
    """How long a send may take, retries included, before the frame counts as failed (it stays
    spooled)."""
    max_in_flight_requests: int = 5
    """Unacknowledged requests per broker connection (idempotence keeps the order)."""
    bootstrap_timeout_ms: int = 10_000
    """How long to wait for the brokers' first answer when connecting."""
    max_block_ms: int = 10_000
    """How long a send may block for metadata or buffer space."""
    backoff_initial_s: float = 0.5
    """First wait before retrying after a failed send; doubles up to backoff_max_s."""
    backoff_max_s: float = 30.0
    """Longest wait between retries while the brokers are away."""
    idle_poll_s: float = 0.1
    """How often the sender looks at the spool when it is empty."""
    # A frame that failed this many sends while other frames were delivered is held.
    hold_after_attempts: int = 10
    # Every this many seconds one held frame is retried; delivered: every held frame is released.
    held_retry_s: float = 600.0
    # Commands that end (replay --kafka, send) give up once nothing was acknowledged this long;
    # the daemon never gives up. The frames left stay in a spool file (docs/spool-and-sink.md).
    stall_timeout_s: float = 60.0
    # kafka-python's own log lines become one summary line per this many seconds; 0: unchanged.
    log_summary_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.bootstrap_servers or not all(self.bootstrap_servers):
            raise ValueError("bootstrap_servers: at least one host:port is needed")
        if not self.topic:
            raise ValueError("topic: must not be empty")
        if not 1024 <= self.max_message_bytes <= 100 * 1024 * 1024:
            raise ValueError(
                f"max_message_bytes: {self.max_message_bytes} is not in 1 KiB..100 MiB"
            )
        for name in ("batch_max_frames", "batch_max_bytes", "request_timeout_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.linger_ms < 0:
            raise ValueError(f"linger_ms: must be >= 0, got {self.linger_ms}")
        if not 1 <= self.max_in_flight_requests <= 5:
            raise ValueError(
                f"max_in_flight_requests: {self.max_in_flight_requests} is not in 1..5 "
                "(idempotent producers keep order only up to 5)"
            )
        if self.delivery_timeout_ms < self.linger_ms + self.request_timeout_ms:
            raise ValueError(
                f"delivery_timeout_ms: {self.delivery_timeout_ms} must be at least linger_ms + "
                f"request_timeout_ms ({self.linger_ms + self.request_timeout_ms})"
            )
        for name in ("bootstrap_timeout_ms", "max_block_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError(
                f"backoff_initial_s: need 0 < backoff_initial_s ({self.backoff_initial_s}) <= "
                f"backoff_max_s ({self.backoff_max_s})"
            )
        if self.idle_poll_s <= 0:
            raise ValueError(f"idle_poll_s: must be positive, got {self.idle_poll_s}")
        if self.hold_after_attempts < 1:
            raise ValueError(f"hold_after_attempts: must be >= 1, got {self.hold_after_attempts}")
        if not self.held_retry_s > 0:
            raise ValueError(f"held_retry_s: must be positive, got {self.held_retry_s}")
        if not self.stall_timeout_s > 0:
            raise ValueError(f"stall_timeout_s: must be positive, got {self.stall_timeout_s}")
        if not self.log_summary_s >= 0:
            raise ValueError(f"log_summary_s: must be >= 0, got {self.log_summary_s}")

    def producer_kwargs(self) -> dict[str, object]:
        """kafka-python ``KafkaProducer`` keyword arguments."""
        return {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "acks": "all",
            "enable_idempotence": True,
            "max_in_flight_requests_per_connection": self.max_in_flight_requests,
            "linger_ms": self.linger_ms,
            "request_timeout_ms": self.request_timeout_ms,
            "delivery_timeout_ms": self.delivery_timeout_ms,
            "max_block_ms": self.max_block_ms,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
            "max_request_size": max(_KAFKA_DEFAULT_MAX_REQUEST, self.max_message_bytes + 65_536),
            # Payloads are JPEG and zstd already: compressing again costs CPU and saves nothing.
            "compression_type": None,
            **self.security.kafka_kwargs(),
        }

    @property
    def frame_timeout_s(self) -> float:
        """How long a round waits for acknowledgements before it gives up on a frame."""
        return (self.delivery_timeout_ms + self.max_block_ms) / 1000 + 5.0


@dataclass(frozen=True, slots=True)
class SinkStats:
    """A snapshot of the sink's counters (totals since construction)."""

    frames_sent_total: int
    chunks_sent_total: int
    bytes_sent_total: int
    send_errors_total: int
    send_errors_by_type: Mapping[str, int]
    rounds_failed_total: int
    producer_errors_total: int
    dead_letter_total: int
    spool_errors_total: int
    latency_seconds_sum: float
    latency_seconds_count: int
    last_latency_s: float
    consecutive_failures: int
    backoff_s: float
    connected: bool
    held_total: int = 0
    held_by_type: Mapping[str, int] = field(default_factory=dict)
    released_total: int = 0
    # monotonic clock of the last acknowledged frame (None: none yet) and of the sink's start
    last_delivery_at: float | None = None
    started_at: float = 0.0


def _sendable(spool: Spool) -> int:
    stats = spool.stats()
    return stats.pending + stats.inflight


class _RoundFailedError(Exception):
    """Internal: the round could not start (no producer, spool error)."""


@dataclass(slots=True)
class _Flight:
    entry: SpoolEntry
    futures: list[Any]
    started: float
    error: str | None = None
    latency: float = 0.0
    permanent: bool = False
    probe: bool = False
    detail: str = ""


class KafkaSink:
    """Sends spooled frames to Kafka from its own thread; see the module docstring.

    ``run_once()`` does one round (tests call it directly); ``start()`` runs rounds in a daemon
    thread until ``stop()``. The spool is not owned: the caller closes it after ``close()``.
    """

    def __init__(
        self,
        config: SinkConfig,
        spool: Spool,
        *,
        producer_factory: ProducerFactory = kafka_producer,
        observer: SinkObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.spool = spool
        self._factory = producer_factory
        self._observer = observer
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._producer: Producer | None = None
        self._round_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._abort_at: float | None = None
        self._thread: threading.Thread | None = None
        self._building = False
        self._closed = False
        self._next_attempt = 0.0
        self._backoff_s = 0.0
        self._failing_since: float | None = None
        # Frames delivered whose ack could not be written yet (disk full): retried first.
        self._unacked: list[str] = []
        self._unnacked: list[str] = []
        # counters
        self._frames = self._chunks = self._bytes = 0
        self._errors = self._rounds_failed = self._producer_errors = 0
        self._dead = self._spool_errors = 0
        self._errors_by_type: dict[str, int] = {}
        self._lat_sum = 0.0
        self._lat_count = 0
        self._last_lat = 0.0
        self._consecutive = 0
        self._held = self._released = 0
        self._held_by_type: dict[str, int] = {}
        self._unheld: dict[str, str] = {}
        self._probes: set[str] = set()
        # Frames refused for good together with others: the producer's fatal state may have
        # failed the innocent ones too, so each is sent alone (``_solo``) before it is held.
        self._suspects: set[str] = set()
        self._solo: set[str] = set()
        self._started_at = clock()
        self._last_delivery: float | None = None
        self._next_held_retry = clock() + config.held_retry_s

    # -- one round -------------------------------------------------------------------------

    def run_once(self) -> int:
        """Lease, send, wait, ack/nack one batch; returns the number of frames delivered.

        Never raises for broker or spool trouble: failures are counted, the frames go back to
        pending and the backoff grows (``start()``'s loop honours it; direct callers may too).
        """
        with self._round_lock:
            try:
                self._settle_leftovers()
                if not self._work_waiting():
                    return 0  # no producer (no connection) while there is nothing to send
                producer = self._ensure_producer()
                if self._stop.is_set():
                    # stop() may have left while the producer was being built (it does not
                    # wait for that): touch the spool no more; the loop's end closes it.
                    return 0
                entries = self._lease()
            except _RoundFailedError:
                self._round_failed()
                return 0
            if not entries:
                return 0
            flights = self._send(producer, entries)
            self._wait(flights)
            delivered = [f for f in flights if f.error is None]
            failed = [f for f in flights if f.error is not None]
            self._settle(delivered, failed)
            link_failed = not delivered and any(not f.permanent for f in failed)
            if link_failed:
                self._round_failed()
                self._drop_producer()
            else:
                self._round_ok()
                if any(f.permanent for f in failed):
                    # kafka-python 3.0.12's idempotent producer turns a non-retriable batch
                    # error into a fatal state that fails every later send: start afresh, once
                    # per refused frame, never each round.
                    self._drop_producer()
            if any(f.probe for f in delivered):
                self._release_held()
            return len(delivered)

    def _work_waiting(self) -> bool:
        try:
            stats = self.spool.stats()
            return stats.pending > 0 or (stats.held > 0 and self._clock() >= self._next_held_retry)
        except SpoolError as exc:
            with self._stats_lock:
                self._spool_errors += 1
            log.error("sink: cannot read the spool: %s", exc)
            raise _RoundFailedError from exc

    def _ensure_producer(self) -> Producer:
        if self._producer is not None:
            return self._producer
        self._building = True
        try:
            self._producer = self._factory(self.config.producer_kwargs())
        except Exception as exc:
            with self._stats_lock:
                self._producer_errors += 1
            self._log_failure(
                "cannot connect to Kafka at %s: %s",
                ",".join(self.config.bootstrap_servers),
                f"{type(exc).__name__}: {exc}",
            )
            raise _RoundFailedError from exc
        finally:
            self._building = False
        return self._producer

    def _lease(self) -> list[SpoolEntry]:
        """A batch; or one frame alone: a suspect to be judged, or a held frame's retry."""
        try:
            while self._suspects:
                entry = self.spool.lease_key(self._suspects.pop())
                if entry is not None:
                    self._solo.add(entry.frame_key)
                    return [entry]
            now = self._clock()
            if now >= self._next_held_retry:
                self._next_held_retry = now + self.config.held_retry_s
                probe = self.spool.lease_held()
                if probe is not None:
                    self._solo.add(probe.frame_key)
                    self._probes.add(probe.frame_key)
                    return [probe]
            return self.spool.lease(self.config.batch_max_frames, self.config.batch_max_bytes)
        except SpoolError as exc:
            with self._stats_lock:
                self._spool_errors += 1
            log.error("sink: cannot lease from the spool: %s", exc)
            raise _RoundFailedError from exc

    def _send(self, producer: Producer, entries: list[SpoolEntry]) -> list[_Flight]:
        flights: list[_Flight] = []
        broken: str | None = None
        dead: list[str] = []
        for entry in entries:
            flight = _Flight(entry, [], self._clock(), probe=entry.frame_key in self._probes)
            self._probes.discard(entry.frame_key)
            flights.append(flight)
            if broken is not None:
                flight.error = broken
                continue
            try:
                chunks = split_payload(
                    entry.frame_key, entry.payload, self.config.max_message_bytes
                )
            except SchemaError as exc:
                # The frame can never be encoded (bad key): dead-letter it, counted.
                log.error("sink: dropping frame %s, it cannot be chunked: %s", entry.frame_key, exc)
                dead.append(entry.frame_key)
                flights.pop()
                continue
            key = entry.frame_key.encode("utf-8")
            try:
                for chunk in chunks:
                    flight.futures.append(producer.send(self.config.topic, value=chunk, key=key))
            except Exception as exc:
                if is_permanent(exc):
                    # This frame, not the link (e.g. a record over max_request_size): the rest
                    # of the batch goes on.
                    flight.error = type(exc).__name__
                    flight.permanent = True
                    flight.detail = f"{type(exc).__name__}: {exc}"
                    continue
                # Typically KafkaTimeoutError: no metadata within max_block_ms (broker gone).
                broken = type(exc).__name__
                flight.error = broken
                self._log_failure("send to %s failed: %s", self.config.topic, f"{broken}: {exc}")
        if dead:
            with self._stats_lock:
                self._dead += len(dead)
            try:
                self.spool.drop(dead)
            except SpoolError as exc:
                log.error("sink: cannot drop dead frames from the spool: %s", exc)
        return flights

    def _wait(self, flights: list[_Flight]) -> None:
        deadline = self._clock() + self.config.frame_timeout_s
        for flight in flights:
            if flight.error is not None:
                continue
            for future in flight.futures:
                while not future.is_done:
                    now = self._clock()
                    abort = self._abort_at
                    if now >= deadline or (abort is not None and now >= abort):
                        flight.error = "Timeout" if now >= deadline else "Aborted"
                        break
                    with contextlib.suppress(Exception):  # the outcome is read below
                        future.get(timeout=_WAIT_SLICE_S)
                if flight.error is not None:
                    break
                try:
                    future.get(timeout=0)
                except Exception as exc:
                    flight.error = type(exc).__name__
                    if is_permanent(exc):
                        flight.permanent = True
                        flight.detail = f"{type(exc).__name__}: {exc}"
                    else:
                        self._log_failure(
                            "frame %s not acknowledged: %s",
                            flight.entry.frame_key,
                            f"{type(exc).__name__}: {exc}",
                        )
                    break
            if flight.error is None:
                flight.latency = self._clock() - flight.started

    def _log_held(self, flight: _Flight) -> None:
        log.error(
            "sink: frame %s (%d bytes) set aside in the spool: %s refused it for good (%s); "
            "the other frames go on. It stays held (fleetal_edge_spool_held_frames, "
            "`edge-agent check`) and is retried every %.0f s (kafka.held_retry_s)",
            flight.entry.frame_key,
            flight.entry.nbytes,
            self.config.topic,
            flight.detail,
            self.config.held_retry_s,
        )

    def _settle(self, delivered: list[_Flight], failed: list[_Flight]) -> None:
        acked = [f.entry.frame_key for f in delivered]
        # The frame, not the link, failed when something else in the round was delivered: that
        # counts as an attempt, and hold_after_attempts of them set the frame aside too.
        frame_fault = bool(delivered)
        to_hold: dict[str, str] = {}
        nacked: list[str] = []
        refused = [f for f in failed if f.permanent]
        # Trusted: a frame refused when sent alone, or the only one refused while the others
        # went. Several refused together are suspects, each judged alone next.
        trusted = len(refused) == 1 and (frame_fault or len(failed) == 1)
        for f in failed:
            error = f.error or "Unknown"
            solo = f.entry.frame_key in self._solo
            if f.permanent and (solo or trusted):
                self._log_held(f)
                to_hold[f.entry.frame_key] = error
            elif f.permanent:
                self._suspects.add(f.entry.frame_key)
                nacked.append(f.entry.frame_key)
            elif frame_fault and f.entry.attempts + 1 >= self.config.hold_after_attempts:
                log.error(
                    "sink: frame %s set aside after %d failed sends while other frames were "
                    "delivered (last: %s)",
                    f.entry.frame_key,
                    f.entry.attempts + 1,
                    error,
                )
                to_hold[f.entry.frame_key] = f"{error} (x{f.entry.attempts + 1})"
            else:
                nacked.append(f.entry.frame_key)
        self._solo.clear()
        suspects_only = refused and not trusted
        try:
            self.spool.ack(acked)
        except SpoolError as exc:
            # Delivered but still spooled: retried first next round; a restart would resend
            # them, which ingest de-duplicates.
            self._unacked.extend(acked)
            with self._stats_lock:
                self._spool_errors += 1
            log.error(
                "sink: %d frames delivered but not yet removed from the spool: %s", len(acked), exc
            )
        try:
            self.spool.nack(nacked, count_attempt=frame_fault and not suspects_only)
        except SpoolError as exc:
            self._unnacked.extend(nacked)
            with self._stats_lock:
                self._spool_errors += 1
            log.error("sink: cannot return %d frames to pending: %s", len(nacked), exc)
        try:
            self.spool.hold(to_hold)
        except SpoolError as exc:
            # Still in flight in the spool: back to pending at the next open, or held next round.
            self._unheld.update(to_hold)
            with self._stats_lock:
                self._spool_errors += 1
            log.error("sink: cannot set %d frames aside: %s", len(to_hold), exc)
        with self._stats_lock:
            if delivered:
                self._last_delivery = self._clock()
            for error in to_hold.values():
                name = error.split(" ", 1)[0]
                self._held += 1
                self._held_by_type[name] = self._held_by_type.get(name, 0) + 1
            for f in delivered:
                self._frames += 1
                self._chunks += len(f.futures)
                self._bytes += f.entry.nbytes
                self._lat_sum += f.latency
                self._lat_count += 1
                self._last_lat = f.latency
            for f in failed:
                error = f.error or "Unknown"
                self._errors += 1
                self._errors_by_type[error] = self._errors_by_type.get(error, 0) + 1
        if self._observer is not None:
            for f in delivered:
                self._observer.delivered(f.entry.frame_key, f.entry.nbytes, f.latency)
            for f in failed:
                self._observer.send_failed(f.error or "Unknown")
            held = getattr(self._observer, "held", None)
            if callable(held):
                for key, error in to_hold.items():
                    held(key, error.split(" ", 1)[0])

    def _settle_leftovers(self) -> None:
        if self._unacked:
            try:
                self.spool.ack(self._unacked)
                self._unacked.clear()
            except SpoolError as exc:
                with self._stats_lock:
                    self._spool_errors += 1
                log.error("sink: spool still cannot record acknowledgements: %s", exc)
                raise _RoundFailedError from exc
        if self._unnacked:
            try:
                self.spool.nack(self._unnacked)
                self._unnacked.clear()
            except SpoolError as exc:
                with self._stats_lock:
                    self._spool_errors += 1
                raise _RoundFailedError from exc
        if self._unheld:
            try:
                self.spool.hold(self._unheld)
                self._unheld.clear()
            except SpoolError as exc:
                with self._stats_lock:
                    self._spool_errors += 1
                raise _RoundFailedError from exc

    def _release_held(self) -> None:
        try:
            released = self.spool.release_held()
        except SpoolError as exc:
            log.error("sink: cannot release the held frames: %s", exc)
            return
        with self._stats_lock:
            self._released += released
        if released:
            log.info(
                "sink: a held frame was delivered on retry; %d held frame(s) back to pending",
                released,
            )

    # -- failure handling ------------------------------------------------------------------

    def _log_failure(self, message: str, *args: object) -> None:
        # The first failure of a streak is a warning; repeats while the backoff runs are debug,
        # so an hour offline does not fill the journal.
        if self._consecutive == 0:
            log.warning("sink: " + message, *args)
        else:
            log.debug("sink: " + message, *args)

    def _round_failed(self) -> None:
        now = self._clock()
        with self._stats_lock:
            self._rounds_failed += 1
            self._consecutive += 1
            if self._failing_since is None:
                self._failing_since = now
            base = min(
                self.config.backoff_max_s,
                self.config.backoff_initial_s * 2 ** (self._consecutive - 1),
            )
            # +-20 % jitter: a fleet coming back online does not reconnect in lockstep.
            self._backoff_s = base * self._rng.uniform(0.8, 1.2)
            self._next_attempt = now + self._backoff_s

    def _round_ok(self) -> None:
        with self._stats_lock:
            if self._failing_since is not None:
                log.info(
                    "sink: sending again after %.1f s and %d failed rounds",
                    self._clock() - self._failing_since,
                    self._consecutive,
                )
            self._failing_since = None
            self._consecutive = 0
            self._backoff_s = 0.0
            self._next_attempt = 0.0

    def _drop_producer(self) -> None:
        """Close the producer after a failed round; the next round builds a fresh one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            close_producer(producer, timeout=1.0)

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sender thread (idempotent)."""
        if self._closed:
            raise RuntimeError("KafkaSink.start() after close()")
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._abort_at = None
        self._thread = threading.Thread(target=self._loop, name="kafka-sink", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = self._next_attempt - self._clock()
            if wait > 0:
                self._stop.wait(wait)
                continue
            try:
                delivered = self.run_once()
            except Exception:
                # run_once counts its own failures; anything else is a bug, but must not kill
                # the thread that keeps the vehicle's backlog moving.
                log.exception("sink: unexpected error in the sender loop")
                self._round_failed()
                self._drop_producer()
                continue
            if delivered == 0 and self._next_attempt <= self._clock():
                self._stop.wait(self.config.idle_poll_s)
        # stop() normally closes the producer after joining this thread; if it gave up waiting
        # (a round outlived the drain deadline), leave no producer and no producer thread behind.
        with self._round_lock:
            self._drop_producer()

    @property
    def running(self) -> bool:
        """Whether the sender thread is alive (started and not ended)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Drain, then stop: the daemon's shutdown step.

        While the thread runs, keep sending until the spool is empty or ``drain_timeout_s`` has
        passed; then stop the thread (a round still waiting is given up at the deadline, its
        frames go back to pending) and close the producer. Whatever is still spooled is sent
        after the next start. ``start()`` may be called again.
        """
        deadline = self._clock() + max(0.0, drain_timeout_s)
        thread = self._thread
        if thread is not None and thread.is_alive():
            while self._clock() < deadline:
                try:
                    if _sendable(self.spool) == 0:
                        break
                except (SpoolError, ValueError):  # ValueError: the spool was closed
                    break
                time.sleep(min(0.05, max(0.0, deadline - self._clock())))
        self._abort_at = deadline
        self._stop.set()
        if thread is not None:
            # A round may sit in a call it cannot abort. send() waiting for metadata (up to
            # max_block_ms) is waited for: the round then writes its nacks to the spool. Building
            # the producer (up to bootstrap_timeout_ms) is not: after it the thread touches the
            # spool no more and closes what it built.
            join_until = (
                time.monotonic()
                + (max(0.0, deadline - self._clock()) + 2 * _WAIT_SLICE_S)
                + self.config.max_block_ms / 1000
                + 1.0
            )
            while thread.is_alive() and time.monotonic() < join_until and not self._building:
                thread.join(timeout=0.05)
            if thread.is_alive() and self._building:
                log.debug("sink: sender thread left to finish building its producer")
                self._thread = None
                self._abort_at = None
                return
            if thread.is_alive():
                log.error("sink: sender thread did not stop within %.1f s", drain_timeout_s)
                return
        self._thread = None
        self._abort_at = None
        with self._round_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            close_producer(producer, timeout=5.0)

    def flush(self, timeout: float) -> bool:
        """Wait until nothing sendable is spooled (all acknowledged or held) or ``timeout``.

        With the thread running this only waits; without it, rounds run here (with backoff).
        True when nothing but held frames is left.
        """
        deadline = self._clock() + timeout
        running = self._thread is not None and self._thread.is_alive()
        while True:
            try:
                if _sendable(self.spool) == 0:
                    return True
            except SpoolError:
                pass
            now = self._clock()
            if now >= deadline:
                return False
            if running:
                time.sleep(min(0.05, deadline - now))
            elif self._next_attempt > now:
                time.sleep(min(self._next_attempt - now, deadline - now))
            else:
                self.run_once()

    def close(self, timeout: float = 10.0) -> None:
        """``stop(timeout)`` for good: the sink cannot be started again."""
        self._closed = True
        self.stop(timeout)

    # -- inspection ------------------------------------------------------------------------

    def stats(self) -> SinkStats:
        with self._stats_lock:
            return SinkStats(
                frames_sent_total=self._frames,
                chunks_sent_total=self._chunks,
                bytes_sent_total=self._bytes,
                send_errors_total=self._errors,
                send_errors_by_type=dict(self._errors_by_type),
                rounds_failed_total=self._rounds_failed,
                producer_errors_total=self._producer_errors,
                dead_letter_total=self._dead,
                spool_errors_total=self._spool_errors,
                latency_seconds_sum=self._lat_sum,
                latency_seconds_count=self._lat_count,
                last_latency_s=self._last_lat,
                consecutive_failures=self._consecutive,
                backoff_s=self._backoff_s,
                connected=self._producer is not None and self._consecutive == 0,
                held_total=self._held,
                held_by_type=dict(self._held_by_type),
                released_total=self._released,
                last_delivery_at=self._last_delivery,
                started_at=self._started_at,
            )
