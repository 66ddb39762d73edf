"""Model rollout to the vehicle: ``ModelUpdate`` messages from the ``fleet.models`` topic.

Each vehicle reads the topic in a consumer group of its own (``edge-<vehicle_id>``), so every
vehicle sees every update, and one that was offline catches up from its committed offset. For
each update it:

1. skips it when the agent is older than ``min_agent_version`` or the version already runs;
2. writes the model (carried ``inline``; ``url`` downloads are not implemented yet and are
   refused with a clear reason) to ``<models_dir>/<name>-<version>.onnx`` atomically, checking
   the size and the sha256 before anything else sees the file;
3. hot-swaps it into the slot of its kind (:class:`ModelSlot`: smoke inference first; a model
   that fails to load, fails the smoke test or changes the output shapes is refused and the
   running model stays);
4. counts the outcome in ``fleetal_edge_model_swaps_total{result}`` (``ok``, ``refused``,
   ``skipped``) and commits the offset, so a refused update is not retried forever.

Frames keep being scored throughout: the swap replaces the model reference atomically, and
in-flight calls finish on the model they started with.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge_agent import __version__
from edge_agent.metrics import AgentMetrics
from edge_agent.models.errors import ModelError
from edge_agent.models.hotswap import ModelSlot
from edge_agent.models.metadata import read_metadata
from schemas.chunking import Reassembler, split_payload
from schemas.errors import SchemaError
from schemas.messages import ModelUpdate
from schemas.wire import decode_model_update, encode

log = logging.getLogger(__name__)

Outcome = Literal["ok", "refused", "skipped"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_MODEL_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RolloutResult:
    outcome: Outcome
    detail: str


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", version)
    return tuple(int(p) for p in parts)


class ModelRollout:
    """Applies ``ModelUpdate`` messages to the running model slots."""

    def __init__(
        self,
        slots: Mapping[str, ModelSlot],
        models_dir: Path,
        *,
        metrics: AgentMetrics | None = None,
        on_swap: Callable[[], None] | None = None,
        agent_version: str = __version__,
    ) -> None:
        self.slots = dict(slots)
        self.models_dir = models_dir
        self.metrics = metrics
        self.on_swap = on_swap
        self.agent_version = agent_version

    def count(self, result: RolloutResult) -> RolloutResult:
        if self.metrics is not None:
            self.metrics.model_swaps.labels(result.outcome).inc()
        level = logging.INFO if result.outcome != "refused" else logging.WARNING
        log.log(level, "model update %s: %s", result.outcome, result.detail)
        return result

    def apply_raw(self, raw: bytes) -> RolloutResult:
        """Decode and apply one record value from the models topic."""
        try:
            update = decode_model_update(raw)
        except SchemaError as exc:
            return self.count(RolloutResult("refused", f"undecodable model update: {exc}"))
        return self.apply(update)

    def apply(self, update: ModelUpdate) -> RolloutResult:
        what = f"{update.name} {update.version}"
        if _version_tuple(self.agent_version) < _version_tuple(update.min_agent_version):
            return self.count(
                RolloutResult(
                    "skipped",
                    f"{what} needs agent >= {update.min_agent_version}, this is "
                    f"{self.agent_version}: upgrade the agent to run it",
                )
            )
        for running in self.slots.values():
            meta = running.current.metadata
            if meta.name == update.name and meta.version == update.version:
                return self.count(RolloutResult("skipped", f"{what} already runs"))
        if update.inline is None:
            return self.count(
                RolloutResult(
                    "refused",
                    f"{what} comes by url ({update.url}); this agent only takes inline models",
                )
            )
        data = update.inline
        if len(data) != update.size_bytes:
            return self.count(
                RolloutResult(
                    "refused", f"{what}: {len(data)} bytes, the update says {update.size_bytes}"
                )
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != update.sha256:
            return self.count(
                RolloutResult(
                    "refused", f"{what}: sha256 {digest[:12]} != {update.sha256[:12]} (corrupt)"
                )
            )
        path = self._store(update, data)
        try:
            kind = read_metadata(path).kind
        except ModelError as exc:
            return self.count(RolloutResult("refused", f"{what}: {exc}"))
        slot = self.slots.get(kind)
        if slot is None:
            return self.count(
                RolloutResult("refused", f"{what} is a {kind} model; this agent runs none")
            )
        try:
            report = slot.swap(path, update.sha256)
        except ModelError as exc:
            return self.count(RolloutResult("refused", str(exc)))
        if self.on_swap is not None:
            self.on_swap()
        return self.count(
            RolloutResult(
                "ok",
                f"{kind} {report.previous_version} -> {report.active_version} on "
                f"{report.provider} in {report.seconds:.2f} s",
            )
        )

    def _store(self, update: ModelUpdate, data: bytes) -> Path:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        name = _SAFE.sub("_", f"{update.name}-{update.version}") + ".onnx"
        path = self.models_dir / name
        tmp = path.with_suffix(".onnx.tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        return path


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


def consume_updates(
    rollout: ModelRollout,
    *,
    consumer: Any,
    stop: threading.Event,
    poll_timeout_ms: int = 500,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Reassemble and apply every update the consumer delivers until ``stop``.

    Offsets are committed only when no update is half-received, so a restart re-reads a
    partial one from its first chunk.
    """
    reasm = Reassembler(
        max_frame_bytes=MAX_MODEL_BYTES, max_inflight_bytes=2 * MAX_MODEL_BYTES, timeout_s=600.0
    )
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=poll_timeout_ms)
        for records in batches.values():
            for record in records:
                try:
                    payload = reasm.add(record.value, clock())
                except SchemaError as exc:
                    rollout.count(RolloutResult("refused", f"bad model chunk: {exc}"))
                    continue
                if payload is not None:
                    rollout.apply_raw(payload)
        reasm.expire(clock())
        if batches and reasm.inflight_frames == 0:
            consumer.commit()


def start_listener(
    rollout: ModelRollout,
    *,
    bootstrap_servers: tuple[str, ...],
    topic: str,
    group_id: str,
    security: Mapping[str, Any],
    stop: threading.Event,
) -> threading.Thread:
    """A daemon thread consuming ``topic``; a broker that is away only delays updates."""

    def run() -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        while not stop.is_set():
            try:
                consumer = KafkaConsumer(
                    topic,
                    bootstrap_servers=list(bootstrap_servers),
                    group_id=group_id,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    **security,
                )
            except KafkaError as exc:
                log.warning("model updates: cannot reach %s (%s); retrying", topic, exc)
                stop.wait(5.0)
                continue
            try:
                consume_updates(rollout, consumer=consumer, stop=stop)
            except KafkaError as exc:
                log.warning("model updates: %s; reconnecting", exc)
            finally:
                consumer.close()

    thread = threading.Thread(target=run, name="model-rollout", daemon=True)
    thread.start()
    return thread
