"""A datagram socket standing in for systemd's NOTIFY_SOCKET: what a daemon under test sends."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class NotifyListener:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))

    def env(self, watchdog_s: float = 1.0) -> dict[str, str]:
        """What systemd sets for a Type=notify unit with WatchdogSec=watchdog_s."""
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(int(watchdog_s * 1e6))}

    def wait_for(self, state: str, timeout_s: float = 60.0, *, after: int = 0) -> str:
        """The first message from the ``after``-th on (received so far or within the
        timeout) holding ``state``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for message in self.messages[after:]:
                if state in message.splitlines():
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {state} within {timeout_s:.0f} s: {self.messages}")
            self._sock.settimeout(left)
            try:
                self.messages.append(self._sock.recv(65536).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self._sock.close()


@contextmanager
def notify_listener(path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(path)
    try:
        yield listener
    finally:
        listener.close()
