"""The daemon's health is true and ``edge-agent check`` asks it: a real daemon, a real broker
(and a real closed port for "Kafka down")."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.demo.build_drive import build as build_demo_drive
from deploy.kafka.broker import LocalKafka
from edge_agent.frame import Frame
from edge_agent.sources import open_source, write_spool_frame
from tests.support.agent_process import spawn_agent
from tests.support.kafka_leaks import LEAK_FILTER, collect_leaked_sockets
from tests.support.notify_socket import notify_listener
from tests.support.tiny_models import build_camera, build_lidar

__all__ = ["collect_leaked_sockets"]  # the autouse fixture, imported to take effect

pytestmark = [pytest.mark.integration, LEAK_FILTER]

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _frames(drive: Path) -> Iterator[Frame]:
    with open_source(drive, vehicle_id="veh-h") as src:  # type: ignore[attr-defined]
        for item in src.frames():
            if isinstance(item, Frame):
                yield item


def _healthz(port: int) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            return int(exc.code), exc.read().decode()
    except OSError:
        return None


def _wait_health(port: int, status: int, proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        answer = _healthz(port)
        if answer is not None and answer[0] == status:
            return answer[1]
        time.sleep(0.2)
    raise AssertionError(f"/healthz never answered {status}: {answer}\n{log.read_text()[-3000:]}")


def _check(cfg: Path, env: dict[str, str]) -> tuple[int, str, float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "check", "--config", str(cfg)],
        env=env,
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).decode(), time.monotonic() - start


def _daemon(
    tmp: Path, name: str, bootstrap: str, topic: str, **env_extra: str
) -> tuple[Path, dict[str, str], int]:
    bridge = tmp / name / "bridge"
    bridge.mkdir(parents=True)
    cam = build_camera(tmp / "camera.onnx")
    lid = build_lidar(tmp / "lidar.onnx")
    port = _free_port()
    cfg = tmp / name / "agent.toml"
    cfg.write_text(
        "\n".join(
            [
                "[agent]",
                'vehicle_id = "veh-h"',
                f'data_dir = "{tmp / name / "agent"}"',
                "drain_timeout_s = 1.0",
                "[source]",
                f'path = "{bridge}"',
                "[models]",
                f'camera = "{cam}"',
                f'lidar = "{lid}"',
                "[selector]",
                'diversity = "none"',
                "[selector.budget]",
                "target_rate = 1.0",
                "cold_start_frames = 0",
                "window = 10",
                "[kafka]",
                f'bootstrap_servers = ["{bootstrap}"]',
                f'topic = "{topic}"',
                "bootstrap_timeout_ms = 1000",
                "max_block_ms = 1000",
                "[metrics]",
                f"port = {port}",
                "",
            ]
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), **env_extra)
    return cfg, env, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_under_systemd_the_daemon_says_ready_pings_the_watchdog_and_says_stopping(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    """As a Type=notify unit with a watchdog starts it (deploy/systemd/edge-agent.service)."""
    with notify_listener(tmp_path / "notify.sock") as systemd:
        cfg, env, _ = _daemon(tmp_path, "sd", kafka.bootstrap, topic, **systemd.env(1.0))
        for frame in _frames(build_demo_drive(tmp_path / "drive", frames=3)):
            write_spool_frame(cfg.parent / "bridge", frame)
        proc = spawn_agent(cfg, env, tmp_path / "sd.log")
        try:
            ready = systemd.wait_for("READY=1")
            assert f"STATUS=scoring frames from {cfg.parent / 'bridge'}" in ready
            systemd.wait_for("WATCHDOG=1")
            systemd.wait_for("WATCHDOG=1", after=len(systemd.messages))  # it keeps pinging
        finally:
            _stop(proc)
        assert proc.returncode == 0, (tmp_path / "sd.log").read_text()[-2000:]
        systemd.wait_for("STOPPING=1", timeout_s=5)


def test_check_asks_the_running_daemon_and_kafka_down_makes_it_unhealthy(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    frames = list(_frames(build_demo_drive(tmp_path / "drive", frames=6)))

    # A daemon with the real broker: healthy, and `check` says so while it runs.
    cfg, env, port = _daemon(tmp_path, "up", kafka.bootstrap, topic)
    for frame in frames:
        write_spool_frame(cfg.parent / "bridge", frame)
    log = tmp_path / "up.log"
    proc = spawn_agent(cfg, env, log)
    try:
        body = _wait_health(port, 200, proc, log)
        assert body.startswith("ok\nuplink: ")
        code, out, seconds = _check(cfg, env)
        print(f"\ncheck against a healthy running daemon: exit {code} in {seconds:.2f} s")
        assert code == 0, out
        assert f"daemon at http://127.0.0.1:{port}/healthz: HTTP 200" in out
        assert "locked" not in out
    finally:
        _stop(proc)

    # The same with nothing listening where Kafka should be: unhealthy within the threshold.
    cfg, env, port = _daemon(
        tmp_path,
        "down",
        f"127.0.0.1:{_free_port()}",
        topic,
        FLEETAL_METRICS__HEALTH_MAX_SEND_AGE_S="2",
    )
    for frame in frames:
        write_spool_frame(cfg.parent / "bridge", frame)
    log = tmp_path / "down.log"
    proc = spawn_agent(cfg, env, log)
    try:
        body = _wait_health(port, 503, proc, log)
        assert body.startswith("unhealthy: uplink\n"), body
        assert "uplink: FAILED last delivery never" in body
        code, out, seconds = _check(cfg, env)
        print(f"check against a daemon with Kafka down: exit {code} in {seconds:.2f} s")
        assert code == 1, out
        assert "the running daemon is unhealthy: uplink" in out
    finally:
        _stop(proc)
