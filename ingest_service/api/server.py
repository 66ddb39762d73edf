"""Run the labeling API with uvicorn in a background thread (for the CLI and tests)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import types
from typing import Self

import uvicorn
from fastapi import FastAPI

__all__ = ["ApiServer"]

log = logging.getLogger(__name__)


class ApiServer:
    """``uvicorn`` serving ``app`` on ``host:port`` from a daemon thread.

    The listening socket is bound in :meth:`start` (``port=0`` picks a free port; :attr:`port`
    is the bound one), so a request sent right after :meth:`start` returns is accepted.
    :meth:`stop` stops accepting, lets in-flight requests finish for up to ``drain_timeout_s``,
    then returns. Also a context manager.
    """

    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        drain_timeout_s: float = 10.0,
        log_level: str = "warning",
    ) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self.drain_timeout_s = drain_timeout_s
        self._config = uvicorn.Config(
            app,
            log_level=log_level,
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=int(max(1.0, drain_timeout_s)),
        )
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def running(self) -> bool:
        """Whether the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._sock is None:
            raise RuntimeError("ApiServer is not started")
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Bind, start serving in a thread, and wait until uvicorn is up."""
        if self._thread is not None:
            raise RuntimeError("ApiServer already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets whose proto says
        # TCP, and accepted sockets inherit it. With proto 0, Nagle + the client's delayed ACK
        # add ~40 ms to every response written in two parts (headers, then body).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise OSError(
                f"labeling API cannot listen on {self.host}:{self._requested_port}: {exc}"
            ) from exc
        self._sock = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="labeling-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the labeling API server exited during start-up (see logs)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the labeling API did not start within {timeout_s} s")
            time.sleep(0.01)
        log.info("labeling API listening on %s", self.url)

    def stop(self) -> None:
        """Stop accepting, drain in-flight requests (bounded), close the socket."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(self.drain_timeout_s + 5.0)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5.0)
        if self._sock is not None:
            self._sock.close()
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()
