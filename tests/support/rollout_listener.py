"""An agent's model-update listener on a real broker, for as long as a ``with`` block runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from kafka import KafkaConsumer

from edge_agent.rollout import ModelRollout, consume_updates


@contextmanager
def listening(rollout: ModelRollout, bootstrap: str, topic: str, group_id: str) -> Iterator[None]:
    """``consume_updates`` in a thread from the topic's start; stopped and closed on exit."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    stop = threading.Event()
    runner = threading.Thread(
        target=consume_updates, kwargs={"rollout": rollout, "consumer": consumer, "stop": stop}
    )
    runner.start()
    try:
        yield
    finally:
        stop.set()
        runner.join(30)
        consumer.close()
