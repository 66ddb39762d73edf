"""The shipped Grafana dashboards (fleet overview, uplink, ingest, label queue, models and
retraining), and the alert rules, only use metrics that docs/metrics.md documents (and so
that the processes export) or the recording rules of alerts.yml; the provisioning files point
Grafana at them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\bfleetal_[a-z_]+")
SUFFIXES = ("_bucket", "_sum", "_count")


def _documented() -> set[str]:
    return set(METRIC.findall((ROOT / "docs" / "metrics.md").read_text()))


def _base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
RECORDED = re.compile(r"\bfleetal:[a-z_:0-9]+")


def _recorded() -> set[str]:
    return set(re.findall(r"record: (fleetal:[a-z_:0-9]+)", _alerts_text()))


def _alerts_text() -> str:
    return (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()


def test_there_is_a_dashboard_for_each_area() -> None:
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    assert uids == {
        "fleetal-overview", "fleetal-uplink", "fleetal-ingest", "fleetal-label-queue",
        "fleetal-models",
    }  # fmt: skip


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_queries_use_documented_metrics(path: Path) -> None:
    dash = json.loads(path.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 6
    used = {_base(m) for e in exprs for m in METRIC.findall(e)}
    assert used, "the dashboard queries no fleetal_ metric"
    assert used <= _documented(), f"undocumented metrics: {sorted(used - _documented())}"
    recorded = {m for e in exprs for m in RECORDED.findall(e)}
    assert recorded <= _recorded(), f"no such recording rule: {sorted(recorded - _recorded())}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"])


def test_the_checks_see_an_unknown_metric() -> None:
    assert {_base(m) for m in METRIC.findall("rate(fleetal_edge_no_such_total[5m])")} - (
        _documented()
    ) == {"fleetal_edge_no_such_total"}


def test_provisioning_points_grafana_at_the_dashboards_and_prometheus() -> None:
    prov = ROOT / "deploy" / "grafana" / "provisioning"
    dashboards = yaml.safe_load((prov / "dashboards.yaml").read_text())
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].endswith("/fleetal")
    sources = yaml.safe_load((prov / "datasources.yaml").read_text())["datasources"]
    assert [s["type"] for s in sources] == ["prometheus"]


def test_alert_rules_use_documented_metrics() -> None:
    text = _alerts_text()
    used = {_base(m) for m in METRIC.findall(text)}
    assert used <= _documented(), f"undocumented metrics: {sorted(used - _documented())}"
