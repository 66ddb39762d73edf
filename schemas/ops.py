"""The operational contract every process serves: ``/metrics`` and ``/healthz`` over HTTP.

``/metrics`` is the Prometheus text exposition of the process's registry; ``/healthz`` answers
200 with ``ok`` while the process's health callback returns ``(True, detail)`` and 503 with the
detail otherwise, so systemd, Kubernetes probes and Prometheus read one endpoint each.
Metric names are prefixed ``fleetal_`` and documented in ``docs/metrics.md``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, str]]


def _always_ok() -> tuple[bool, str]:
    return True, "ok"


class OpsServer:
    """A small threaded HTTP server for ``/metrics`` and ``/healthz``.

    Port 0 picks a free port; :attr:`port` tells which. ``stop()`` shuts it down.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        health: HealthCheck = _always_ok,
    ) -> None:
        self._registry = registry
        self._health = health
        handler = self._make_handler()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host!s}:{self.port}"

    def start(self) -> OpsServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ops-http", daemon=True
        )
        self._thread.start()
        log.info("serving /metrics and /healthz on %s", self.url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self._registry
        health = self._health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    try:
                        ok, detail = health()
                    except Exception as exc:  # a broken check is unhealthy, not a crash
                        ok, detail = False, f"health check failed: {exc!r}"
                    self._send(200 if ok else 503, (detail + "\n").encode(), "text/plain")
                else:
                    self._send(404, b"try /metrics or /healthz\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("ops http: " + format, *args)

        return Handler
