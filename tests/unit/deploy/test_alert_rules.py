"""Every alert rule is unit-tested with ``promtool test rules`` (deploy/prometheus/
alerts_test.yml): not firing before its ``for`` has passed, firing after, resolved once the
series recover; and the tests are sharp enough to catch a rule that fires too early."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

PROM = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"


def _promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool is not None, "promtool missing: `apt-get install prometheus` (make test does)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _alerts() -> set[str]:
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    return {r["alert"] for g in groups for r in g["rules"] if "alert" in r}


def test_the_rule_tests_pass() -> None:
    run = _promtool("test", "rules", "alerts_test.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert len(_alerts()) >= 18
    assert _alerts() - firing == set(), "alerts never tested firing"
    assert _alerts() - quiet == set(), "alerts never tested quiet (before 'for', or resolved)"
    assert firing | quiet <= _alerts(), "tests of alerts that do not exist"


def test_a_rule_that_fires_too_early_fails_the_tests(tmp_path: Path) -> None:
    rules = (PROM / "alerts.yml").read_text()
    agent_down = 'expr: up{job="edge-agent"} == 0\n        for: 5m'
    assert agent_down in rules
    (tmp_path / "alerts.yml").write_text(rules.replace(agent_down, agent_down[:-2] + "1m"))
    shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
    run = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert run.returncode != 0
    assert "FleetalEdgeAgentDown" in run.stdout + run.stderr
