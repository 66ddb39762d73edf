"""Helpers of the ingest integration tests, and a child process that runs one ingest consumer.

As a program (``python -m tests.integration.ingest_child CONFIG.toml``) it runs one
:class:`~ingest_service.consumer.IngestConsumer` until SIGTERM (graceful) or SIGKILL (a
crash), printing ``ready`` once it is consuming. The scale-out test starts two of them in the
same group and kills one with SIGKILL mid-stream.

As a module it builds frames the way the vehicle does: real nuScenes camera JPEGs and a real
LiDAR sweep in a :class:`FrameEnvelope`, encoded with :func:`schemas.wire.encode`, split with
:func:`schemas.chunking.split_payload` and sent keyed by the frame key with ``acks=all``.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import threading
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from schemas.chunking import split_payload
from schemas.messages import (
    CameraPayload,
    EgoPose,
    FrameEnvelope,
    LidarPayload,
    ModelInfo,
    SelectionRecord,
)
from schemas.pointcloud import lidar_payload
from schemas.wire import encode

DATA = Path(__file__).resolve().parents[2] / "data" / "nuscenes_sample"
MAX_MESSAGE_BYTES = 900_000
DEADLINE_S = 120.0


@functools.cache
def _cameras() -> tuple[CameraPayload, ...]:
    cams = []
    for path in sorted(DATA.glob("*.jpg")):
        name = path.name.split("__")[1]  # CAM_FRONT, ...
        cams.append(CameraPayload(name, "jpeg", 1600, 900, path.read_bytes()))
    assert len(cams) == 6, f"expected the six nuScenes camera images in {DATA}"
    return tuple(cams)


@functools.cache
def _lidar() -> LidarPayload:
    (path,) = DATA.glob("*LIDAR_TOP*.pcd.bin")
    points = np.fromfile(path, dtype="<f4").reshape(-1, 5)  # x, y, z, intensity, ring
    return lidar_payload(points)


def make_envelope(
    seq: int, *, vehicle: str = "veh-0001", drive: str = "drive-0001", score: float = 0.5
) -> FrameEnvelope:
    """A selected frame: six real camera JPEGs and a real 5-field sweep (~1.2 MB encoded)."""
    return FrameEnvelope(
        vehicle_id=vehicle,
        drive_id=drive,
        frame_seq=seq,
        timestamp_ns=1_532_402_927_647_951_000 + seq * 500_000_000,
        pose=EgoPose.from_heading(411.3 + seq, 1180.9, 0.0, 1.2),
        cameras=_cameras(),
        lidar=_lidar(),
        selection=SelectionRecord(
            score=score,
            threshold=0.4,
            strategy="entropy+diversity",
            reason="selected",
            params_sha256="0" * 64,
            components={"entropy": score, "diversity": 0.3},
        ),
        models=(ModelInfo("camera-det", "1.0.0", "a" * 64),),
        agent_version="0.1.0",
    )


def chunks_of(key: str, payload: bytes) -> list[tuple[str, bytes]]:
    """(frame key, chunk) records of one encoded payload, as the agent's sink cuts them."""
    return [(key, c) for c in split_payload(key, payload, MAX_MESSAGE_BYTES)]


def frame_records(env: FrameEnvelope) -> list[tuple[str, bytes]]:
    return chunks_of(env.key, encode(env))


def producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_in_flight_requests_per_connection=5,
        request_timeout_ms=60_000,
    )


def send(prod: Any, topic: str, records: Iterable[tuple[str | None, bytes]]) -> int:
    """Send (key, value) records and wait for every acknowledgement; how many."""
    futures = [
        prod.send(topic, key=k.encode() if k is not None else None, value=v) for k, v in records
    ]
    prod.flush(timeout=DEADLINE_S)
    for f in futures:
        f.get(timeout=DEADLINE_S)
    return len(futures)


# --- the child process -----------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    from prometheus_client import CollectorRegistry

    from ingest_service.blobstore import open_blob_store
    from ingest_service.config import load_ingest_config
    from ingest_service.consumer import IngestConsumer, queue_opener
    from ingest_service.metrics import IngestMetrics

    cfg = load_ingest_config(Path(argv[0]))
    stop = threading.Event()

    def on_term(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    consumer = IngestConsumer(
        cfg,
        queue_factory=queue_opener(cfg),
        blobs=open_blob_store(cfg),
        metrics=IngestMetrics(CollectorRegistry()),
    )
    runner = threading.Thread(target=consumer.run, args=(stop,), name="consumer")
    runner.start()
    print("ready", flush=True)
    while runner.is_alive():
        runner.join(1.0)
        status = {"counts": dict(consumer.counts), "assigned": sorted(consumer.assigned)}
        print(json.dumps(status), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
