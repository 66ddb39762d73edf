"""A staged rollout against the real parts: three vehicles (agent rollout listeners on the real
broker, each serving /metrics), a real Prometheus scraping them with their `vehicle` label,
the embedded MLflow registry, and the ingest service's staging thread judging the canary.

A good model reaches the canary first, then the fleet; a model the canary fails on is rolled
back (production and the canary back to the previous version) and never reaches the others.
The vehicles' frame counters are driven by the test (what their pipelines count: frames
scored, frames dropped on a model error); everything else is the system itself."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from deploy.kafka.broker import LocalKafka
from deploy.prometheus.local import LocalPrometheus
from edge_agent.metrics import AgentMetrics
from edge_agent.models.hotswap import ModelSlot
from edge_agent.models.runner import RunnerConfig, load_model
from edge_agent.rollout import ModelRollout
from ingest_service.config import load_ingest_config
from ingest_service.registry import ModelRegistry
from ingest_service.service import IngestService
from ingest_service.staging import STAGE
from schemas.ops import OpsServer
from schemas.signing import generate_keypair, load_public_key
from tests.support.rollout_listener import listening
from tests.support.tiny_models import build_lidar, lidar_props

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CPU = RunnerConfig(providers=("CPUExecutionProvider",))
DEADLINE_S = 90.0


@dataclass
class Vehicle:
    vehicle_id: str
    slot: ModelSlot
    rollout: ModelRollout
    metrics: AgentMetrics
    registry: CollectorRegistry

    @property
    def version(self) -> str:
        return self.slot.current.metadata.version

    def report_model(self) -> None:  # what the pipeline's refresh_models does after a swap
        runner = self.slot.current.runner
        meta = runner.metadata
        self.metrics.set_model("lidar", meta.name, meta.version, runner.sha256, runner.provider)

    def drive(self, scored: int, failed: int) -> None:  # what the pipeline counts per frame
        self.metrics.frames_scored.inc(scored)
        if failed:
            self.metrics.frames_dropped.labels("model_error").inc(failed)

    def swaps(self, result: str) -> float:
        value = self.registry.get_sample_value("fleetal_edge_model_swaps_total", {"result": result})
        return value or 0.0


def _vehicle(vehicle_id: str, v1: Path, tmp_path: Path, public_pem: Path) -> Vehicle:
    slot = ModelSlot(load_model(v1, config=CPU), config=CPU)
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, vehicle_id=vehicle_id)
    holder: list[Vehicle] = []
    rollout = ModelRollout(
        {"lidar": slot},
        tmp_path / vehicle_id / "models",
        metrics=metrics,
        on_swap=lambda: holder[0].report_model(),
        keep=[v1],
        public_key=load_public_key(public_pem),
        vehicle_id=vehicle_id,
    )
    vehicle = Vehicle(vehicle_id, slot, rollout, metrics, registry)
    holder.append(vehicle)
    vehicle.report_model()
    return vehicle


def _wait(what: str, ok: Callable[[], bool], tick: Callable[[], None] = lambda: None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if ok():
            return
        tick()
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _register(registry: ModelRegistry, tmp_path: Path, n: int, metric: float) -> int:
    path = build_lidar(
        tmp_path / f"v{n}.onnx", props=lidar_props(version=f"tiny-lidar-{n}", name="tiny-lidar")
    )
    version = registry.register("lidar", path, metric=metric).version
    assert registry.promote("lidar", version).promoted
    return version


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[list[Vehicle], LocalPrometheus]]:
    generate_keypair(tmp_path / "centre.pem", tmp_path / "fleet.pub.pem")
    v1 = build_lidar(
        tmp_path / "v1.onnx", props=lidar_props(version="tiny-lidar-1", name="tiny-lidar")
    )
    vehicles = [_vehicle(v, v1, tmp_path, tmp_path / "fleet.pub.pem") for v in ("a", "b", "c")]
    with ExitStack() as stack:
        targets = {}
        for v in vehicles:
            server = OpsServer(v.registry).start()
            stack.callback(server.stop)
            targets[f"127.0.0.1:{server.port}"] = {"vehicle": f"veh-{v.vehicle_id}"}
            v.vehicle_id = f"veh-{v.vehicle_id}"
            v.rollout.vehicle_id = v.vehicle_id
        prom = stack.enter_context(LocalPrometheus(targets))
        yield vehicles, prom


def test_canary_first_then_the_fleet_and_a_failing_model_is_rolled_back(
    kafka: LocalKafka,
    topic: str,
    tmp_path: Path,
    fleet: tuple[list[Vehicle], LocalPrometheus],
) -> None:
    vehicles, prom = fleet
    canary, others = vehicles[0], vehicles[1:]
    registry = ModelRegistry.embedded(tmp_path / "registry")
    _register(registry, tmp_path, 1, 0.5)
    v2 = _register(registry, tmp_path, 2, 0.6)
    config = {
        "kafka": {"bootstrap_servers": [kafka.bootstrap], "topic": f"{topic}-frames"},
        "queue": {"database": str(tmp_path / "queue.db")},
        "blobs": {"root": str(tmp_path / "blobs"), "fsync": False},
        "api": {"enabled": False},
        "metrics": {"port": 0},
        "registry": {"data_dir": str(tmp_path / "registry")},
        "rollout": {
            "topic": topic,
            "signing_key": str(tmp_path / "centre.pem"),
            "canary_vehicles": ["veh-a"],
            "canary_observe_s": 3.0,
            "canary_min_frames": 20,
            "canary_max_error_rise": 0.05,
            "canary_tick_s": 0.5,
            "prometheus_url": prom.url,
        },
    }
    toml = tmp_path / "ingest.toml"
    toml.write_text(
        f'[kafka]\nbootstrap_servers = ["{kafka.bootstrap}"]\n'
        f'[registry]\ndata_dir = "{tmp_path / "registry"}"\n'
        f'[rollout]\ntopic = "{topic}"\nsigning_key = "{tmp_path / "centre.pem"}"\n'
        f'canary_vehicles = ["veh-a"]\nprometheus_url = "{prom.url}"\n'
    )

    def publish(version: int) -> None:  # the operator's command
        cli = [sys.executable, "-m", "ingest_service.cli", "publish-model", "--kind", "lidar"]
        done = subprocess.run(
            [*cli, "--version", str(version), "--config", str(toml)],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        assert "to the canaries" in done.stdout

    service = IngestService(load_ingest_config(data=config))
    service.start()
    stop = threading.Event()
    bad = {"failing": 0}

    def drive() -> None:  # the fleet scores frames; the canary fails on a bad model
        while not stop.wait(0.25):
            for v in vehicles:
                failing = v is canary and v.version == "tiny-lidar-3"
                v.drive(5, bad["failing"] if failing else 0)

    driver = threading.Thread(target=drive)
    with ExitStack() as stack:
        for v in vehicles:
            stack.enter_context(
                listening(v.rollout, kafka.bootstrap, topic, f"edge-{v.vehicle_id}")
            )
        driver.start()
        stack.callback(driver.join, 10)
        stack.callback(stop.set)
        stack.callback(service.close)

        publish(v2)
        _wait("the canary on the new model", lambda: canary.version == "tiny-lidar-2")
        _wait("the others passed over", lambda: all(o.swaps("not_in_stage") == 1 for o in others))
        assert all(o.version == "tiny-lidar-1" for o in others)
        _wait("the rollout widened", lambda: all(o.version == "tiny-lidar-2" for o in others))
        _wait("the widening recorded", lambda: registry.get("lidar", v2).tags.get(STAGE) == "fleet")

        v3 = _register(registry, tmp_path, 3, 0.7)
        bad["failing"] = 5  # half of the canary's frames fail on the new model
        publish(v3)
        _wait("the canary on the bad model", lambda: canary.version == "tiny-lidar-3")
        _wait("the canary back on the previous model", lambda: canary.version == "tiny-lidar-2")
        # the update to the canaries goes out before the registry records the rollback
        _wait(
            "the rollback recorded",
            lambda: registry.get("lidar", v3).tags.get(STAGE) == "rolled_back",
        )
        tags = registry.get("lidar", v3).tags
        assert "a rise above 5.00%" in tags["rollout_detail"]
        production = registry.alias("lidar", "production")
        assert production is not None
        assert production.version == v2
        assert all(o.version == "tiny-lidar-2" for o in others)  # never ran the bad one
        assert all(o.swaps("ok") == 1 for o in others)
        body = urllib.request.urlopen(
            f"http://127.0.0.1:{service.ops_port}/metrics", timeout=30
        ).read()
        assert b'fleetal_ingest_rollout_decisions_total{decision="widen",kind="lidar"} 1.0' in body
        assert (
            b'fleetal_ingest_rollout_decisions_total{decision="rollback",kind="lidar"} 1.0' in body
        )
