"""/metrics and /healthz are served over real HTTP from the process's registry."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from edge_agent.metrics import AgentMetrics, SpoolStats
from schemas.ops import OpsServer


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_metrics_and_health_endpoints() -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, vehicle_id="veh-1")
    metrics.watch_spool(lambda: SpoolStats(frames=3, bytes=4096, oldest_age_s=1.5, evicted_total=2))
    metrics.frames_dropped.labels("too_similar").inc(4)
    healthy = {"ok": True}
    server = OpsServer(
        registry, health=lambda: (healthy["ok"], "ok" if healthy["ok"] else "spool unwritable")
    ).start()
    try:
        code, body = _get(server.url + "/metrics")
        assert code == 200
        assert 'fleetal_edge_frames_dropped_total{reason="too_similar"} 4.0' in body
        assert "fleetal_edge_spool_bytes 4096.0" in body
        assert _get(server.url + "/healthz") == (200, "ok\n")
        healthy["ok"] = False
        assert _get(server.url + "/healthz") == (503, "spool unwritable\n")
        assert _get(server.url + "/nope")[0] == 404
    finally:
        server.stop()


def test_model_info_keeps_one_version_per_kind() -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, vehicle_id="veh-1")
    metrics.set_model("camera", "ref-camera", "1.0.0", "ab" * 32, "CPUExecutionProvider")
    metrics.set_model("lidar", "ref-lidar", "1.0.0", "cd" * 32, "CPUExecutionProvider")
    metrics.set_model("camera", "ref-camera", "1.1.0", "ef" * 32, "CPUExecutionProvider")
    labels = {"kind": "camera", "model": "ref-camera", "provider": "CPUExecutionProvider"}
    new = registry.get_sample_value(
        "fleetal_edge_model_info", {**labels, "version": "1.1.0", "sha256": "ef" * 6}
    )
    old = registry.get_sample_value(
        "fleetal_edge_model_info", {**labels, "version": "1.0.0", "sha256": "ab" * 6}
    )
    assert new == pytest.approx(1.0)
    assert old is None
