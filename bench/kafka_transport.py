"""Throughput of frames through a real local Kafka broker: big chunked frames vs small frames.

``python -m bench.kafka_transport [--bootstrap HOST:PORT] [--mb 100] [--rounds 3]``

The same number of bytes crosses the broker as 20 MB frames (split into 900 kB chunks, as the
edge agent does) and as 100 kB frames (one message each). Producing uses acks=all and
idempotence; consuming includes reassembly and sha256 verification. Rounds alternate the
order of the two cases and the median is reported, with the ratio measured in the same run.
Without ``--bootstrap`` a private broker is started (and its start time reported).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from deploy.kafka.broker import LocalKafka
from schemas.chunking import Reassembler, split_payload

MAX_MESSAGE_BYTES = 900_000
PARTITIONS = 3


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    frame_bytes: int


CASES = (Case("20 MB frames, chunked", 20_000_000), Case("100 kB frames", 100_000))


def _create_topic(broker: LocalKafka | None, bootstrap: str, name: str) -> None:
    if broker is not None:
        broker.create_topic(name, PARTITIONS)
        return
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics(
            {name: {"num_partitions": PARTITIONS, "replication_factor": 1}},
            wait_for_metadata=True,
        )
    finally:
        admin.close()


def _produce(bootstrap: str, topic: str, frames: list[tuple[str, bytes]]) -> float:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=10, batch_size=256 * 1024
    )
    try:
        started = time.perf_counter()
        futures = []
        for key, payload in frames:
            for chunk in split_payload(key, payload, MAX_MESSAGE_BYTES):
                futures.append(producer.send(topic, key=key.encode(), value=chunk))
        producer.flush(timeout=300)
        for future in futures:
            future.get(timeout=300)
        return time.perf_counter() - started
    finally:
        producer.close(timeout=30)


def _consume(bootstrap: str, topic: str, frames: list[tuple[str, bytes]]) -> float:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    reassembler = Reassembler(
        max_frame_bytes=32 * 1024 * 1024, max_inflight_bytes=256 * 1024 * 1024, timeout_s=600.0
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        started = time.perf_counter()
        deadline = time.monotonic() + 300
        done = 0
        while done < len(frames):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done} of {len(frames)} frames consumed in 300 s")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if reassembler.add(record.value, now=time.monotonic()) is not None:
                        done += 1
        return time.perf_counter() - started
    finally:
        consumer.close(autocommit=False)


def _round(
    broker: LocalKafka | None, bootstrap: str, case: Case, total_bytes: int
) -> tuple[float, float]:
    count = max(1, total_bytes // case.frame_bytes)
    blob = os.urandom(case.frame_bytes)
    # Distinct payloads (a sequence number up front) without paying for fresh random bytes.
    frames = [
        (f"veh-0001/drive-0001/{i:06d}", i.to_bytes(8, "little") + blob) for i in range(count)
    ]
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    _create_topic(broker, bootstrap, topic)
    mb = count * case.frame_bytes / 1e6
    return mb / _produce(bootstrap, topic, frames), mb / _consume(bootstrap, topic, frames)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_transport", description=__doc__)
    parser.add_argument("--bootstrap", help="an existing broker (default: start a local one)")
    parser.add_argument("--mb", type=int, default=100, help="MB per case per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(list(argv))

    broker: LocalKafka | None = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        broker = LocalKafka().start(timeout_s=120)
        bootstrap = broker.bootstrap
        print(
            f"local broker: format {broker.format_time_s:.1f} s, start {broker.start_time_s:.1f} s"
        )
    try:
        results: dict[str, list[tuple[float, float]]] = {case.name: [] for case in CASES}
        for round_no in range(args.rounds):
            order = CASES if round_no % 2 == 0 else CASES[::-1]
            for case in order:
                results[case.name].append(_round(broker, bootstrap, case, args.mb * 1_000_000))
    finally:
        if broker is not None:
            broker.stop()

    medians = {
        name: (statistics.median(p for p, _ in rows), statistics.median(c for _, c in rows))
        for name, rows in results.items()
    }
    print(f"\n{'case':<24}{'produce MB/s':>14}{'consume MB/s':>14}   (median of {args.rounds})")
    for name, (produce, consume) in medians.items():
        print(f"{name:<24}{produce:>14.1f}{consume:>14.1f}")
    (big_p, big_c), (small_p, small_c) = medians[CASES[0].name], medians[CASES[1].name]
    print(f"ratio chunked/small: produce {big_p / small_p:.2f}x, consume {big_c / small_c:.2f}x")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
