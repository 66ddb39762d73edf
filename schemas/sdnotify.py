"""systemd's notify protocol for both daemons: readiness, stopping and the watchdog.

Under a unit with ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a datagram socket, ``@``
for the abstract namespace); ``READY=1`` tells it the daemon is up, ``STOPPING=1`` that it is
draining. With ``WatchdogSec=`` it passes ``WATCHDOG_USEC`` and restarts the service when no
``WATCHDOG=1`` arrives within that time. :class:`Watchdog` pings at half the interval for as
long as the daemon's liveness check passes; when it fails (a thread died, a frame is stuck in
a model) the pings stop with the reason logged, and systemd restarts the daemon. Outside
systemd every call is a no-op. The protocol is a few lines of socket code (sd_notify(3)), so
no library is needed for it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

__all__ = ["Watchdog", "notify", "watchdog_interval_s"]

log = logging.getLogger(__name__)

Liveness = Callable[[], str | None]
"""None while the daemon is alive, else why it is not."""


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``, ``WATCHDOG=1``, ``STATUS=...``) to systemd;
    False when not run under a notify unit or the socket is gone (never raises)."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("systemd notify %r not sent to %s: %s", state, address.lstrip("\0"), exc)
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """systemd's watchdog interval for this process, or None when there is none."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (a parent's watchdog)
    return int(usec) / 1e6


class Watchdog:
    """Pings systemd's watchdog while ``alive()`` returns None."""

    def __init__(self, alive: Liveness, env: Mapping[str, str] | None = None) -> None:
        self.alive = alive
        self.env = dict(os.environ if env is None else env)
        self.interval_s = watchdog_interval_s(self.env)
        self.pings = 0
        self.withheld: str | None = None  # why the last ping was not sent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Watchdog:
        if self.interval_s is not None:
            self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
            self._thread.start()
        return self

    def tick(self) -> bool:
        """One check: ping if alive; True if a ping was sent."""
        try:
            why = self.alive()
        except Exception as exc:  # a liveness check that fails says: not alive
            why = f"the liveness check failed: {exc!r}"
        if why is not None:
            if why != self.withheld:
                log.error("watchdog: not pinging systemd (%s); it restarts the service", why)
            self.withheld = why
            return False
        if self.withheld is not None:
            log.info("watchdog: alive again, pinging systemd")
        self.withheld = None
        sent = notify("WATCHDOG=1", self.env)
        self.pings += sent
        return sent

    def _run(self) -> None:
        assert self.interval_s is not None
        while not self._stop.wait(self.interval_s / 2):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
