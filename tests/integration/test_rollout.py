"""Model rollout over the real broker: chunked ModelUpdate messages hot-swap the running model;
bad ones are refused, counted, and leave the running model in place; the active model is kept
in a manifest that the daemon loads after a restart; a full disk does not stop the listener."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry

from deploy.kafka.broker import LocalKafka
from edge_agent.agent import load_slots
from edge_agent.config import load_agent_config
from edge_agent.frame import Frame
from edge_agent.metrics import AgentMetrics
from edge_agent.models import manifest
from edge_agent.models.hotswap import ModelSlot
from edge_agent.models.runner import RunnerConfig, load_model
from edge_agent.rollout import ModelRollout, consume_updates, start_listener
from edge_agent.sources import KittiObjectSource, write_spool_frame
from ingest_service.registry import ModelRegistry
from schemas.messages import FrameEnvelope, ModelUpdate
from schemas.models_topic import publish_model
from schemas.signing import generate_keypair, load_private_key, load_public_key, sign_update
from tests.support.agent_process import spawn_agent
from tests.support.frames_topic import frames_on
from tests.support.http_files import serving
from tests.support.rollout_listener import listening
from tests.support.tiny_models import DATA, REPO, build_lidar, lidar_props

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


def _rollout(
    tmp_path: Path, *, manifest_path: Path | None = None
) -> tuple[ModelRollout, ModelSlot, CollectorRegistry]:
    v1 = build_lidar(tmp_path / "v1.onnx")
    slot = ModelSlot(load_model(v1, config=CPU), config=CPU)
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, vehicle_id="veh-m")
    rollout = ModelRollout(
        {"lidar": slot},
        tmp_path / "models",
        metrics=metrics,
        manifest_path=manifest_path,
        keep=[v1],
    )
    return rollout, slot, registry


def _lidar_version(tmp_path: Path, n: int) -> Path:
    return build_lidar(
        tmp_path / f"src-v{n}.onnx",
        props=lidar_props(version=f"tiny-lidar-{n}", name="tiny-lidar"),
    )


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
    url = _update(v2, "tiny-lidar-2", inline=None, url="s3://models/x.onnx")
    assert "only http(s) is fetched" in rollout.apply(url).detail
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


def test_a_model_sent_by_url_is_fetched_checked_and_swapped_in(tmp_path: Path) -> None:
    """A real HTTP server on loopback. Before it is up the update is ``download_failed``
    (read again later); a missing object and wrong bytes are ``refused``; in every case the
    old model runs and nothing is stored; once it serves the model, the slot swaps to it."""
    rollout, slot, registry = _rollout(tmp_path)
    v2 = _lidar_version(tmp_path, 2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = _update(v2, "tiny-lidar-2", inline=None, url=f"http://127.0.0.1:{port}/v2.onnx")
    later = rollout.apply(down)
    assert later.outcome == "download_failed"
    assert "tried again later" in later.detail
    with serving() as http:
        by_url = _update(v2, "tiny-lidar-2", inline=None, url=f"{http.base_url}/blobs/v2.onnx")
        missing = rollout.apply(by_url)
        assert missing.outcome == "refused"
        assert "HTTP 404" in missing.detail
        http.routes["/blobs/v2.onnx"] = (200, b"a different file")
        wrong = rollout.apply(dataclasses.replace(by_url, size_bytes=16))
        assert wrong.outcome == "refused"
        assert "not the model the update names" in wrong.detail
        assert slot.current.metadata.version == "tiny-lidar-1"
        assert not list((tmp_path / "models").glob("*tiny-lidar-2*"))
        http.routes["/blobs/v2.onnx"] = (200, v2.read_bytes())
        ok = rollout.apply(by_url)
    assert ok.outcome == "ok", ok.detail
    assert slot.current.metadata.version == "tiny-lidar-2"
    stored = tmp_path / "models" / "tiny-lidar-tiny-lidar-2.onnx"
    assert stored.read_bytes() == v2.read_bytes()
    assert _count(registry, "download_failed") == 1
    assert _count(registry, "refused") == 2


def test_with_the_fleet_key_only_signed_updates_are_taken(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "centre.pem", tmp_path / "fleet.pub.pem")
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub.pem")
    centre = load_private_key(tmp_path / "centre.pem")
    rollout, slot, registry = _rollout(tmp_path)
    rollout.public_key = load_public_key(tmp_path / "fleet.pub.pem")
    v2 = _lidar_version(tmp_path, 2)
    unsigned = rollout.apply(_update(v2, "tiny-lidar-2"))
    assert unsigned.outcome == "bad_signature"
    assert "not signed" in unsigned.detail
    foreign = sign_update(_update(v2, "tiny-lidar-2"), load_private_key(tmp_path / "other.pem"))
    assert "bad signature" in rollout.apply(foreign).detail
    tampered = dataclasses.replace(sign_update(_update(v2, "tiny-lidar-2"), centre), version="x")
    assert rollout.apply(tampered).outcome == "bad_signature"
    assert slot.current.metadata.version == "tiny-lidar-1"  # the old model keeps running
    assert _count(registry, "bad_signature") == 3
    assert not list((tmp_path / "models").glob("*tiny-lidar-2*"))  # nothing stored
    ok = rollout.apply(sign_update(_update(v2, "tiny-lidar-2"), centre))
    assert ok.outcome == "ok", ok.detail
    assert slot.current.metadata.version == "tiny-lidar-2"


def test_an_update_for_another_stage_leaves_this_vehicle_on_its_model(tmp_path: Path) -> None:
    rollout, slot, registry = _rollout(tmp_path)
    rollout.vehicle_id = "veh-m"
    v2 = _lidar_version(tmp_path, 2)
    canary = _update(v2, "tiny-lidar-2", target_vehicles=("veh-a",), target_fraction=0.0)
    result = rollout.apply(canary)
    assert result.outcome == "not_in_stage"
    assert "veh-a; 0% of the fleet" in result.detail
    assert slot.current.metadata.version == "tiny-lidar-1"
    assert _count(registry, "not_in_stage") == 1
    assert not list((tmp_path / "models").glob("*tiny-lidar-2*"))  # nothing stored
    named = rollout.apply(dataclasses.replace(canary, target_vehicles=("veh-a", "veh-m")))
    assert named.outcome == "ok", named.detail
    v3 = _lidar_version(tmp_path, 3)
    widened = rollout.apply(_update(v3, "tiny-lidar-3", target_fraction=1.0))
    assert widened.outcome == "ok", widened.detail
    assert slot.current.metadata.version == "tiny-lidar-3"


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


def test_swaps_are_recorded_in_the_manifest_and_old_files_pruned(tmp_path: Path) -> None:
    path = tmp_path / "agent" / manifest.MANIFEST_NAME
    rollout, slot, _ = _rollout(tmp_path, manifest_path=path)
    models = tmp_path / "models"
    garbage = _update(_lidar_version(tmp_path, 9), "tiny-lidar-9", data=b"not an onnx model")
    assert rollout.apply(garbage).outcome == "refused"
    assert list(models.iterdir()) == []  # the refused file does not stay on the disk
    for n in (2, 3, 4):
        result = rollout.apply(_update(_lidar_version(tmp_path, n), f"tiny-lidar-{n}"))
        assert result.outcome == "ok", result.detail
        entry = manifest.read(path)["lidar"]
        assert entry.current.version == f"tiny-lidar-{n}"
        assert entry.current.sha256 == slot.current.runner.sha256
        assert entry.current.path == models / f"tiny-lidar-tiny-lidar-{n}.onnx"
        assert entry.previous is not None
        assert entry.previous.version == f"tiny-lidar-{n - 1}"
    # current + previous stay; v2 (superseded twice) is gone; the config's v1 is never touched
    assert sorted(p.name for p in models.iterdir()) == [
        "tiny-lidar-tiny-lidar-3.onnx",
        "tiny-lidar-tiny-lidar-4.onnx",
    ]
    assert (tmp_path / "v1.onnx").is_file()
    assert json.loads(path.read_text())["version"] == 1
    assert not list(path.parent.glob(".*.tmp"))


def _daemon_config(tmp_path: Path, **rollout: object) -> dict[str, object]:
    return {
        "agent": {"vehicle_id": "veh-m", "data_dir": str(tmp_path / "agent")},
        "models": {
            "lidar": str(build_lidar(tmp_path / "v1.onnx")),
            "runner": {"providers": ["cpu"]},
        },
        "rollout": {"enabled": True, **rollout},
    }


def test_start_loads_the_manifest_or_falls_back_with_a_reason(tmp_path: Path) -> None:
    cfg = load_agent_config(data=_daemon_config(tmp_path))
    rollout, _, _ = _rollout(tmp_path, manifest_path=cfg.manifest_path)
    assert rollout.apply(_update(_lidar_version(tmp_path, 2), "tiny-lidar-2")).outcome == "ok"

    def started() -> tuple[str, CollectorRegistry]:
        registry = CollectorRegistry()
        metrics = AgentMetrics(registry, vehicle_id="veh-m")
        _, lidar = load_slots(cfg, manifest_path=cfg.manifest_path, metrics=metrics)
        assert lidar is not None
        return lidar.current.metadata.version, registry

    def problems(registry: CollectorRegistry, problem: str) -> float:
        value = registry.get_sample_value(
            "fleetal_edge_model_manifest_problems_total", {"problem": problem}
        )
        return value or 0.0

    version, registry = started()
    assert version == "tiny-lidar-2"  # the rolled-out model, not the configured one
    assert problems(registry, "load_failed") == 0
    # without the manifest (replay, or rollout disabled) the config speaks
    _, lidar = load_slots(cfg)
    assert lidar is not None
    assert lidar.current.metadata.version == "tiny-lidar-1"

    rolled = manifest.read(cfg.manifest_path)["lidar"].current.path
    data = rolled.read_bytes()
    rolled.write_bytes(data[:-7] + b"corrupt")  # the file went bad on the disk
    version, registry = started()
    assert version == "tiny-lidar-1"
    assert problems(registry, "load_failed") == 1
    rolled.unlink()
    version, registry = started()
    assert version == "tiny-lidar-1"
    assert problems(registry, "missing") == 1
    cfg.manifest_path.write_text("{not json")
    version, registry = started()
    assert version == "tiny-lidar-1"
    assert problems(registry, "corrupt") == 1


@pytest.mark.integration
def test_a_full_disk_while_storing_keeps_the_listener_and_the_old_model(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    rollout, slot, registry = _rollout(tmp_path, manifest_path=tmp_path / "active.json")
    models = tmp_path / "models"
    models.mkdir()
    # the temporary file of the update is /dev/full: the kernel answers ENOSPC to the write
    (models / "tiny-lidar-tiny-lidar-2.onnx.tmp").symlink_to("/dev/full")
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    try:
        update = _update(_lidar_version(tmp_path, 2), "tiny-lidar-2")
        publish_model(producer, topic, update, max_message_bytes=300)
        producer.flush(30)
    finally:
        producer.close()
    stop = threading.Event()
    thread = start_listener(
        rollout,
        bootstrap_servers=(kafka.bootstrap,),
        topic=topic,
        group_id="edge-veh-full",
        security={},
        stop=stop,
        retry_s=1.0,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _count(registry, "store_failed") == 0:
            time.sleep(0.1)
        assert _count(registry, "store_failed") == 1
        assert slot.current.metadata.version == "tiny-lidar-1"  # the old model stays
        assert thread.is_alive()  # and the listener listens on
        assert not (models / "tiny-lidar-tiny-lidar-2.onnx").exists()
        # space came back: the uncommitted update is read again and applied
        # the listener swaps, then counts: wait for the count, not only the swap
        while time.monotonic() < deadline and _count(registry, "ok") == 0:
            time.sleep(0.1)
        assert slot.current.metadata.version == "tiny-lidar-2"
        assert _count(registry, "ok") == 1
        assert _count(registry, "listener_error") == 0
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def _stop(agent: subprocess.Popen[bytes], log: Path) -> None:
    agent.send_signal(signal.SIGTERM)
    try:
        assert agent.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)


@pytest.mark.integration
def test_after_a_restart_the_agent_runs_the_rolled_out_model(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    models_topic = f"{topic}.models"
    kafka.create_topic(models_topic)
    bridge = tmp_path / "bridge"
    bridge.mkdir()
    v1 = build_lidar(tmp_path / "v1.onnx")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        "\n".join(
            [
                "[agent]",
                'vehicle_id = "veh-m"',
                f'data_dir = "{tmp_path / "agent"}"',
                "[source]",
                f'path = "{bridge}"',
                "[models]",
                f'lidar = "{v1}"',
                "[models.runner]",
                'providers = ["cpu"]',
                "[selector]",
                'diversity = "none"',
                "[selector.budget]",
                "target_rate = 1.0",
                "cold_start_frames = 0",
                "window = 10",
                "[metrics]",
                "enabled = false",
                "[rollout]",
                "enabled = true",
                f'topic = "{models_topic}"',
            ]
        )
        + "\n"
    )
    env = dict(os.environ)
    env.update(
        {
            "FLEETAL_KAFKA__BOOTSTRAP_SERVERS": f'["{kafka.bootstrap}"]',
            "FLEETAL_KAFKA__TOPIC": topic,
            "PYTHONPATH": str(REPO),
        }
    )
    log = tmp_path / "agent.log"
    manifest_path = tmp_path / "agent" / manifest.MANIFEST_NAME
    agent = spawn_agent(cfg, env, log)
    try:
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        try:
            update = _update(_lidar_version(tmp_path, 2), "tiny-lidar-2")
            publish_model(producer, models_topic, update, max_message_bytes=300)
            producer.flush(30)
        finally:
            producer.close()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and agent.poll() is None:
            if _manifest_version(manifest_path) == "tiny-lidar-2":
                break
            time.sleep(0.2)
        assert _manifest_version(manifest_path) == "tiny-lidar-2", log.read_text()[-3000:]
    finally:
        _stop(agent, log)
    first_run = log.read_text()
    assert "tiny-lidar-1 -> tiny-lidar-2" in first_run

    agent = spawn_agent(cfg, env, log)  # the vehicle rebooted
    try:
        frame = next(
            f for f in KittiObjectSource(DATA / "kitti_object").frames() if isinstance(f, Frame)
        )
        write_spool_frame(bridge, frame)
        envelope = _first_frame(kafka.bootstrap, topic, timeout_s=90)
    finally:
        _stop(agent, log)
    second_run = log.read_text()[len(first_run) :]
    assert "lidar model tiny-lidar tiny-lidar-2 from the rollout manifest" in second_run
    versions = {m.name: m.version for m in envelope.models}
    assert versions == {"tiny-lidar": "tiny-lidar-2"}  # the frame was scored by the new model


def _manifest_version(path: Path) -> str | None:
    entry = manifest.read(path).get("lidar")
    return None if entry is None else entry.current.version


def _first_frame(bootstrap: str, topic: str, timeout_s: float) -> FrameEnvelope:
    frames = frames_on(bootstrap, topic, timeout_s)
    try:
        return next(frames)
    except StopIteration:
        raise AssertionError(f"no frame arrived on {topic} within {timeout_s} s") from None
    finally:
        frames.close()


@pytest.mark.integration
def test_the_centre_publishes_a_registered_model_signed_and_the_agent_takes_only_that(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    """registry -> ``ingest-service publish-model`` -> the real broker -> the agent's listener."""
    keygen = subprocess.run(
        [sys.executable, "-m", "ingest_service.cli", "rollout-keygen",
         "--private", str(tmp_path / "centre.pem"), "--public", str(tmp_path / "fleet.pub.pem")],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert keygen.returncode == 0, keygen.stderr
    registry = ModelRegistry.embedded(tmp_path / "registry")
    registry.register("lidar", _lidar_version(tmp_path, 2), metric=0.9)
    assert registry.promote("lidar", 1).promoted
    base = (
        f'[kafka]\nbootstrap_servers = ["{kafka.bootstrap}"]\n'
        f'[queue]\ndatabase = "{tmp_path / "q.db"}"\n'
        f'[registry]\ndata_dir = "{tmp_path / "registry"}"\n'
        f'[rollout]\ntopic = "{topic}"\nmax_message_bytes = 4096\n'
    )
    unsigned_cfg = tmp_path / "unsigned.toml"
    unsigned_cfg.write_text(base)
    signed_cfg = tmp_path / "signed.toml"
    signed_cfg.write_text(base + f'signing_key = "{tmp_path / "centre.pem"}"\n')

    def publish(config: Path) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ingest_service.cli", "publish-model", "--kind", "lidar",
             "--config", str(config)],
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "UNSIGNED" in publish(unsigned_cfg)
    out = publish(signed_cfg)
    assert "published tiny-lidar tiny-lidar-2" in out
    assert ", signed, inline)" in out

    rollout, slot, metrics = _rollout(tmp_path)
    rollout.public_key = load_public_key(tmp_path / "fleet.pub.pem")
    with listening(rollout, kafka.bootstrap, topic, "edge-veh-signed"):
        deadline = time.monotonic() + 60
        while slot.current.metadata.version != "tiny-lidar-2" and time.monotonic() < deadline:
            time.sleep(0.2)
    assert slot.current.metadata.version == "tiny-lidar-2"  # the signed one
    assert _count(metrics, "bad_signature") == 1  # the unsigned one, refused first
    assert _count(metrics, "ok") == 1


@pytest.mark.integration
def test_a_model_above_the_inline_limit_goes_by_reference_through_the_blob_store(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    """``publish-model`` with ``inline_max_bytes`` below the model's size: without
    ``model_base_url`` it refuses with what to set; with it, the model goes into the blob store,
    one small record carries its URL, and the agent fetches it from a real HTTP server over the
    store's root, checks it and swaps."""
    registry = ModelRegistry.embedded(tmp_path / "registry")
    v2 = _lidar_version(tmp_path, 2)
    registry.register("lidar", v2, metric=0.9)
    assert registry.promote("lidar", 1).promoted
    blobs = tmp_path / "blobs"
    with serving(blobs, prefix="/blobs") as http:
        base = (
            f'[kafka]\nbootstrap_servers = ["{kafka.bootstrap}"]\n'
            f'[queue]\ndatabase = "{tmp_path / "q.db"}"\n'
            f'[blobs]\nroot = "{blobs}"\n'
            f'[registry]\ndata_dir = "{tmp_path / "registry"}"\n'
            f'[rollout]\ntopic = "{topic}"\ninline_max_bytes = 256\n'
        )
        no_url, by_ref = tmp_path / "no_url.toml", tmp_path / "by_ref.toml"
        no_url.write_text(base)
        by_ref.write_text(base + f'model_base_url = "{http.base_url}/blobs/"\n')

        def publish(config: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "ingest_service.cli", "publish-model", "--kind", "lidar",
                 "--config", str(config)],
                capture_output=True, text=True, timeout=120, cwd=REPO,
            )  # fmt: skip

        refused = publish(no_url)
        assert refused.returncode != 0
        assert "above [rollout] inline_max_bytes (256)" in refused.stderr
        assert "model_base_url" in refused.stderr
        done = publish(by_ref)
        assert done.returncode == 0, done.stderr
        assert "by reference" in done.stdout
        assert " in 1 records" in done.stdout  # the URL, not the model, crossed Kafka
        sha = hashlib.sha256(v2.read_bytes()).hexdigest()
        assert (blobs / sha[:2] / sha[2:4] / sha).read_bytes() == v2.read_bytes()

        rollout, slot, metrics = _rollout(tmp_path)
        with listening(rollout, kafka.bootstrap, topic, "edge-veh-by-ref"):
            deadline = time.monotonic() + 60
            while slot.current.metadata.version != "tiny-lidar-2" and time.monotonic() < deadline:
                time.sleep(0.2)
    assert slot.current.metadata.version == "tiny-lidar-2"
    assert _count(metrics, "ok") == 1
    assert any(r.get("accept") == "application/octet-stream" for r in http.requests)
