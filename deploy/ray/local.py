"""A throwaway one-node Ray cluster on loopback, for the tests and the benchmark.

``LocalRay(num_cpus=1).start()`` runs a small launcher process (:func:`main`) that starts a
Ray head on 127.0.0.1 (GCS and raylet, no dashboard) and writes its GCS address to a file;
any process on the machine then connects with ``ray.init(address=LocalRay.address)`` and the
cluster's token (``RAY_AUTH_TOKEN_PATH=LocalRay.token_file``: Ray's token authentication, on,
with a token made here), as the ingest service's Ray runner does (``[retrain] ray_address``,
``ray_token_file``). The launcher dies with the
process that started it (:func:`deploy.lifetime.die_with_parent`), and Ray's own processes
die with the launcher (a head started by ``ray.init`` shares its fate), so a killed test
run leaves no Ray behind. ``stop()`` shuts it down cleanly.

Run by hand: ``python -m deploy.ray.local --num-cpus 2 --address-file /tmp/ray.addr``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from deploy.lifetime import die_with_parent, owned_tempdir

__all__ = ["LocalRay", "RayNotAvailableError"]


class RayNotAvailableError(RuntimeError):
    """Ray is not installed in this environment, or its head did not start."""


class LocalRay:
    def __init__(self, *, num_cpus: int = 1) -> None:
        self.num_cpus = num_cpus
        self.address = ""
        self.token_file = Path()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 120.0) -> LocalRay:
        self._dir = owned_tempdir("fleetal-ray-")
        address_file = self._dir / "address"
        self.token_file = self._dir / "auth_token"
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        log = (self._dir / "launcher.log").open("wb")
        env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_file),
        }
        argv = [sys.executable, "-m", "deploy.ray.local", "--num-cpus", str(self.num_cpus)]
        argv += ["--address-file", str(address_file), "--temp-dir", str(self._dir / "ray")]
        self._proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if address_file.exists():
                self.address = address_file.read_text().strip()
                return self
            if self._proc.poll() is not None:
                raise RayNotAvailableError(f"the Ray head exited at start:\n{self.log_tail()}")
            time.sleep(0.2)
        self.stop()
        raise RayNotAvailableError(f"the Ray head did not start in {timeout_s:.0f} s")

    def log_tail(self, n: int = 3000) -> str:
        if self._dir is None:
            return ""
        try:
            return (self._dir / "launcher.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)  # the launcher shuts Ray down
            try:
                self._proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> LocalRay:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="run a one-node Ray head on loopback until SIGTERM")
    p.add_argument("--num-cpus", type=int, default=1)
    p.add_argument("--address-file", type=Path, required=True)
    p.add_argument("--temp-dir", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        import ray
    except ImportError:
        print("ray is not installed: `uv sync --extra ray` (make does)", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ray.init(
        num_cpus=args.num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=None if args.temp_dir is None else str(args.temp_dir),
    )
    # the GCS listens on the node address given; the runtime context may name another one
    port = ray.get_runtime_context().gcs_address.rpartition(":")[2]
    address = f"127.0.0.1:{port}"
    tmp = args.address_file.with_suffix(".tmp")
    tmp.write_text(address + "\n")
    tmp.replace(args.address_file)
    print(f"ray head at {address}", flush=True)
    stop.wait()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
