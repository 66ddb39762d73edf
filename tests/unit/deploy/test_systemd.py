"""The systemd units pass ``systemd-analyze verify`` (unknown keys, bad values, missing
executables: the install path rewritten to this checkout's .venv) and ``systemd-analyze
security`` (an exposure score in systemd's "OK" band), and carry what an operator relies on:
notify + watchdog, a restart policy that does not loop on a bad configuration, resource limits,
an unprivileged user."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
INSTALLED = "/opt/fleetal/venv/bin"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def _local_copy(unit: Path, tmp_path: Path) -> Path:
    text = unit.read_text().replace(INSTALLED, str(REPO / ".venv" / "bin"))
    out = tmp_path / unit.name
    out.write_text(text)
    return out


def _keys(unit: Path) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def test_both_daemons_have_a_unit() -> None:
    assert [u.name for u in UNITS] == ["edge-agent.service", "ingest-service.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_unit_verifies(unit: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(_local_copy(unit, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == "", run.stderr  # not even a warning (an unknown key is one)


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=/nonexistent/bin/x\nWatchdogSecs=5\n")
    run = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert "Unknown key 'WatchdogSecs'" in run.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_unit_is_hardened(unit: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", str(_local_copy(unit, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", run.stdout + run.stderr)
    assert found is not None, run.stdout + run.stderr
    assert float(found.group(1)) <= 2.5, found.group(0)
    assert found.group(2) == "OK"


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_unit_has_what_operations_rely_on(unit: Path) -> None:
    keys = _keys(unit)
    assert keys["Type"] == ["notify"]
    assert int(keys["WatchdogSec"][0]) >= 60
    assert keys["Restart"] == ["on-failure"]
    assert keys["RestartPreventExitStatus"] == ["2"]  # the programs' exit code for bad config
    assert keys["User"][0] not in ("", "root")
    for limit in ("CPUQuota", "MemoryMax", "IOWeight", "TasksMax"):
        assert keys.get(limit), f"{unit.name}: no {limit}"
    assert keys["NoNewPrivileges"] == ["true"]
    assert keys["CapabilityBoundingSet"] == [""]
    exec_start = keys["ExecStart"][0].split()
    assert exec_start[0].startswith(INSTALLED)
    assert exec_start[1] == "run"
