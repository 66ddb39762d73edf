"""The local Kafka broker that tests, the demo and benchmarks run against."""

from __future__ import annotations

import os
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from deploy.kafka.broker import LocalKafka

POLL_DEADLINE_S = 60.0


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in messages]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=60)  # raises if the broker did not ack
    finally:
        producer.close(timeout=30)


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    """Every record of ``topic`` from the beginning, without a consumer group."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"no partitions known for {topic}"
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        got: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + POLL_DEADLINE_S
        while len(got) < expected:
            assert time.monotonic() < deadline, f"got {len(got)} of {expected} records in time"
            for records in consumer.poll(timeout_ms=1000).values():
                got.extend((r.key, r.value) for r in records)
        return got
    finally:
        consumer.close(autocommit=False)


@pytest.mark.integration
def test_broker_answers_metadata_and_round_trips_a_message(kafka: LocalKafka, topic: str) -> None:
    assert kafka.running
    assert kafka.bootstrap == f"127.0.0.1:{kafka.port}"
    assert kafka.start_time_s is not None
    assert 0 < kafka.start_time_s < 120
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        assert len(admin.describe_cluster()["brokers"]) == 1
        assert topic in admin.list_topics()
        (described,) = admin.describe_topics([topic])
        assert len(described["partitions"]) == 3
    finally:
        admin.close()

    sent = [(b"veh-1/drive-1/000001", b"hello fleet")]
    _produce(kafka.bootstrap, topic, sent)
    assert _consume_all(kafka.bootstrap, topic, expected=1) == sent


@pytest.mark.integration
def test_broker_keeps_the_default_one_megabyte_message_limit(kafka: LocalKafka, topic: str) -> None:
    # Chunking exists because of this limit; a broker that silently accepted bigger messages
    # would let an oversize-message bug through every test.
    from kafka.errors import MessageSizeTooLargeError

    producer = KafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", max_request_size=4 * 1024 * 1024
    )
    try:
        future = producer.send(topic, key=b"k", value=b"\0" * (2 * 1024 * 1024))
        with pytest.raises(MessageSizeTooLargeError):
            future.get(timeout=60)
    finally:
        producer.close(timeout=30)


@pytest.mark.integration
def test_restart_keeps_port_and_data(kafka: LocalKafka, topic: str) -> None:
    sent = [(f"k{i}".encode(), f"before restart {i}".encode()) for i in range(20)]
    _produce(kafka.bootstrap, topic, sent)
    bootstrap, workdir = kafka.bootstrap, kafka.workdir

    kafka.restart()

    assert kafka.running
    assert (kafka.bootstrap, kafka.workdir) == (bootstrap, workdir)
    # A clean stop has happened by now (here or in an earlier session): the archive exists.
    assert kafka.cds_archive is not None
    assert kafka.cds_archive.is_file()
    assert sorted(_consume_all(kafka.bootstrap, topic, expected=20)) == sorted(sent)


@pytest.mark.integration
def test_acked_messages_survive_a_broker_kill(kafka: LocalKafka, topic: str) -> None:
    sent = [(f"k{i}".encode(), os.urandom(1000)) for i in range(50)]
    _produce(kafka.bootstrap, topic, sent)
    pid = kafka.pid

    kafka.kill()
    assert not kafka.running
    kafka.restart()

    assert kafka.running
    assert kafka.pid != pid
    assert sorted(_consume_all(kafka.bootstrap, topic, expected=50)) == sorted(sent)
