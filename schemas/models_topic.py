"""The models topic: how a :class:`~schemas.messages.ModelUpdate` travels (both sides use it).

An update is encoded (:mod:`schemas.wire`) and split into chunks under the broker's message
limit (:mod:`schemas.chunking`), all keyed ``model/<name>/<version>``; the agent reassembles
them (``edge_agent.rollout.consume_updates``).
"""

from __future__ import annotations

from typing import Any

from schemas.chunking import split_payload
from schemas.messages import ModelUpdate
from schemas.wire import encode

__all__ = ["model_key", "publish_model"]


def model_key(update: ModelUpdate) -> str:
    return f"model/{update.name}/{update.version}"


def publish_model(
    producer: Any, topic: str, update: ModelUpdate, *, max_message_bytes: int = 900_000
) -> int:
    """Send ``update`` to the models topic in chunks (models exceed Kafka's 1 MB default);
    returns the number of records. The caller flushes the producer."""
    chunks = split_payload(model_key(update), encode(update), max_message_bytes)
    key = model_key(update).encode()
    for chunk in chunks:
        producer.send(topic, value=chunk, key=key)
    return len(chunks)
