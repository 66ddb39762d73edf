"""Ingest throughput against a real broker: ``python -m bench.ingest [--frames N] [--rounds R]``.

Produces N realistic frames once (six nuScenes camera JPEGs and a 120k-point KITTI LiDAR sweep
per frame, ~1.3 MB encoded, made unique per frame so the blob store really writes them), cut into
900 kB chunks keyed by frame key on a 3-partition topic, exactly as the edge agent's sink does.
Then, in each round and in alternating order, a fresh consumer group reads the whole topic:

* ``consume only``: poll + decode chunks + reassemble, nothing stored (the baseline);
* ``ingest -> SQLite``: the real :class:`~ingest_service.consumer.IngestConsumer`, blobs
  fsynced on disk, SQLite WAL with ``synchronous=FULL`` (what a single ingest machine runs);
* ``ingest -> PostgreSQL``: the same into the throwaway local PostgreSQL server
  (``deploy/postgres/pg_local.py``: tmpfs, durability off), blobs fsynced on disk as above.

Each case is timed from its first record to its N-th frame (group join excluded) and reported
as frames/s, MB/s of frame payload and the ratio to the baseline, median over the rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from deploy.kafka.broker import LocalKafka
from ingest_service.blobstore import LocalBlobStore
from ingest_service.config import IngestConfig, load_ingest_config
from ingest_service.consumer import IngestConsumer, queue_opener
from ingest_service.metrics import IngestMetrics
from schemas.chunking import Reassembler, decode_chunk, split_payload
from schemas.messages import (
    CameraPayload,
    EgoPose,
    FrameEnvelope,
    ModelInfo,
    SelectionRecord,
)
from schemas.pointcloud import lidar_payload
from schemas.wire import encode

DATA = Path(__file__).resolve().parents[1] / "data" / "nuscenes_sample"
SWEEP = Path(__file__).resolve().parents[1] / "data/kitti_object/training/velodyne/000000.bin"
MB = 1e6
CHUNK_BYTES = 900_000
DEADLINE_S = 600.0


def _frames(n: int) -> list[tuple[str, bytes]]:
    """(frame key, encoded envelope) of ``n`` distinct realistic frames."""
    jpegs = [(p.name.split("__")[1], p.read_bytes()) for p in sorted(DATA.glob("*.jpg"))]
    sweep = np.fromfile(SWEEP, dtype="<f4").reshape(-1, 4)  # a 64-beam KITTI sweep, ~120k points
    rng = np.random.default_rng(0)
    out = []
    for seq in range(n):
        # A trailer after the JPEG end marker (decoders ignore it) and a jittered sweep make
        # every blob unique, as real frames are.
        cams = tuple(
            CameraPayload(name, "jpeg", 1600, 900, data + seq.to_bytes(8, "little"))
            for name, data in jpegs
        )
        points = sweep.copy()
        points[:, :3] += rng.normal(0, 0.01, (len(points), 3)).astype(np.float32)
        env = FrameEnvelope(
            vehicle_id=f"veh-{seq % 8:04d}",
            drive_id="bench-drive",
            frame_seq=seq,
            timestamp_ns=1_532_402_927_000_000_000 + seq * 100_000_000,
            pose=EgoPose.from_heading(float(seq), 0.0, 0.0, 0.1),
            cameras=cams,
            lidar=lidar_payload(points),
            selection=SelectionRecord(0.7, 0.5, "entropy+diversity", "selected", "0" * 64),
            models=(ModelInfo("camera-det", "1.0.0", "a" * 64),),
            agent_version="bench",
        )
        out.append((env.key, encode(env)))
    return out


def _produce(bootstrap: str, topic: str, frames: list[tuple[str, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_in_flight_requests_per_connection=5,
    )
    try:
        futures = [
            producer.send(topic, key=key.encode(), value=chunk)
            for key, payload in frames
            for chunk in split_payload(key, payload, CHUNK_BYTES)
        ]
        producer.flush(timeout=DEADLINE_S)
        for f in futures:
            f.get(timeout=DEADLINE_S)
    finally:
        producer.close(timeout=30)


def _consume_only(bootstrap: str, topic: str, n: int) -> float:
    """The baseline: seconds from the first record to the n-th reassembled frame."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-base-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        max_poll_records=64,
    )
    reassembler = Reassembler(
        max_frame_bytes=64 << 20, max_inflight_bytes=512 << 20, timeout_s=600.0
    )
    done = 0
    start: float | None = None
    deadline = time.monotonic() + DEADLINE_S
    try:
        while done < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"baseline: {done} of {n} frames after {DEADLINE_S:.0f} s")
            for records in consumer.poll(timeout_ms=500).values():
                if start is None:
                    start = time.perf_counter()
                for record in records:
                    if reassembler.add(decode_chunk(record.value), time.monotonic()) is not None:
                        done += 1
    finally:
        consumer.close(autocommit=False)
    assert start is not None
    return time.perf_counter() - start


def _ingest(cfg: IngestConfig, n: int) -> float:
    """The real consumer: seconds from its first record to its n-th stored frame."""
    registry = CollectorRegistry()
    consumer = IngestConsumer(
        cfg,
        queue_factory=queue_opener(cfg),
        blobs=LocalBlobStore(cfg.blobs.root, fsync=cfg.blobs.fsync),
        metrics=IngestMetrics(registry),
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    start: float | None = None
    deadline = time.monotonic() + DEADLINE_S
    try:
        while consumer.counts["ingested"] < n:
            if errors:
                raise RuntimeError(f"ingest consumer failed: {errors[0]!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"ingest: {consumer.counts} after {DEADLINE_S:.0f} s")
            if start is None and (
                registry.get_sample_value("fleetal_ingest_consumed_bytes_total") or 0
            ):
                start = time.perf_counter()
            time.sleep(0.002)
        elapsed = time.perf_counter() - (start or time.perf_counter())
    finally:
        stop.set()
        thread.join(60)
    return elapsed


def _config(bootstrap: str, topic: str, database: str, blobs: Path) -> IngestConfig:
    return load_ingest_config(
        data={
            "kafka": {
                "bootstrap_servers": [bootstrap],
                "topic": topic,
                "group_id": f"bench-{uuid.uuid4().hex[:8]}",
            },
            "consumer": {"poll_timeout_ms": 200},
            "queue": {"database": database},
            "blobs": {"root": str(blobs), "fsync": True},
            "api": {"enabled": False},
        }
    )


@dataclasses.dataclass
class _Case:
    name: str
    run: Callable[[int], float]
    seconds: list[float] = dataclasses.field(default_factory=list)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--frames", type=int, default=100, help="frames per case per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", help="an existing broker (default: start a local one)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL case")
    args = parser.parse_args(list(argv))

    frames = _frames(args.frames)
    total_mb = sum(len(p) for _, p in frames) / MB
    print(f"{args.frames} frames, {total_mb:.1f} MB ({total_mb / args.frames:.2f} MB/frame)")
    broker: LocalKafka | None = None
    pg: Any = None
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            broker = LocalKafka().start(timeout_s=120)
            bootstrap = broker.bootstrap
        topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        if broker is not None:
            broker.create_topic(topic, partitions=3)
        started = time.perf_counter()
        _produce(bootstrap, topic, frames)
        print(f"produced in {time.perf_counter() - started:.1f} s (acks=all)")

        def sqlite_case(n: int) -> float:
            run_dir = work / uuid.uuid4().hex[:8]
            cfg = _config(bootstrap, topic, str(run_dir / "queue.db"), run_dir / "blobs")
            try:
                return _ingest(cfg, n)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)

        cases = [
            _Case("consume only", lambda n: _consume_only(bootstrap, topic, n)),
            _Case("ingest -> SQLite", sqlite_case),
        ]
        if not args.no_postgres:
            from deploy.postgres.pg_local import LocalPostgres, PostgresNotInstalledError

            try:
                pg = LocalPostgres()
                pg.start()
            except PostgresNotInstalledError as exc:
                print(f"PostgreSQL case skipped: {exc}")
                pg = None
        if pg is not None:
            server = pg

            def pg_case(n: int) -> float:
                name = f"bench_{uuid.uuid4().hex[:8]}"
                dsn = server.create_database(name)
                run_dir = work / name
                try:
                    return _ingest(_config(bootstrap, topic, dsn, run_dir / "blobs"), n)
                finally:
                    server.drop_database(name)
                    shutil.rmtree(run_dir, ignore_errors=True)

            cases.append(_Case("ingest -> PostgreSQL", pg_case))

        for round_no in range(args.rounds):
            for case in cases if round_no % 2 == 0 else cases[::-1]:
                case.seconds.append(case.run(args.frames))
    finally:
        if pg is not None:
            pg.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(cases[0].seconds)
    print(
        f"\n{'case':<22}{'frames/s':>10}{'MB/s':>9}{'vs consume only':>18}   "
        f"(median of {args.rounds})"
    )
    for case in cases:
        s = statistics.median(case.seconds)
        print(f"{case.name:<22}{args.frames / s:>10.1f}{total_mb / s:>9.1f}{base / s:>17.2f}x")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
