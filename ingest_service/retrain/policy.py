"""When to retrain a model kind: every N new labels since the last run, at most every T hours,
or on demand; and the scheduler that queues those jobs in the :class:`JobStore`.

A run's ``labels_at`` is the number of labeled tasks in the queue when it was queued; "new
labels" are counted against the last job of the kind that did not fail (a failed run trained
nothing, so its labels still count as new). The interval is measured from that job's creation.

>>> p = RetrainPolicy("camera", every_labels=100, min_interval_s=3600.0)
>>> p.due(labels_now=99, last=None, now_ns=0)
>>> p.due(labels_now=100, last=None, now_ns=0)
'100 new labels'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ingest_service.errors import QueueError
from ingest_service.queue.db import Database
from ingest_service.retrain.jobs import JobState, JobStore, RetrainJob

__all__ = ["RetrainPolicy", "RetrainScheduler", "labeled_count"]


@dataclass(frozen=True, slots=True)
class RetrainPolicy:
    """The retrain policy of one model kind; validated on construction."""

    kind: str
    every_labels: int = 500
    min_interval_s: float = 6 * 3600.0
    max_attempts: int = 3
    timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if not self.kind.isidentifier():
            raise QueueError(f"retrain policy kind must be an identifier, got {self.kind!r}")
        if not (isinstance(self.every_labels, int) and self.every_labels >= 1):
            raise QueueError(f"every_labels must be an int >= 1, got {self.every_labels!r}")
        if not self.min_interval_s >= 0:
            raise QueueError(f"min_interval_s must be >= 0, got {self.min_interval_s!r}")
        if not (isinstance(self.max_attempts, int) and self.max_attempts >= 1):
            raise QueueError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        if not self.timeout_s > 0:
            raise QueueError(f"timeout_s must be > 0, got {self.timeout_s!r}")

    def due(self, *, labels_now: int, last: RetrainJob | None, now_ns: int) -> str | None:
        """Why a run is due now (the job's trigger), or ``None``."""
        since = labels_now - (0 if last is None else last.labels_at)
        if since < self.every_labels:
            return None
        if last is not None and now_ns - last.created_ns < self.min_interval_s * 1e9:
            return None
        return f"{since} new labels"


def labeled_count(db: Database) -> int:
    """Labeled tasks in the queue (what a retrain would train on)."""
    row = db.execute("SELECT COUNT(*) FROM tasks WHERE state = 'labeled'").one()
    return 0 if row is None else int(row[0])


class RetrainScheduler:
    """Queues retrain jobs by policy (:meth:`tick`) or on demand (:meth:`request`)."""

    def __init__(
        self,
        store: JobStore,
        policies: Sequence[RetrainPolicy],
        *,
        labels: Callable[[], int] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        kinds = [p.kind for p in policies]
        if len(set(kinds)) != len(kinds):
            raise QueueError(f"one retrain policy per model kind, got {kinds}")
        self.store = store
        self.policies = {p.kind: p for p in policies}
        self._labels = labels if labels is not None else (lambda: labeled_count(store.db))
        self.clock = clock

    def _last_run(self, kind: str) -> RetrainJob | None:
        """The last job of ``kind`` that trained (succeeded or rejected), or is training."""
        active = self.store.active(kind)
        if active is not None:
            return active
        return self.store.last_finished(kind, (JobState.SUCCEEDED, JobState.REJECTED))

    def tick(self, *, now_ns: int | None = None) -> list[RetrainJob]:
        """Queue every job that is due; return the jobs queued by this call."""
        now = self.clock() if now_ns is None else now_ns
        labels = self._labels()
        queued = []
        for kind, policy in self.policies.items():
            if self.store.active(kind) is not None:
                continue
            trigger = policy.due(labels_now=labels, last=self._last_run(kind), now_ns=now)
            if trigger is None:
                continue
            job, created = self.store.enqueue(
                kind,
                trigger,
                labels,
                max_attempts=policy.max_attempts,
                timeout_s=policy.timeout_s,
                now_ns=now,
            )
            if created:
                queued.append(job)
        return queued

    def request(
        self, kind: str, *, reason: str = "on demand", now_ns: int | None = None
    ) -> tuple[RetrainJob, bool]:
        """Queue a run of ``kind`` now, whatever the policy says; ``(job, created)`` (an active
        job of the kind is returned instead of a second one)."""
        policy = self.policies.get(kind)
        if policy is None:
            raise QueueError(f"no retrain policy for model kind {kind!r}: {sorted(self.policies)}")
        now = self.clock() if now_ns is None else now_ns
        return self.store.enqueue(
            kind,
            reason,
            self._labels(),
            max_attempts=policy.max_attempts,
            timeout_s=policy.timeout_s,
            now_ns=now,
        )
