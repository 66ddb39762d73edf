"""A test session killed with SIGKILL leaves no service behind (Kafka, PostgreSQL, Prometheus).

Once, a run killed by a timeout left two Kafka JVMs under PID 1 for an hour: teardown and
``atexit`` never run on SIGKILL. The services now carry a parent-death signal
(``deploy/lifetime.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from deploy.kafka.broker import LocalKafka
from deploy.lifetime import sweep_orphans

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_killed_test_session_leaves_no_service_running(kafka: LocalKafka, tmp_path: Path) -> None:
    out = tmp_path / "pids.json"
    env = {**os.environ, "FLEETAL_SESSION_CHILD_OUT": str(out)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    cmd += ["tests/integration/session_child.py"]
    with (tmp_path / "child.log").open("wb") as log:
        session = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not out.exists():
            assert session.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the child session never started its services"
            time.sleep(0.2)
        started = json.loads(out.read_text())
        pids: dict[str, int] = started["pids"]
        dirs: dict[str, str] = started["dirs"]
        assert all(_alive(pid) for pid in pids.values()), pids
    finally:
        session.send_signal(signal.SIGKILL)
        session.wait(timeout=30)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.2)
    left = {name: pid for name, pid in pids.items() if _alive(pid)}
    for pid in left.values():  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after the session was SIGKILLed: {left}"

    # Their temporary directories stay behind a SIGKILL; the next service started sweeps them,
    # and only them (this session's own broker directory has a live owner).
    assert all(Path(d).is_dir() for d in dirs.values())
    swept = sweep_orphans("fleetal-kafka-") + sweep_orphans("fleetal-prom-")
    assert {str(p) for p in swept} >= set(dirs.values())
    assert kafka.workdir is not None
    assert kafka.workdir.is_dir()
