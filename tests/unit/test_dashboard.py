"""The shipped Grafana dashboard and alert rules only use metrics that docs/metrics.md
documents (and so that the processes export)."""

from __future__ import annotations

import json
import re
from pathlib import Path

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


def test_dashboard_queries_use_documented_metrics() -> None:
    dash = json.loads((ROOT / "deploy" / "grafana" / "fleetal-overview.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    used = {_base(m) for e in exprs for m in METRIC.findall(e)}
    assert used, "the dashboard queries no fleetal_ metric"
    assert used <= _documented(), f"undocumented metrics: {sorted(used - _documented())}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_alert_rules_use_documented_metrics() -> None:
    text = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    used = {_base(m) for m in METRIC.findall(text)}
    assert used <= _documented(), f"undocumented metrics: {sorted(used - _documented())}"
