"""Retrain jobs in the queue database: one job at a time per model kind, retried, timed out,
and never run twice at once, across restarts of the service.

States::

    queued --start--> running --finish--> succeeded | failed | rejected
      ^                  |
      +-- recover -------+   (deadline passed, or the service restarted: retried while
                              attempts < max_attempts, else failed)

* **One at a time per kind**: a partial unique index allows at most one ``queued`` or
  ``running`` row per kind, so :meth:`JobStore.enqueue` returns the active job instead of
  adding a second, in either backend and from any number of processes.
* **Never twice at once**: :meth:`JobStore.start` moves a job from ``queued`` to ``running``
  with a conditional update; of two workers racing, one gets it. :meth:`JobStore.finish`
  records the outcome only for the worker that holds the job and before its deadline has been
  recovered; a late or foreign finish raises :class:`JobLost` and changes nothing.
* **Timeout and restart**: :meth:`JobStore.recover` takes back running jobs whose deadline has
  passed (``timeout_s`` from their start) and, at start-up (``interrupted=True``), every running
  job, since no worker of the previous process is left to finish it.

``rejected`` is a training that completed but whose model is not promoted (worse than
production on the holdout); ``failed`` is a training that did not complete.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ingest_service.errors import DatabaseError, QueueError
from ingest_service.queue.db import Database
from ingest_service.queue.migrations import check_current

__all__ = ["JobLost", "JobState", "JobStore", "RetrainJob"]

Clock = Callable[[], int]

_COLUMNS = (
    "id, kind, state, trigger, labels_at, attempts, max_attempts, timeout_ns, worker,"
    " deadline_ns, created_ns, started_ns, finished_ns, labels_used, metric, model_version,"
    " detail"
)


# Back to the queue while attempts remain, else failed for good (the first ? is "now").
_RETRY_OR_FAIL = (
    "state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'failed' END,"
    " finished_ns = CASE WHEN attempts < max_attempts THEN NULL ELSE ? END,"
    " worker = NULL, deadline_ns = NULL"
)


class JobState(enum.StrEnum):
    """Where a retrain job is."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"


FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED)


class JobLost(QueueError):  # noqa: N818 - parallel to LeaseLost
    """The worker does not hold the running job (never did, finished, or it was recovered)."""

    def __init__(self, job_id: int, worker: str, detail: str) -> None:
        super().__init__(f"retrain job {job_id}: worker {worker!r} does not hold it: {detail}")


@dataclass(frozen=True, slots=True)
class RetrainJob:
    """One row of ``retrain_jobs``."""

    id: int
    kind: str
    state: JobState
    trigger: str
    labels_at: int
    attempts: int
    max_attempts: int
    timeout_ns: int
    worker: str | None
    deadline_ns: int | None
    created_ns: int
    started_ns: int | None
    finished_ns: int | None
    labels_used: int | None
    metric: float | None
    model_version: str | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The job as JSON-able data (the state as its name)."""
        return {**dataclasses.asdict(self), "state": self.state.value}

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> RetrainJob:
        return cls(
            id=int(row[0]),
            kind=str(row[1]),
            state=JobState(row[2]),
            trigger=str(row[3]),
            labels_at=int(row[4]),
            attempts=int(row[5]),
            max_attempts=int(row[6]),
            timeout_ns=int(row[7]),
            worker=None if row[8] is None else str(row[8]),
            deadline_ns=None if row[9] is None else int(row[9]),
            created_ns=int(row[10]),
            started_ns=None if row[11] is None else int(row[11]),
            finished_ns=None if row[12] is None else int(row[12]),
            labels_used=None if row[13] is None else int(row[13]),
            metric=None if row[14] is None else float(row[14]),
            model_version=None if row[15] is None else str(row[15]),
            detail=str(row[16]),
        )


def _check_kind(kind: str) -> None:
    if not kind or not kind.isidentifier():
        raise QueueError(f"model kind must be a non-empty identifier, got {kind!r}")


class JobStore:
    """Retrain jobs over one :class:`Database` connection (not thread-safe: one per thread).

    The schema must be current (the label queue's migrations create ``retrain_jobs``).
    """

    def __init__(self, db: Database, *, clock: Clock = time.time_ns) -> None:
        check_current(db)
        self.db = db
        self.clock = clock

    def _now(self, now_ns: int | None) -> int:
        return self.clock() if now_ns is None else now_ns

    # --- writing ------------------------------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        trigger: str,
        labels_at: int,
        *,
        max_attempts: int = 3,
        timeout_s: float = 3600.0,
        now_ns: int | None = None,
    ) -> tuple[RetrainJob, bool]:
        """Queue a job for ``kind`` unless one is queued or running; ``(job, created)``."""
        _check_kind(kind)
        if max_attempts < 1 or not timeout_s > 0:
            raise QueueError("max_attempts must be >= 1 and timeout_s > 0")
        now = self._now(now_ns)
        try:
            with self.db.transaction():
                active = self._active(kind)
                if active is not None:
                    return active, False
                self.db.execute(
                    "INSERT INTO retrain_jobs (kind, trigger, labels_at, max_attempts,"
                    " timeout_ns, created_ns) VALUES (?, ?, ?, ?, ?, ?)",
                    (kind, trigger, labels_at, max_attempts, round(timeout_s * 1e9), now),
                )
        except DatabaseError:
            # Another process queued one between our read and our insert (PostgreSQL; the
            # unique index refused ours): theirs is the job.
            active = self._active(kind)
            if active is None:
                raise
            return active, False
        job = self._active(kind)
        if job is None:  # pragma: no cover - just inserted
            raise QueueError(f"retrain job for {kind!r} vanished after insert")
        return job, True

    def start(self, kind: str, worker: str, *, now_ns: int | None = None) -> RetrainJob | None:
        """Move ``kind``'s queued job to running for ``worker``; ``None`` if there is none
        (or another worker took it first)."""
        now = self._now(now_ns)
        res = self.db.execute_atomic(
            "UPDATE retrain_jobs SET state = 'running', worker = ?, attempts = attempts + 1,"
            " started_ns = ?, deadline_ns = ? + timeout_ns"
            " WHERE kind = ? AND state = 'queued'",
            (worker, now, now, kind),
        )
        if res.rowcount != 1:
            return None
        job = self._active(kind)
        if job is None or job.worker != worker or job.state is not JobState.RUNNING:
            return None  # pragma: no cover - recovered in between by a racing process
        return job

    def finish(
        self,
        job_id: int,
        worker: str,
        state: JobState,
        *,
        labels_used: int | None = None,
        metric: float | None = None,
        model_version: str | None = None,
        detail: str = "",
        now_ns: int | None = None,
    ) -> RetrainJob:
        """Record the outcome of a running job held by ``worker``; :class:`JobLost` if it does
        not hold it (the outcome is then not recorded)."""
        if state not in FINAL_STATES:
            raise QueueError(f"finish needs a final state {[s.value for s in FINAL_STATES]}")
        now = self._now(now_ns)
        res = self.db.execute_atomic(
            "UPDATE retrain_jobs SET state = ?, finished_ns = ?, labels_used = ?, metric = ?,"
            " model_version = ?, detail = ?, deadline_ns = NULL"
            " WHERE id = ? AND state = 'running' AND worker = ? AND deadline_ns >= ?",
            (state.value, now, labels_used, metric, model_version, detail, job_id, worker, now),
        )
        if res.rowcount != 1:
            current = self.get(job_id)
            raise JobLost(
                job_id, worker, f"it is {current.state.value} (worker {current.worker!r})"
            )
        return self.get(job_id)

    def fail_attempt(
        self, job_id: int, worker: str, detail: str, *, now_ns: int | None = None
    ) -> RetrainJob:
        """The running attempt of ``worker`` failed: queued again while attempts remain, else
        failed for good; :class:`JobLost` if ``worker`` does not hold the job."""
        now = self._now(now_ns)
        res = self.db.execute_atomic(
            f"UPDATE retrain_jobs SET {_RETRY_OR_FAIL}, detail = ?"
            " WHERE id = ? AND state = 'running' AND worker = ?",
            (now, detail, job_id, worker),
        )
        if res.rowcount != 1:
            current = self.get(job_id)
            raise JobLost(
                job_id, worker, f"it is {current.state.value} (worker {current.worker!r})"
            )
        return self.get(job_id)

    def recover(self, *, interrupted: bool = False, now_ns: int | None = None) -> list[RetrainJob]:
        """Take back running jobs past their deadline (all running jobs if ``interrupted``, at
        start-up): queued again while attempts remain, else failed. Returns the jobs as they
        are now."""
        now = self._now(now_ns)
        cond = "state = 'running'" if interrupted else "state = 'running' AND deadline_ns < ?"
        params: tuple[int, ...] = () if interrupted else (now,)
        why = "interrupted by a restart of the service" if interrupted else "timed out"
        with self.db.transaction():
            rows = self.db.execute(f"SELECT id FROM retrain_jobs WHERE {cond}", params).rows
            ids = [int(r[0]) for r in rows]
            for job_id in ids:
                self.db.execute(
                    f"UPDATE retrain_jobs SET {_RETRY_OR_FAIL},"
                    " detail = 'attempt ' || CAST(attempts AS TEXT) || ' ' || ? WHERE id = ?",
                    (now, why, job_id),
                )
        return [self.get(i) for i in ids]

    # --- reading ------------------------------------------------------------------------------

    def get(self, job_id: int) -> RetrainJob:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM retrain_jobs WHERE id = ?", (job_id,)).one()
        if row is None:
            raise QueueError(f"retrain job {job_id} does not exist")
        return RetrainJob.from_row(row)

    def jobs(self, kind: str | None = None, *, limit: int = 50) -> list[RetrainJob]:
        """The latest jobs (newest first), of one kind or all."""
        where, params = ("WHERE kind = ?", (kind, limit)) if kind else ("", (limit,))
        sql = f"SELECT {_COLUMNS} FROM retrain_jobs {where} ORDER BY id DESC LIMIT ?"
        return [RetrainJob.from_row(r) for r in self.db.execute(sql, params).rows]

    def last_finished(
        self, kind: str, states: Sequence[JobState] = FINAL_STATES
    ) -> RetrainJob | None:
        """The most recent job of ``kind`` in one of ``states`` (default: any final state)."""
        values = [s.value for s in states]
        marks = ", ".join("?" for _ in values)
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM retrain_jobs WHERE kind = ? AND state IN ({marks})"
            " ORDER BY id DESC LIMIT 1",
            (kind, *values),
        ).one()
        return None if row is None else RetrainJob.from_row(row)

    def counts(self) -> dict[tuple[str, JobState], int]:
        """Jobs per (kind, state), every state of every kind seen present (zero included)."""
        rows = self.db.execute(
            "SELECT kind, state, COUNT(*) FROM retrain_jobs GROUP BY kind, state"
        ).rows
        kinds = {str(r[0]) for r in rows}
        out = {(k, st): 0 for k in kinds for st in JobState}
        for kind, state, n in rows:
            out[(str(kind), JobState(state))] = int(n)
        return out

    def failures_in_a_row(self, kind: str) -> int:
        """Failed runs of ``kind`` since its last run that trained (succeeded or rejected)."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM retrain_jobs WHERE kind = ? AND state = 'failed' AND id >"
            " COALESCE((SELECT MAX(id) FROM retrain_jobs WHERE kind = ?"
            " AND state IN ('succeeded', 'rejected')), 0)",
            (kind, kind),
        ).one()
        return 0 if row is None else int(row[0])

    def active(self, kind: str) -> RetrainJob | None:
        """``kind``'s queued or running job, if any."""
        return self._active(kind)

    def _active(self, kind: str) -> RetrainJob | None:
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM retrain_jobs WHERE kind = ? AND state IN"
            " ('queued', 'running')",
            (kind,),
        ).one()
        return None if row is None else RetrainJob.from_row(row)
