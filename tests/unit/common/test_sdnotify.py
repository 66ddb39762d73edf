"""systemd's notify protocol over a real datagram socket: messages arrive as sent (also on an
abstract address); the watchdog pings only while the liveness check passes, and says why not;
outside systemd nothing is sent."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.sdnotify import Watchdog, notify, watchdog_interval_s


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def test_a_message_arrives_as_sent(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_an_abstract_socket_is_reached() -> None:
    name = f"fleetal-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


def test_outside_systemd_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})  # logged
    assert watchdog_interval_s({}) is None
    assert Watchdog(lambda: None, env={}).start().interval_s is None


def test_the_interval_is_for_this_process_only() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "90000000"}) == pytest.approx(90.0)
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval_s(mine) == pytest.approx(2.0)
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None


def test_the_watchdog_pings_only_while_alive(
    listener: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    sock, path = listener
    state: dict[str, str | None] = {"why": None}
    dog = Watchdog(lambda: state["why"], env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    assert dog.tick()
    assert sock.recv(4096) == b"WATCHDOG=1"
    state["why"] = "the uplink thread stopped"
    assert not dog.tick()
    assert dog.withheld == "the uplink thread stopped"
    assert "not pinging systemd (the uplink thread stopped)" in caplog.text
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(4096)
    state["why"] = None
    assert dog.tick()
    sock.settimeout(5)
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert dog.pings == 2


def test_a_failing_liveness_check_counts_as_not_alive(listener: tuple[socket.socket, str]) -> None:
    _, path = listener

    def broken() -> str | None:
        raise RuntimeError("boom")

    dog = Watchdog(broken, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    assert not dog.tick()
    assert dog.withheld is not None
    assert "boom" in dog.withheld


def test_the_thread_pings_at_half_the_interval(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    dog = Watchdog(lambda: None, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}).start()
    try:
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        dog.stop()
