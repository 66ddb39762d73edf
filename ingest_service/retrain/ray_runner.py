"""Run a retrain job's trainer on a Ray cluster (``[retrain] runner = "ray"``).

For teams whose training outgrows the ingest host: the same trainer command, under the same
contract (``docs/loop.md``), runs as a Ray task on whichever node of the cluster has the
resources the job asks for (``ray_num_cpus``, ``ray_num_gpus``).

The ingest service never becomes a Ray driver itself: a driver shares its fate with the
cluster it is connected to (Ray's core worker ends the driver's process when the cluster
goes away), and a retrain cluster going down must not take the label queue's consumer with
it. Each attempt's trainer command is therefore this module's driver, run by the worker as
an ordinary trainer subprocess (:func:`driver_argv`), with the same deadline, stop and log:

    python -m ingest_service.retrain.ray_runner --address A [--token-file T]
        [--num-cpus N] [--num-gpus G] [--timeout-s S] -- TRAINER... --job-dir DIR

The driver

1. checks that something answers at the address (a clear error at once, not Ray's minute
   of reconnecting), then connects (with Ray's token authentication, the token from the
   file, never from the configuration itself);
2. sends the job's inputs (``job.json``, ``labels.jsonl``) with one Ray task
   (``max_retries = 0``: the job's attempts decide retries); on the node, the task writes
   them to a temporary job directory (the paths in ``job.json`` rewritten to it) and runs
   ``TRAINER... --job-dir NODE_DIR`` there (dying with the task's worker);
3. writes the files the trainer wrote (``result.json``, the model) into ``DIR``, prints the
   node's ``trainer.log`` to its own output (which the worker keeps as ``DIR/trainer.log``)
   and exits with the trainer's exit code: the worker reads the outcome as for a local run.

The job's deadline or the service stopping kills the driver (its process group); Ray then
kills the task its driver owned, and the trainer with it. The driver exits 3 when it cannot
reach the cluster or the task (or its node) died, with the reason on its output.

The trainer reads sensor data from the blob store named in ``job.json``: on a cluster, every
node must reach it (S3, or the local store's root on a shared file system).

Ray is imported only in the driver process, and only when this runner is configured (the
``ray`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.lifetime import die_with_parent

__all__ = ["DRIVER_FAILED", "RayTarget", "driver_argv", "main"]

INPUTS = ("job.json", "labels.jsonl")
DRIVER_FAILED = 3  # exit code: the cluster was not reachable, or the task or its node died
_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RayTarget:
    """Where and with what a job's trainer runs on Ray."""

    address: str
    token_file: Path | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def driver_argv(target: RayTarget, trainer: Sequence[str], timeout_s: float) -> list[str]:
    """The command that runs ``trainer`` on ``target`` (the worker appends ``--job-dir``)."""
    argv = [sys.executable, "-m", "ingest_service.retrain.ray_runner"]
    argv += ["--address", target.address]
    if target.token_file is not None:
        argv += ["--token-file", str(target.token_file)]
    argv += ["--num-cpus", repr(target.num_cpus), "--num-gpus", repr(target.num_gpus)]
    argv += ["--timeout-s", f"{timeout_s:.3f}", "--", *trainer]
    return argv


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
            if p.is_file() and p.name not in INPUTS  # the driver has those
        }
        return {"rc": rc, "files": files, "node": socket.gethostname()}


def _reachable(address: str) -> str | None:
    """None if a TCP connection to ``host:port`` (or ``ray://host:port``) opens, else why."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S):
            return None
    except ValueError:
        return f"{address!r} is not host:port"
    except OSError as exc:
        return f"{exc.strerror or exc}"


def _say(message: str) -> None:
    print(f"[ray driver] {message}", flush=True)


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str], Path]:
    p = argparse.ArgumentParser(
        prog="python -m ingest_service.retrain.ray_runner",
        description="run a retrain trainer command as a task on a Ray cluster",
    )
    p.add_argument("--address", required=True, help="the cluster's GCS host:port (or ray://)")
    p.add_argument("--token-file", type=Path, default=None, help="Ray's auth token file")
    p.add_argument("--num-cpus", type=float, default=1.0)
    p.add_argument("--num-gpus", type=float, default=0.0)
    p.add_argument("--timeout-s", type=float, default=24 * 3600.0)
    p.add_argument("trainer", nargs=argparse.REMAINDER, help="-- TRAINER... --job-dir DIR")
    args = p.parse_args(argv)
    rest = list(args.trainer)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if len(rest) < 3 or rest[-2] != "--job-dir":
        p.error("expected -- TRAINER... --job-dir DIR after the options")
    return args, rest[:-2], Path(rest[-1])


def main(argv: Sequence[str] | None = None) -> int:
    args, trainer, job_dir = _parse(sys.argv[1:] if argv is None else argv)
    why = _reachable(args.address)
    if why is not None:
        _say(
            f"no Ray cluster answers at {args.address} ({why}): start the cluster, or fix "
            "[retrain] ray_address"
        )
        return DRIVER_FAILED
    if args.token_file is not None:
        # Ray reads its auth settings when it is imported: set them before the import
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(args.token_file)
    try:
        import ray
    except ImportError:
        _say('retrain.runner = "ray" needs Ray: install the `ray` extra (make does)')
        return DRIVER_FAILED
    try:
        inputs = {name: (job_dir / name).read_bytes() for name in INPUTS}
        ray.init(address=args.address, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # refused token, version mismatch, unreadable inputs
        _say(f"could not start the job on the Ray cluster at {args.address}: {exc}")
        return DRIVER_FAILED
    task = ray.remote(num_cpus=args.num_cpus, num_gpus=args.num_gpus, max_retries=0)(_train_on_node)
    _say(f"connected to {args.address}; the trainer runs as a task ({args.num_cpus:g} CPU)")
    try:
        out = ray.get(task.remote(trainer, inputs, args.timeout_s))
    except Exception as exc:  # the task or its node died
        _say(f"the Ray task failed: {exc}")
        return DRIVER_FAILED
    finally:
        ray.shutdown()
    files: dict[str, bytes] = out["files"]
    node_log = files.pop("trainer.log", b"")
    for name, data in files.items():
        (job_dir / name).write_bytes(data)
    sys.stdout.flush()
    sys.stdout.buffer.write(node_log)
    sys.stdout.flush()
    if out["rc"] is None:
        _say(f"the trainer overran --timeout-s {args.timeout_s:g} on {out['node']}: killed")
        return DRIVER_FAILED
    return int(out["rc"])


if __name__ == "__main__":
    sys.exit(main())
