"""Read selected frames back from a real topic, as ingest would (tests only)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from kafka import KafkaConsumer

from schemas.chunking import Reassembler
from schemas.errors import DuplicateChunkError
from schemas.messages import FrameEnvelope
from schemas.wire import decode_frame


def frames_on(bootstrap: str, topic: str, timeout_s: float) -> Iterator[FrameEnvelope]:
    """Every frame that arrives whole on ``topic``, from its start, for up to ``timeout_s``.

    At least once: an agent killed mid-frame sends the frame again whole, so its first chunks
    come twice; the copy is ignored, as ingest ignores it. Close the iterator (or let it end)
    to close the consumer.
    """
    reasm = Reassembler(max_frame_bytes=64 << 20, max_inflight_bytes=512 << 20, timeout_s=600)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for record in consumer:
                try:
                    payload = reasm.add(record.value, time.monotonic())
                except DuplicateChunkError:
                    continue
                if payload is not None:
                    yield decode_frame(payload)
    finally:
        consumer.close()
