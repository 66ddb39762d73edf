"""A real Prometheus scrapes the agent's /metrics; the shipped rules and config are valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from deploy.prometheus.local import LocalPrometheus
from edge_agent.metrics import AgentMetrics, SpoolStats
from schemas.ops import OpsServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"

pytestmark = pytest.mark.integration


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool is not None, "promtool missing: `apt-get install prometheus` (make test does)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_shipped_alert_rules_and_config_are_valid() -> None:
    rules = _promtool("check", "rules", str(DEPLOY / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    count = sum(len(g["rules"]) for g in groups)
    assert count >= 26  # 19 alerts and 7 recording rules
    assert f"SUCCESS: {count} rules found" in rules.stdout + rules.stderr
    config = _promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_prometheus_scrapes_the_agent_metrics() -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, vehicle_id="veh-scrape")
    metrics.watch_spool(lambda: SpoolStats(frames=2, bytes=1234, oldest_age_s=9.0, evicted_total=0))
    metrics.frames_in.inc(42)
    metrics.frames_dropped.labels("quality_blur").inc(3)
    metrics.set_model("camera", "ref-camera", "1.0.0", "ab" * 32, "CPUExecutionProvider")
    server = OpsServer(registry).start()
    try:
        with LocalPrometheus([f"127.0.0.1:{server.port}"]) as prom:
            result = prom.wait_for("fleetal_edge_frames_in_total")
            assert float(result[0]["value"][1]) == 42.0
            dropped = prom.wait_for('fleetal_edge_frames_dropped_total{reason="quality_blur"}')
            assert float(dropped[0]["value"][1]) == 3.0
            spool = prom.wait_for("fleetal_edge_spool_bytes")
            assert float(spool[0]["value"][1]) == 1234.0
            model = prom.wait_for("fleetal_edge_model_info")
            assert model[0]["metric"]["provider"] == "CPUExecutionProvider"
    finally:
        server.stop()


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    import json

    dashboards = sorted((DEPLOY.parent / "grafana").glob("*.json"))
    assert len(dashboards) == 5
    exprs = [
        t["expr"]
        for d in dashboards
        for p in json.loads(d.read_text())["panels"]
        for t in p["targets"]
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"fleetal:dashboard_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(rules))
    checked = _promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in checked.stdout + checked.stderr


def test_the_retrain_failure_alert_fires_on_the_third_failure_in_a_row(tmp_path: Path) -> None:
    """``promtool test rules`` drives FleetalRetrainFailing with the gauge the service exports."""
    spec = tmp_path / "retrain_alert_test.yml"
    summary = "retraining the camera model failed 3 times in a row: see ingest-service retrain-jobs"
    spec.write_text(
        f"""rule_files: ["{DEPLOY / "alerts.yml"}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'fleetal_ingest_retrain_consecutive_failures{{kind="camera"}}'
        values: '0 1 2 3 3'
      - series: 'fleetal_ingest_retrain_consecutive_failures{{kind="lidar"}}'
        values: '0 0 0 0 0'
    alert_rule_test:
      - eval_time: 2m
        alertname: FleetalRetrainFailing
        exp_alerts: []
      - eval_time: 3m
        alertname: FleetalRetrainFailing
        exp_alerts:
          - exp_labels: {{severity: warning, kind: camera}}
            exp_annotations:
              summary: "{summary}"
"""
    )
    result = _promtool("test", "rules", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
