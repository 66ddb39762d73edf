"""The Kafka sink's logic against a fake producer: ack/nack, backoff, stop, dead letters, config.

The real broker is exercised in tests/integration/test_sink.py; these run in milliseconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from edge_agent.sink import KafkaSink, SinkConfig
from edge_agent.spool import Spool
from schemas.chunking import Reassembler
from schemas.kafka_config import KafkaSecurity


class FakeTimeoutError(Exception):
    pass


class FakeFuture:
    def __init__(self, outcome: BaseException | str | None) -> None:
        self.outcome = outcome  # None: success, exception: failure, "hang": never completes
        self.is_done = outcome != "hang"

    def get(self, timeout: float | None = None) -> Any:
        if not self.is_done:
            time.sleep(min(timeout or 0.0, 0.01))
            raise FakeTimeoutError("not done")
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return "metadata"


class FakeProducer:
    def __init__(self, behaviour: str = "ok", fail_keys: frozenset[str] = frozenset()) -> None:
        self.behaviour = behaviour
        self.fail_keys = fail_keys
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.closed = False

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> FakeFuture:
        assert value is not None
        assert key is not None
        if self.behaviour == "send_raises" and self.sent:
            raise RuntimeError("metadata not available")
        self.sent.append((topic, key, value))
        if self.behaviour == "hang":
            return FakeFuture("hang")
        if self.behaviour == "fail" or key.decode() in self.fail_keys:
            return FakeFuture(ConnectionError("broker gone"))
        return FakeFuture(None)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


class Factory:
    """Hands out producers in order; an Exception in the list is raised instead."""

    def __init__(self, *producers: FakeProducer | Exception) -> None:
        self.queue = list(producers)
        self.made: list[FakeProducer] = []
        self.kwargs: list[Mapping[str, object]] = []

    def __call__(self, kwargs: Mapping[str, object]) -> FakeProducer:
        self.kwargs.append(kwargs)
        item = self.queue.pop(0) if len(self.queue) > 1 else self.queue[0]
        if isinstance(item, Exception):
            raise item
        self.made.append(item)
        return item


def config(**overrides: Any) -> SinkConfig:
    settings: dict[str, Any] = {
        "bootstrap_servers": ("broker:9092",),
        "topic": "fleet.frames",
        "max_message_bytes": 1024,
        "backoff_initial_s": 0.5,
        "backoff_max_s": 4.0,
        "batch_max_frames": 10,
    }
    settings.update(overrides)
    return SinkConfig(**settings)


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool.db", max_bytes=1 << 24)
    yield s
    s.close()


def test_delivered_frames_are_acked_with_every_chunk_keyed_by_frame(spool: Spool) -> None:
    payloads = {"a": b"A" * 3000, "b": b"", "c": bytes(range(256)) * 4}
    for key, data in payloads.items():
        spool.put(key, data, 0.5)
    producer = FakeProducer()
    sink = KafkaSink(config(), spool, producer_factory=Factory(producer))
    assert sink.run_once() == 3
    assert spool.stats().frames == 0
    reassembler = Reassembler(max_frame_bytes=1 << 20, max_inflight_bytes=1 << 20, timeout_s=9)
    got: dict[str, bytes] = {}
    for topic, key, value in producer.sent:
        assert topic == "fleet.frames"
        assert len(value) <= 1024
        whole = reassembler.add(value, now=0.0)
        if whole is not None:
            got[key.decode()] = whole
    assert got == payloads
    stats = sink.stats()
    assert stats.frames_sent_total == 3
    assert stats.chunks_sent_total == len(producer.sent)
    assert stats.bytes_sent_total == sum(len(p) for p in payloads.values())
    assert stats.latency_seconds_count == 3
    assert stats.connected


def test_failed_frames_are_nacked_and_the_producer_is_rebuilt(spool: Spool) -> None:
    # Nothing delivered: the link failed. Producer rebuilt, backoff, no attempt counted.
    spool.put("a", b"a", 0.9)
    spool.put("b", b"b", 0.1)
    first = FakeProducer("fail")
    second = FakeProducer()
    factory = Factory(first, second)
    sink = KafkaSink(config(), spool, producer_factory=factory, rng=random.Random(1))
    assert sink.run_once() == 0
    assert spool.keys("pending") == ["a", "b"]
    assert first.closed
    stats = sink.stats()
    assert stats.send_errors_total == 2
    assert stats.send_errors_by_type == {"ConnectionError": 2}
    assert stats.consecutive_failures == 1
    assert 0.4 <= stats.backoff_s <= 0.6
    assert sink.run_once() == 2
    assert factory.made == [first, second]
    assert spool.stats().frames == 0
    assert sink.stats().consecutive_failures == 0
    assert sink.stats().backoff_s == 0.0


def test_a_frame_failing_while_others_are_delivered_costs_no_backoff_nor_reconnect(
    spool: Spool,
) -> None:
    spool.put("good", b"g", 0.1)
    spool.put("bad", b"b", 0.9)  # leads every batch by score
    producer = FakeProducer(fail_keys=frozenset({"bad"}))
    factory = Factory(producer)
    sink = KafkaSink(config(), spool, producer_factory=factory, rng=random.Random(1))
    assert sink.run_once() == 1
    assert spool.keys("pending") == ["bad"]
    assert not producer.closed
    stats = sink.stats()
    assert stats.send_errors_by_type == {"ConnectionError": 1}
    assert stats.consecutive_failures == 0
    assert stats.backoff_s == 0.0
    [entry] = spool.lease(1, 100)
    assert entry.attempts == 1  # the frame, not the link, failed: counted
    spool.nack([entry.frame_key], count_attempt=False)
    assert factory.made == [producer]


def test_backoff_doubles_with_jitter_and_is_capped(spool: Spool) -> None:
    spool.put("k", b"x", 0.5)
    sink = KafkaSink(
        config(), spool, producer_factory=Factory(FakeProducer("fail")), rng=random.Random(7)
    )
    seen = []
    for _ in range(6):
        assert sink.run_once() == 0
        seen.append(sink.stats().backoff_s)
    for got, base in zip(seen, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0], strict=True):
        assert 0.8 * base <= got <= 1.2 * base
    [entry] = spool.lease(1, 100)
    assert entry.attempts == 0  # an outage does not count against the frame


def test_no_broker_at_start_is_counted_and_leases_nothing(spool: Spool) -> None:
    spool.put("k", b"x", 0.5)
    factory = Factory(TimeoutError("Unable to bootstrap"), FakeProducer())
    sink = KafkaSink(config(), spool, producer_factory=factory)
    assert sink.run_once() == 0
    assert spool.keys("pending") == ["k"]  # never leased, so never in flight
    assert sink.stats().producer_errors_total == 1
    assert not sink.stats().connected
    assert sink.run_once() == 1
    assert spool.stats().frames == 0


def test_send_raising_midway_fails_the_rest_of_the_batch_without_sending(spool: Spool) -> None:
    for i in range(4):
        spool.put(f"k{i}", b"x" * 10, 1 - i / 10)
    producer = FakeProducer("send_raises")
    sink = KafkaSink(config(), spool, producer_factory=Factory(producer, FakeProducer()))
    assert sink.run_once() == 1  # k0 went out before send() started raising
    assert len(producer.sent) == 1
    assert sorted(spool.keys("pending")) == ["k1", "k2", "k3"]
    assert sink.stats().send_errors_by_type == {"RuntimeError": 3}


def test_unchunkable_frame_is_dead_lettered_and_counted(spool: Spool) -> None:
    spool.put("x" * 70_000, b"payload", 0.9)  # the chunk header holds at most 65535 key bytes
    spool.put("fine", b"payload", 0.1)
    sink = KafkaSink(config(), spool, producer_factory=Factory(FakeProducer()))
    assert sink.run_once() == 1
    assert spool.stats().frames == 0
    assert spool.stats().dropped_total == 1
    assert sink.stats().dead_letter_total == 1


def test_stop_aborts_a_hanging_send_within_the_drain_timeout(spool: Spool) -> None:
    spool.put("k", b"x", 0.5)
    producer = FakeProducer("hang")
    sink = KafkaSink(config(), spool, producer_factory=Factory(producer))
    sink.start()
    deadline = time.monotonic() + 10
    while not producer.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert producer.sent
    # The sender thread is stuck waiting for the broker; the pipeline is not.
    started = time.perf_counter()
    assert spool.put("during", b"y", 0.5).stored
    assert time.perf_counter() - started < 1.0
    started = time.monotonic()
    sink.close(timeout=0.5)
    assert time.monotonic() - started < 5.0
    assert producer.closed
    assert sorted(spool.keys("pending")) == ["during", "k"]
    assert sink.stats().send_errors_by_type == {"Aborted": 1}


def test_thread_delivers_then_flush_reports_empty(spool: Spool) -> None:
    sink = KafkaSink(config(idle_poll_s=0.01), spool, producer_factory=Factory(FakeProducer()))
    sink.start()
    try:
        for i in range(20):
            spool.put(f"k{i}", b"z" * 500, i / 20)
        assert sink.flush(timeout=10.0)
    finally:
        sink.close()
    assert sink.stats().frames_sent_total == 20


def test_observer_sees_deliveries_and_failures(spool: Spool) -> None:
    events: list[tuple[str, object]] = []

    class Observer:
        def delivered(self, frame_key: str, nbytes: int, seconds: float) -> None:
            events.append(("ok", (frame_key, nbytes)))
            assert seconds >= 0

        def send_failed(self, error: str) -> None:
            events.append(("error", error))

    spool.put("a", b"12", 0.9)
    spool.put("b", b"3", 0.1)
    producer = FakeProducer(fail_keys=frozenset({"b"}))
    sink = KafkaSink(config(), spool, producer_factory=Factory(producer), observer=Observer())
    sink.run_once()
    assert events == [("ok", ("a", 2)), ("error", "ConnectionError")]


def test_concurrent_stop_and_run_once_is_safe(spool: Spool) -> None:
    for i in range(50):
        spool.put(f"k{i}", b"z", 0.5)
    sink = KafkaSink(config(batch_max_frames=3), spool, producer_factory=Factory(FakeProducer()))
    sink.start()
    threads = [threading.Thread(target=sink.run_once) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sink.flush(timeout=10)
    sink.close()
    assert sink.stats().frames_sent_total == 50


# -- configuration ----------------------------------------------------------------------------


def test_producer_kwargs_are_safe_by_default() -> None:
    kwargs = SinkConfig().producer_kwargs()
    assert kwargs["acks"] == "all"
    assert kwargs["enable_idempotence"] is True
    assert kwargs["max_in_flight_requests_per_connection"] == 5
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert kwargs["max_request_size"] >= 900_000
    from kafka import KafkaProducer

    assert set(kwargs) <= set(KafkaProducer.DEFAULT_CONFIG)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_in_flight_requests", 6, "max_in_flight_requests"),
        ("bootstrap_servers", (), "bootstrap_servers"),
        ("delivery_timeout_ms", 100, "delivery_timeout_ms"),
        ("backoff_initial_s", 0.0, "backoff_initial_s"),
        ("max_message_bytes", 10, "max_message_bytes"),
        ("topic", "", "topic"),
    ],
)
def test_bad_sink_config_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SinkConfig(**{field: value})  # type: ignore[arg-type]


def test_security_settings_pass_through_and_hide_secrets(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    sec = KafkaSecurity(
        security_protocol="SASL_SSL",
        ssl_cafile=ca,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="vehicle-42",
        sasl_plain_password="s3cret",
    )
    assert "s3cret" not in repr(sec)
    kwargs = SinkConfig(security=sec).producer_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["ssl_cafile"] == str(ca)
    assert kwargs["ssl_check_hostname"] is True
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "vehicle-42"
    assert kwargs["sasl_plain_password"] == "s3cret"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "sasl_mechanism"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"ssl_cafile": Path("/nonexistent/ca.pem")}, "use SSL or SASL_SSL"),
        (
            {"security_protocol": "SSL", "ssl_cafile": Path("/nonexistent/ca.pem")},
            "does not exist",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"},
            "user name and a password",
        ),
        ({"sasl_mechanism": "PLAIN"}, "SASL settings given"),
    ],
)
def test_bad_security_settings_name_the_field(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaSecurity(**settings)


def test_stop_drains_the_spool_then_closes_the_producer(spool: Spool) -> None:
    producer = FakeProducer()
    sink = KafkaSink(config(batch_max_frames=2), spool, producer_factory=Factory(producer))
    for i in range(30):
        spool.put(f"k{i}", b"z" * 100, i / 30)
    sink.start()
    sink.stop(drain_timeout_s=30.0)
    assert spool.stats().frames == 0
    assert sink.stats().frames_sent_total == 30
    assert producer.closed
    sink.start()  # stop() is not close(): the sink can run again
    spool.put("later", b"1", 0.5)
    assert sink.flush(timeout=10.0)
    sink.close()
    with pytest.raises(RuntimeError, match="after close"):
        sink.start()


def test_stop_with_the_broker_down_gives_up_at_the_deadline(spool: Spool) -> None:
    spool.put("k", b"x", 0.5)
    factory = Factory(TimeoutError("Unable to bootstrap"))
    sink = KafkaSink(config(), spool, producer_factory=factory)
    sink.start()
    started = time.monotonic()
    sink.stop(drain_timeout_s=1.0)
    assert 0.9 <= time.monotonic() - started < 5.0
    assert spool.keys("pending") == ["k"]  # stays for the next start


class MessageSizeTooLargeError(Exception):
    """Named as kafka-python's: the sink classifies errors by class name."""


class TopicAuthorizationFailedError(Exception):
    pass


class RefusingProducer(FakeProducer):
    """Delivers every frame but those in ``refuse``, which fail with the given error."""

    def __init__(self, refuse: Mapping[str, BaseException], at_send: bool = False) -> None:
        super().__init__()
        self.refuse = dict(refuse)
        self.at_send = at_send

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> FakeFuture:
        assert key is not None
        error = self.refuse.get(key.decode())
        if error is not None and self.at_send:
            raise error
        future = super().send(topic, value=value, key=key)
        return FakeFuture(error) if error is not None else future


class HeldRecorder:
    def __init__(self) -> None:
        self.held_frames: list[tuple[str, str]] = []

    def delivered(self, frame_key: str, nbytes: int, seconds: float) -> None:
        pass

    def send_failed(self, error: str) -> None:
        pass

    def held(self, frame_key: str, error: str) -> None:
        self.held_frames.append((frame_key, error))


@pytest.mark.parametrize("at_send", [False, True])
@pytest.mark.parametrize(
    "error", [MessageSizeTooLargeError("too big"), TopicAuthorizationFailedError("no ACL")]
)
def test_an_undeliverable_frame_is_held_and_never_holds_back_the_others(
    spool: Spool, error: Exception, at_send: bool
) -> None:
    spool.put("huge", b"h" * 100, 0.99)  # the best score: it would lead every batch
    for i in range(5):
        spool.put(f"ok{i}", b"o", 0.5 - i / 100)
    producer = RefusingProducer({"huge": error}, at_send=at_send)
    factory = Factory(producer)
    observer = HeldRecorder()
    sink = KafkaSink(config(batch_max_frames=3), spool, producer_factory=factory, observer=observer)
    assert sink.run_once() == 2  # huge + ok0 + ok1 leased; the two good ones delivered
    assert sink.run_once() == 3
    assert sink.run_once() == 0  # nothing leased again: huge is held, not pending
    assert spool.keys("held") == ["huge"]
    assert spool.keys("pending") == []
    stats = spool.stats()
    assert (stats.held, stats.held_bytes, stats.pending, stats.frames) == (1, 100, 0, 1)
    [held] = spool.held_frames()
    assert held.error == type(error).__name__
    assert held.attempts == 1
    s = sink.stats()
    assert s.consecutive_failures == 0  # no backoff
    assert s.backoff_s == 0.0
    assert s.held_total == 1
    assert s.held_by_type == {type(error).__name__: 1}
    # one fresh producer after the refusal (kafka-python's turns fatal), not one per round
    assert len(factory.made) == 2
    assert observer.held_frames == [("huge", type(error).__name__)]
    assert sink.flush(timeout=0.5)  # nothing sendable is left: flush does not wait for held


def test_a_frame_failing_alone_round_after_round_is_held_after_n_attempts(spool: Spool) -> None:
    spool.put("flaky", b"f", 0.9)
    for i in range(20):
        spool.put(f"ok{i:02d}", b"o", 0.5)
    producer = FakeProducer(fail_keys=frozenset({"flaky"}))
    sink = KafkaSink(
        config(batch_max_frames=2, hold_after_attempts=3), spool, producer_factory=Factory(producer)
    )
    for _ in range(3):
        assert sink.run_once() == 1
    assert spool.keys("held") == ["flaky"]
    [held] = spool.held_frames()
    assert held.attempts == 3
    assert held.error.startswith("ConnectionError")
    while sink.run_once():
        pass
    assert spool.stats().frames == 1  # all the others went


def test_held_frames_are_retried_every_interval_and_released_once_one_goes(spool: Spool) -> None:
    now = [0.0]
    spool.put("a", b"a", 0.9)
    spool.put("b", b"b", 0.8)
    refusing = RefusingProducer({"a": MessageSizeTooLargeError(), "b": MessageSizeTooLargeError()})
    sink = KafkaSink(
        config(held_retry_s=60.0),
        spool,
        producer_factory=Factory(refusing),
        clock=lambda: now[0],
    )
    for _ in range(3):  # both refused together: each is then judged alone, and held
        assert sink.run_once() == 0
    assert sorted(spool.keys("held")) == ["a", "b"]
    assert sink.stats().consecutive_failures == 0  # refusals are not a link failure
    sent = len(refusing.sent)
    now[0] = 30.0
    assert sink.run_once() == 0
    assert len(refusing.sent) == sent  # not retried before held_retry_s
    now[0] = 61.0
    refusing.refuse = {}  # the broker's limit was raised
    assert sink.run_once() == 1  # one held frame (the longest held) was retried, alone, and went
    assert spool.keys("held") == []
    assert len(spool.keys("pending")) == 1  # the other was released with it, for a fresh try
    assert sink.stats().released_total == 1


class PoisonedProducer(RefusingProducer):
    """kafka-python 3.0.12's idempotent producer: after one refusal every later send fails."""

    def __init__(self, refuse: Mapping[str, BaseException]) -> None:
        super().__init__(refuse)
        self.fatal: BaseException | None = None

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> FakeFuture:
        assert key is not None
        if self.fatal is not None:
            return FakeFuture(self.fatal)
        error = self.refuse.get(key.decode())
        if error is not None:
            self.fatal = error
        return super().send(topic, value=value, key=key)


def test_frames_failed_by_a_poisoned_producer_are_judged_alone_and_only_the_culprit_held(
    spool: Spool,
) -> None:
    spool.put("huge", b"h" * 100, 0.99)
    for i in range(4):
        spool.put(f"ok{i}", b"o", 0.5 - i / 100)
    producers: list[PoisonedProducer] = []

    def factory(kwargs: Mapping[str, object]) -> PoisonedProducer:
        producers.append(PoisonedProducer({"huge": MessageSizeTooLargeError("too big")}))
        return producers[-1]

    sink = KafkaSink(config(batch_max_frames=10), spool, producer_factory=factory)
    delivered = 0
    for _ in range(10):
        delivered += sink.run_once()
    assert delivered == 4
    assert spool.keys("held") == ["huge"]
    assert spool.stats().frames == 1
    assert sink.stats().held_total == 1
    assert sink.stats().rounds_failed_total == 0
    assert len(producers) <= 3  # a fresh producer after a refusal, not one per round


def test_stop_does_not_wait_for_a_producer_being_built_which_then_touches_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # kafka-python blocks in KafkaProducer(...) for up to bootstrap_timeout_ms with no broker.
    spool = Spool(tmp_path / "s.db", max_bytes=1 << 20)
    spool.put("k", b"x", 0.5)
    building = threading.Event()
    built: list[FakeProducer] = []

    def slow_factory(kwargs: Mapping[str, object]) -> FakeProducer:
        building.set()
        time.sleep(2.0)
        built.append(FakeProducer())  # the broker answered just then
        return built[-1]

    sink = KafkaSink(config(bootstrap_timeout_ms=8_000), spool, producer_factory=slow_factory)
    sink.start()
    assert building.wait(5.0)
    start = time.monotonic()
    sink.stop(drain_timeout_s=0.0)
    assert time.monotonic() - start < 1.0
    spool.close()  # what replay does next
    deadline = time.monotonic() + 10
    while not (built and built[0].closed) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert built
    assert built[0].closed  # the thread closed what it built
    assert built[0].sent == []  # and sent nothing from a closed spool
    assert "unexpected error" not in caplog.text
    with Spool(tmp_path / "s.db", max_bytes=1 << 20) as again:
        assert again.keys("pending") == ["k"]


def test_the_real_producer_factory_leaks_nothing_while_no_broker_listens() -> None:
    """kafka-python leaks a thread and sockets per producer that fails to bootstrap; the
    factory the sink retries for hours must not build one before a server accepts."""
    import os
    import socket

    from edge_agent.sink import kafka_producer

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    kwargs = {"bootstrap_servers": [closed], "bootstrap_timeout_ms": 500}
    threads, fds = threading.active_count(), len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(ConnectionError, match=closed):
            kafka_producer(kwargs)
    assert threading.active_count() == threads
    assert len(os.listdir("/proc/self/fd")) <= fds + 1
