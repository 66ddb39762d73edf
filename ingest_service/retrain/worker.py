"""Run a retrain job: the trainer as an external command, in a subprocess on the ingest host.

The contract (``docs/loop.md``) lets any program be the trainer: ours, a Kubernetes Job's
entry point, a Slurm script; with ``runner = "ray"`` the command is a Ray driver
(:mod:`ingest_service.retrain.ray_runner`) that runs the trainer on a cluster, still a
subprocess here. The worker

1. moves the kind's queued job to ``running`` (:meth:`JobStore.start`);
2. writes the job's inputs to a directory of its own, ``<work_dir>/<kind>-<id>-<attempt>/``:

   * ``job.json``: ``job_id``, ``kind``, ``attempt``, ``trigger``, ``labels_at``,
     ``labels_file``, ``blobs`` (the blob store: ``backend``, and ``root`` for ``local`` or
     the bucket settings without credentials for ``s3``:
     :func:`~ingest_service.blobstore.blob_store_spec`),
     ``result_file``;
   * ``labels.jsonl``: every labeled task, one JSON object per line (``task_id``,
     ``frame_key``, ``labeler``, ``labeled_ns``, ``blob_refs`` ``{key: {sha256, size}}``
     (keys ``camera/<NAME>``, ``lidar``, ``envelope``: ``BlobRefs.from_json`` reads them),
     ``label``: the payload as the labeling API stored it);

3. runs ``COMMAND... --job-dir DIR`` (its own process group, killed with the service, and
   killed when the job's deadline passes), stdout and stderr to ``DIR/trainer.log``;
4. reads ``DIR/result.json``: ``{"status": "succeeded" | "rejected", "metric": float | null,
   "labels_used": int, "model_version": str | null, "detail": str, "model_path": str}``
   (``model_path``, optional: the ONNX file the run produced, relative to ``DIR``);
5. with a registry, registers a succeeded run's ``model_path`` (its metric, parameters and
   lineage) and promotes it to ``production`` unless its holdout metric is worse than
   production's by more than the margin; a model not promoted makes the job ``rejected``.

Exit 0 with a valid result finishes the job in its status. Any other exit code, a missing
or invalid result, or the deadline passing fails the attempt: the job is queued again while
attempts remain, else it fails, with the reason and the end of the log in its ``detail``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest_service.queue import LabelQueue
from ingest_service.registry import ModelRegistry, Promotion, RegisteredModel
from ingest_service.retrain.jobs import JobState, JobStore, RetrainJob
from ingest_service.retrain.ray_runner import RayTarget, driver_argv
from schemas.lifetime import die_with_parent

__all__ = ["TrainerCommand", "run_job", "work_once"]

log = logging.getLogger(__name__)

_LOG_TAIL = 600  # characters of the trainer's log kept in a failed job's detail


@dataclass(frozen=True, slots=True)
class TrainerCommand:
    """The trainer program and where jobs get their directories."""

    argv: tuple[str, ...]
    work_dir: Path
    blobs: dict[str, str]  # what job.json tells the trainer about the blob store
    ray: RayTarget | None = None  # run on this Ray cluster instead of a local subprocess

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("the trainer command is empty: set retrain.command")


def _write_inputs(queue: LabelQueue, job: RetrainJob, command: TrainerCommand) -> Path:
    job_dir = command.work_dir / f"{job.kind}-{job.id}-{job.attempts}"
    job_dir.mkdir(parents=True, exist_ok=True)
    labels_file = job_dir / "labels.jsonl"
    count = 0
    with labels_file.open("w", encoding="utf-8") as out:
        for item in queue.export_labeled():
            frame = item.frame
            row = {
                "task_id": item.task_id,
                "frame_key": frame.key,
                "labeler": item.labeler,
                "labeled_ns": item.labeled_ns,
                "blob_refs": {
                    name: {"sha256": ref.sha256, "size": ref.size}
                    for name, ref in frame.blob_refs.items()
                },
                "label": item.payload,
            }
            out.write(json.dumps(row, sort_keys=True) + "\n")
            count += 1
    spec = {
        "job_id": job.id,
        "kind": job.kind,
        "attempt": job.attempts,
        "trigger": job.trigger,
        "labels_at": job.labels_at,
        "labels": count,
        "labels_file": str(labels_file),
        "blobs": command.blobs,
        "result_file": str(job_dir / "result.json"),
    }
    (job_dir / "job.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return job_dir


def _read_result(path: Path) -> dict[str, Any]:
    """The trainer's result, checked; ``ValueError`` naming what is wrong."""
    if not path.exists():
        raise ValueError(f"{path.name} missing: the trainer exited 0 without writing it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} must be a JSON object")
    status = data.get("status")
    if status not in ("succeeded", "rejected"):
        raise ValueError(f"{path.name}: status must be 'succeeded' or 'rejected', got {status!r}")
    metric = data.get("metric")
    if metric is not None and not (
        isinstance(metric, int | float) and not isinstance(metric, bool) and math.isfinite(metric)
    ):
        raise ValueError(f"{path.name}: metric must be a finite number or null, got {metric!r}")
    used = data.get("labels_used")
    if not (isinstance(used, int) and not isinstance(used, bool) and used >= 0):
        raise ValueError(f"{path.name}: labels_used must be an int >= 0, got {used!r}")
    version = data.get("model_version")
    if version is not None and not isinstance(version, str):
        raise ValueError(f"{path.name}: model_version must be a string or null")
    detail = data.get("detail", "")
    if not isinstance(detail, str):
        raise ValueError(f"{path.name}: detail must be a string")
    model_path = data.get("model_path")
    if model_path is not None:
        if not isinstance(model_path, str):
            raise ValueError(f"{path.name}: model_path must be a string")
        if not (path.parent / model_path).is_file():
            raise ValueError(f"{path.name}: model_path {model_path!r} is not a file")
    return data


def _tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-_LOG_TAIL:].strip()


def _run_local(
    argv: Sequence[str],
    env: dict[str, str],
    log_path: Path,
    timeout_s: float,
    stop: threading.Event | None,
) -> tuple[int | None, bool]:
    """The trainer as a subprocess of this one: ``(exit code or None, stopped)``; None when it
    was killed at the deadline or because ``stop`` was set."""
    started = time.monotonic()
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        while True:
            left = timeout_s - (time.monotonic() - started)
            if left <= 0 or (stop is not None and stop.is_set()):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return None, stop is not None and stop.is_set()
            try:
                return proc.wait(timeout=min(left, 0.5)), False
            except subprocess.TimeoutExpired:
                continue


def run_job(
    store: JobStore,
    queue: LabelQueue,
    job: RetrainJob,
    command: TrainerCommand,
    *,
    worker: str,
    extra_env: dict[str, str] | None = None,
    stop: threading.Event | None = None,
    registry: ModelRegistry | None = None,
    margin: float = 0.0,
) -> RetrainJob:
    """Run the trainer for ``job`` (held by ``worker``) and record the outcome; returns the
    job as it is afterwards. ``stop`` set (the service stopping) kills the trainer and fails
    the attempt ("interrupted"), so the job is queued again."""
    job_dir = _write_inputs(queue, job, command)
    log_path = job_dir / "trainer.log"
    deadline_ns = job.deadline_ns if job.deadline_ns is not None else time.time_ns()
    timeout_s = max(0.0, (deadline_ns - store.clock()) / 1e9)
    env = {**os.environ, **(extra_env or {}), "FLEETAL_RETRAIN_JOB_DIR": str(job_dir)}
    started = time.monotonic()
    argv = list(command.argv)
    if command.ray is not None:  # the Ray driver is the trainer command (ray_runner)
        argv = driver_argv(command.ray, argv, timeout_s)
    try:
        rc, stopped = _run_local([*argv, "--job-dir", str(job_dir)], env, log_path, timeout_s, stop)
    except OSError as exc:
        return store.fail_attempt(job.id, worker, f"trainer could not start: {exc}")
    seconds = time.monotonic() - started
    if stopped:
        why = f"attempt {job.attempts} interrupted after {seconds:.0f} s: the service stopped"
        return store.fail_attempt(job.id, worker, _with_log(why, log_path))
    if rc is None:
        why = f"attempt {job.attempts} timed out after {seconds:.0f} s (killed)"
        return store.fail_attempt(job.id, worker, _with_log(why, log_path))
    if rc != 0:
        why = f"attempt {job.attempts}: trainer exited {rc}"
        return store.fail_attempt(job.id, worker, _with_log(why, log_path))
    try:
        result = _read_result(job_dir / "result.json")
    except ValueError as exc:
        return store.fail_attempt(
            job.id, worker, _with_log(f"attempt {job.attempts}: {exc}", log_path)
        )
    state = JobState.SUCCEEDED if result["status"] == "succeeded" else JobState.REJECTED
    metric = None if result.get("metric") is None else float(result["metric"])
    version = result.get("model_version")
    detail = str(result.get("detail", ""))
    if registry is not None and state is JobState.SUCCEEDED and result.get("model_path"):
        try:
            registered, promotion = _register(registry, job, job_dir, result, metric, margin)
        except Exception as exc:  # the registry is down: try the whole attempt again
            why = f"attempt {job.attempts}: trained, but the registry failed: {exc}"
            return store.fail_attempt(job.id, worker, why)
        version = f"{registered.name}:{registered.version}"
        detail = f"{promotion.reason}; {detail}"
        if not promotion.promoted:
            state = JobState.REJECTED
    return store.finish(
        job.id,
        worker,
        state,
        labels_used=result["labels_used"],
        metric=metric,
        model_version=version,
        detail=detail,
    )


def _register(
    registry: ModelRegistry,
    job: RetrainJob,
    job_dir: Path,
    result: dict[str, Any],
    metric: float | None,
    margin: float,
) -> tuple[RegisteredModel, Promotion]:
    """Register the run's model with its lineage, then promote it if it is good enough."""
    labels = (job_dir / "labels.jsonl").read_bytes()
    task_ids = sorted(json.loads(line)["task_id"] for line in labels.splitlines() if line)
    parent = registry.alias(job.kind, "production")
    lineage = {
        "retrain_job": str(job.id),
        "attempt": str(job.attempts),
        "trigger": job.trigger,
        "labels_digest": hashlib.sha256(labels).hexdigest(),
        "task_ids_digest": hashlib.sha256(json.dumps(task_ids).encode()).hexdigest(),
        "labels": str(len(task_ids)),
        "parent_version": "none" if parent is None else str(parent.version),
        "code_version": _code_version(),
        "trainer_model_version": str(result.get("model_version")),
    }
    params = {"labels_used": result["labels_used"], "kind": job.kind}
    registered = registry.register(
        job.kind, job_dir / str(result["model_path"]), metric=metric, params=params, lineage=lineage
    )
    return registered, registry.promote(job.kind, registered.version, margin=margin)


def _code_version() -> str:
    """The installed package version (and the git commit when run from a checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("fleet-active-learning")
    except PackageNotFoundError:
        pkg = "unknown"
    head = Path(__file__).resolve().parents[2] / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref[5:]).read_text().strip()
        return f"{pkg}+{ref[:12]}"
    except OSError:
        return pkg


def _with_log(why: str, log_path: Path) -> str:
    tail = _tail(log_path)
    return f"{why}; log {log_path}: ...{tail}" if tail else f"{why}; log {log_path} is empty"


def work_once(
    store: JobStore,
    queue: LabelQueue,
    kinds: Sequence[str],
    command: TrainerCommand,
    *,
    worker: str,
    stop: threading.Event | None = None,
    registry: ModelRegistry | None = None,
    margin: float = 0.0,
) -> list[RetrainJob]:
    """Start and run the queued job of each kind in turn (one at a time); the outcomes."""
    done = []
    for kind in kinds:
        if stop is not None and stop.is_set():
            break
        job = store.start(kind, worker)
        if job is None:
            continue
        log.info("retrain job %d (%s) attempt %d started", job.id, kind, job.attempts)
        outcome = run_job(
            store, queue, job, command, worker=worker, stop=stop, registry=registry, margin=margin
        )
        log.log(
            logging.WARNING
            if outcome.state in (JobState.FAILED, JobState.QUEUED)
            else logging.INFO,
            "retrain job %d (%s): %s %s",
            outcome.id,
            kind,
            outcome.state.value,
            outcome.detail,
        )
        done.append(outcome)
    return done
