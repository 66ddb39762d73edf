"""Model rollout over the real broker: chunked ModelUpdate messages hot-swap the running model;
bad ones are refused, counted, and leave the running model in place."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry

from deploy.kafka.broker import LocalKafka
from edge_agent.metrics import AgentMetrics
from edge_agent.models.hotswap import ModelSlot
from edge_agent.models.runner import RunnerConfig, load_model
from edge_agent.rollout import ModelRollout, consume_updates, publish_model
from schemas.messages import ModelUpdate
from tests.support.tiny_models import build_lidar, lidar_props

CPU = RunnerConfig(providers=("CPUExecutionProvider",))


def _update(path: Path, version: str, *, data: bytes | None = None, **kw: object) -> ModelUpdate:
    blob = path.read_bytes() if data is None else data
    fields: dict[str, object] = {
        "name": "tiny-lidar",
        "version": version,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size_bytes": len(blob),
        "min_agent_version": "0.1.0",
        "created_ns": 1,
        "inline": blob,
    }
    fields.update(kw)
    return ModelUpdate(**fields)  # type: ignore[arg-type]


def _rollout(tmp_path: Path) -> tuple[ModelRollout, ModelSlot, CollectorRegistry]:
    v1 = build_lidar(tmp_path / "v1.onnx")
    slot = ModelSlot(load_model(v1, config=CPU), config=CPU)
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, vehicle_id="veh-m")
    return ModelRollout({"lidar": slot}, tmp_path / "models", metrics=metrics), slot, registry


def _count(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("fleetal_edge_model_swaps_total", {"result": result})
    return value or 0.0


def test_update_rules_without_a_broker(tmp_path: Path) -> None:
    rollout, slot, registry = _rollout(tmp_path)
    v2 = build_lidar(
        tmp_path / "v2.onnx", props=lidar_props(version="tiny-lidar-2", name="tiny-lidar")
    )
    assert rollout.apply(_update(v2, "tiny-lidar-9", min_agent_version="99.0")).outcome == (
        "skipped"
    )
    assert rollout.apply(_update(v2, "tiny-lidar-1")).outcome == "skipped"  # already runs
    url = _update(v2, "tiny-lidar-2", inline=None, url="https://models.example/x.onnx")
    assert "only takes inline" in rollout.apply(url).detail
    bad = _update(v2, "tiny-lidar-2", sha256="0" * 64)
    assert "corrupt" in rollout.apply(bad).detail
    garbage = _update(v2, "tiny-lidar-3", data=b"not an onnx model")
    assert rollout.apply(garbage).outcome == "refused"
    assert slot.current.metadata.version == "tiny-lidar-1"
    assert _count(registry, "refused") == 3
    assert _count(registry, "skipped") == 2
    ok = rollout.apply(_update(v2, "tiny-lidar-2"))
    assert ok.outcome == "ok", ok.detail
    assert slot.current.metadata.version == "tiny-lidar-2"


@pytest.mark.integration
def test_chunked_updates_over_kafka_hot_swap_while_scoring(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    rollout, slot, registry = _rollout(tmp_path)
    v2 = build_lidar(
        tmp_path / "v2.onnx", props=lidar_props(version="tiny-lidar-2", name="tiny-lidar")
    )
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    try:
        broken = _update(v2, "tiny-lidar-3", data=b"\x00" * 5000)
        assert publish_model(producer, topic, broken, max_message_bytes=300) > 1
        assert (
            publish_model(producer, topic, _update(v2, "tiny-lidar-2"), max_message_bytes=300) > 1
        )
        producer.flush(30)
    finally:
        producer.close()

    stop = threading.Event()
    errors: list[BaseException] = []
    scored = [0]

    def score_loop() -> None:  # frames keep being scored during the swap
        sample = slot.current.sample_input()
        while not stop.is_set():
            try:
                slot.score(sample)
                scored[0] += 1
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id="edge-veh-m",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    scorer = threading.Thread(target=score_loop)
    scorer.start()
    runner = threading.Thread(
        target=consume_updates, kwargs={"rollout": rollout, "consumer": consumer, "stop": stop}
    )
    runner.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and slot.current.metadata.version != "tiny-lidar-2":
        time.sleep(0.1)
    stop.set()
    runner.join(timeout=30)
    scorer.join(timeout=30)
    consumer.close()
    assert slot.current.metadata.version == "tiny-lidar-2"
    assert _count(registry, "refused") == 1  # the broken model never ran
    assert _count(registry, "ok") == 1
    assert not errors
    assert scored[0] > 0
