"""Run a retrain job's trainer on a Ray cluster (``[retrain] runner = "ray"``).

For teams whose training outgrows the ingest host: the same trainer command, under the same
contract (``docs/loop.md``), runs as a Ray task on whichever node of the cluster has the
resources the job asks for (``ray_num_cpus``, ``ray_num_gpus``). The worker

1. connects to the cluster once (``ray_address``; with Ray's token authentication, the token
   from ``ray_token_file``, never from the configuration itself);
2. sends the job's inputs (``job.json``, ``labels.jsonl``) with the task; on the node, the
   task writes them to a temporary job directory (the paths in ``job.json`` rewritten to it),
   runs ``COMMAND... --job-dir DIR`` there (killed with the task, and at the job's deadline),
   and returns every file the trainer wrote (``result.json``, the model, ``trainer.log``);
3. writes them into the local job directory, where the rest of the worker's flow (reading the
   result, registering, promoting) goes on as for a local run. The job's deadline or the
   service stopping cancels the task (``ray.cancel(force=True)``).

The trainer reads sensor data from the blob store named in ``job.json``: on a cluster, every
node must reach it (S3, or the local store's root on a shared file system).

Ray is imported only here, and only when this runner is configured (the ``ray`` extra).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.lifetime import die_with_parent

__all__ = ["RayTarget", "run_on_ray"]

log = logging.getLogger(__name__)

INPUTS = ("job.json", "labels.jsonl")

_lock = threading.Lock()
_connected: str | None = None


@dataclass(frozen=True, slots=True)
class RayTarget:
    """Where and with what a job's trainer runs on Ray."""

    address: str
    token_file: Path | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def _connect(target: RayTarget) -> Any:
    """``ray``, connected to the target's cluster (once per process and address)."""
    global _connected
    with _lock:
        if target.token_file is not None:
            # Ray reads its auth settings when it is imported: set them before the first import
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN_PATH"] = str(target.token_file)
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError(
                'retrain.runner = "ray" needs Ray: install the `ray` extra (make does)'
            ) from exc
        if _connected != target.address:
            if ray.is_initialized():
                ray.shutdown()
            ray.init(address=target.address, log_to_driver=False, configure_logging=False)
            _connected = target.address
            log.info("retrain: connected to the Ray cluster at %s", target.address)
        return ray


def _train_on_node(
    argv: Sequence[str], inputs: dict[str, bytes], timeout_s: float
) -> dict[str, Any]:
    """The Ray task: the trainer in a temporary job directory on this node."""
    with tempfile.TemporaryDirectory(prefix="fleetal-retrain-") as tmp:
        job_dir = Path(tmp)
        spec = json.loads(inputs["job.json"])
        spec["labels_file"] = str(job_dir / "labels.jsonl")
        spec["result_file"] = str(job_dir / "result.json")
        (job_dir / "job.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
        (job_dir / "labels.jsonl").write_bytes(inputs["labels.jsonl"])
        rc: int | None
        with (job_dir / "trainer.log").open("wb") as out:
            out.write(f"[ray node {socket.gethostname()} pid {os.getpid()}]\n".encode())
            out.flush()
            try:
                rc = subprocess.run(
                    [*argv, "--job-dir", str(job_dir)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "FLEETAL_RETRAIN_JOB_DIR": str(job_dir)},
                    timeout=max(timeout_s, 0.001),
                    preexec_fn=die_with_parent,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                rc = None
        files = {
            p.name: p.read_bytes()
            for p in job_dir.iterdir()
            if p.is_file() and p.name not in INPUTS
        }
        return {"rc": rc, "files": files, "node": socket.gethostname()}


def run_on_ray(
    target: RayTarget,
    argv: Sequence[str],
    job_dir: Path,
    timeout_s: float,
    stop: threading.Event | None,
) -> tuple[int | None, bool]:
    """Run the trainer for the job in ``job_dir`` on Ray: ``(exit code or None, stopped)``;
    None when it timed out or was stopped (the task cancelled). The trainer's files, its log
    included, land in ``job_dir``."""
    ray = _connect(target)
    inputs = {name: (job_dir / name).read_bytes() for name in INPUTS}
    task = ray.remote(num_cpus=target.num_cpus, num_gpus=target.num_gpus, max_retries=0)(
        _train_on_node
    )
    ref = task.remote(list(argv), inputs, timeout_s)
    started = time.monotonic()
    log_path = job_dir / "trainer.log"
    while True:
        done, _ = ray.wait([ref], timeout=0.5)
        if done:
            break
        stopped = stop is not None and stop.is_set()
        if stopped or time.monotonic() - started > timeout_s:
            ray.cancel(ref, force=True)
            what = "the service stopped" if stopped else "the job's deadline passed"
            log_path.write_text(
                f"Ray task cancelled after {time.monotonic() - started:.0f} s: {what}\n"
            )
            return None, stopped
    try:
        out = ray.get(ref)
    except Exception as exc:  # the task or its node died
        log_path.write_text(f"the Ray task failed: {exc}\n")
        return -1, False
    for name, data in out["files"].items():
        (job_dir / name).write_bytes(data)
    return out["rc"], False
