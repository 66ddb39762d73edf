"""A throwaway local Prometheus server, for the scrape tests and the demo.

``LocalPrometheus(targets).start()`` writes a config that scrapes the given ``host:port``
targets every second (plus the project's alert rules), runs Debian's ``prometheus`` binary on a
free loopback port with its TSDB in a temp dir, and waits until it is ready. ``query(expr)``
asks its HTTP API. Without the binary it says what to install.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from deploy.lifetime import die_with_parent, owned_tempdir

RULES = Path(__file__).with_name("alerts.yml")


class PrometheusNotAvailableError(RuntimeError):
    """The prometheus binary is missing."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPrometheus:
    def __init__(
        self,
        targets: Sequence[str] | Mapping[str, Mapping[str, str]],
        *,
        job: str = "fleetal",
        interval_s: int = 1,
    ):
        """``targets``: ``host:port`` list, or ``{host:port: {label: value}}`` to give each
        target its own labels (the ``vehicle`` label of the fleet's agents)."""
        if isinstance(targets, Mapping):
            self.labels = {t: dict(v) for t, v in targets.items()}
        else:
            self.labels = {t: {} for t in targets}
        self.targets = list(self.labels)
        self.job = job
        self.interval_s = interval_s
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> LocalPrometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusNotAvailableError(
                "prometheus is not installed: run `apt-get install prometheus` (make does)"
            )
        self._dir = owned_tempdir("fleetal-prom-")
        shutil.copy(RULES, self._dir / "alerts.yml")
        static = json.dumps([{"targets": [t], "labels": v} for t, v in self.labels.items()])
        (self._dir / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {self.interval_s}s\n"
            f"  evaluation_interval: {self.interval_s}s\n"
            "rule_files: [alerts.yml]\n"
            f"scrape_configs:\n  - job_name: {self.job}\n"
            f"    static_configs: {static}\n"
        )
        self.port = _free_port()
        with (self._dir / "prometheus.log").open("wb") as log:
            self._proc = self._spawn(binary, self._dir, log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"prometheus not ready after {timeout_s} s")

    def _spawn(self, binary: str, workdir: Path, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # dies with us, even on SIGKILL
        )

    def log_tail(self, lines: int = 20) -> str:
        if self._dir is None:
            return ""
        path = self._dir / "prometheus.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the API's ``data.result`` list."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus query {expr!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns a non-empty result."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise TimeoutError(f"{expr!r} returned nothing for {timeout_s} s\n{self.log_tail()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
