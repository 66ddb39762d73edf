"""A throwaway local MLflow tracking server (the model registry's server), for tests and demos.

``LocalMlflow().start()`` runs ``mlflow server`` from this environment on a free loopback port,
with a SQLite backend store and an artifact folder in a temp dir, and waits until ``/health``
answers. It runs in its own process group (``stop`` ends the server and its workers) and dies
with the process that started it, even on SIGKILL (:func:`deploy.lifetime.die_with_parent`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from deploy.lifetime import die_with_parent, owned_tempdir

__all__ = ["LocalMlflow"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalMlflow:
    def __init__(self) -> None:
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> LocalMlflow:
        binary = Path(sys.executable).with_name("mlflow")
        if not binary.exists():
            raise RuntimeError(
                f"{binary} missing: the registry extra is not installed (`make setup` installs it)"
            )
        self._dir = owned_tempdir("fleetal-mlflow-")
        self.port = _free_port()
        with (self._dir / "mlflow.log").open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(binary), "server",
                    "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                    "--backend-store-uri", f"sqlite:///{self._dir / 'mlflow.db'}",
                    "--artifacts-destination", str(self._dir / "artifacts"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # dies with us, even on SIGKILL
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"mlflow server not ready after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if self._dir is None:
            return ""
        path = self._dir / "mlflow.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if proc is not None:  # workers left in the group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LocalMlflow:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
