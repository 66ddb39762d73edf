"""The label queue: one task per selected frame, claimed by annotators under a lease.

States and transitions (``docs/label-queue.md`` draws them)::

    new --claim--> leased --submit_label--> labeled
                     |  \\--skip-----------> skipped
                     |
                     +--lease runs out--> new (expire_leases, or a later claim takes it over)
                     +--lease runs out, max_attempts leases used--> expired --requeue_expired--> new

Priority is the frame's selection score plus ageing: ``score + ageing_per_hour * age_hours``,
age counted from when the task was enqueued, so a low-score task is eventually claimed whatever
keeps arriving above it. A claim takes the task of highest priority at its ``now`` through an
index on ``rank`` (computed in SQL), which orders tasks exactly as that priority does at every
``now`` (see ``_rank_sql``). ``attempts`` counts the leases granted.

Idempotency: a frame is keyed by ``vehicle/drive/seq``; :meth:`LabelQueue.ingest_frame`
inserts the frame and its task with ``INSERT ... ON CONFLICT DO NOTHING`` against primary-key
and UNIQUE constraints, so however often (and from however many consumers) the same frame is
ingested, there is exactly one task.

Every method taking ``now_ns`` uses the injected clock when it is None.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from ingest_service.blobstore import BlobRef
from ingest_service.errors import LeaseLost, QueueError, TaskNotFound
from ingest_service.queue.db import DEFAULT_BUSY_TIMEOUT_S, Database, Dialect, connect
from ingest_service.queue.migrations import check_current, migrate
from schemas.messages import FrameEnvelope, frame_key

__all__ = [
    "Clock",
    "FrameRecord",
    "LabelQueue",
    "LabeledItem",
    "QueueConfig",
    "QueueTransaction",
    "StoredFrame",
    "Task",
    "TaskState",
]

log = logging.getLogger(__name__)

Clock = Callable[[], int]
"""Nanoseconds since the Unix epoch (``time.time_ns``): leases are compared across processes."""

NS_PER_HOUR = 3_600_000_000_000
NS_PER_S = 1_000_000_000


class TaskState(enum.StrEnum):
    """Where a label task is in its life (see the module docstring)."""

    NEW = "new"
    LEASED = "leased"
    LABELED = "labeled"
    SKIPPED = "skipped"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """How the queue orders and retries tasks.

    ``ageing_per_hour``: score units a task gains per hour of waiting. Selection scores are
    normalised to [0, 1], so the default 0.05 lets a task of score 0 overtake a fresh task of
    score 1 after 20 hours. 0 disables ageing (pure score order, oldest first among ties).
    ``max_attempts``: leases a task may be granted; once that many have run out, the task goes
    to ``expired`` instead of back to ``new`` (a frame that crashes the labeling tool must not
    circulate forever).
    """

    ageing_per_hour: float = 0.05
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ageing_per_hour) and self.ageing_per_hour >= 0):
            raise ValueError(
                f"QueueConfig.ageing_per_hour must be finite and >= 0, got {self.ageing_per_hour}"
            )
        if self.max_attempts < 1:
            raise ValueError(f"QueueConfig.max_attempts must be >= 1, got {self.max_attempts}")


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """What the queue keeps about a selected frame (the sensor bytes are in the blob store)."""

    vehicle_id: str
    drive_id: str
    frame_seq: int
    timestamp_ns: int
    score: float
    reason: str
    model_versions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.score):
            raise ValueError(f"FrameRecord.score must be finite, got {self.score}")

    @property
    def key(self) -> str:
        """``vehicle/drive/seq`` (:func:`schemas.messages.frame_key`); validates the ids."""
        return frame_key(self.vehicle_id, self.drive_id, self.frame_seq)

    @classmethod
    def from_envelope(cls, env: FrameEnvelope) -> FrameRecord:
        """The record of a decoded wire envelope."""
        return cls(
            vehicle_id=env.vehicle_id,
            drive_id=env.drive_id,
            frame_seq=env.frame_seq,
            timestamp_ns=env.timestamp_ns,
            score=env.selection.score,
            reason=env.selection.reason,
            model_versions={m.name: m.version for m in env.models},
        )


@dataclass(frozen=True, slots=True)
class StoredFrame:
    """A frame as stored: its record and the references of its sensor blobs."""

    key: str
    record: FrameRecord
    blob_refs: Mapping[str, BlobRef]
    created_ns: int


@dataclass(frozen=True, slots=True)
class Task:
    """A label task. ``priority`` is the effective priority when it was read (score + ageing)."""

    id: int
    frame_key: str
    state: TaskState
    score: float
    priority: float
    enqueued_ns: int
    lease_owner: str | None
    lease_expires_ns: int | None
    attempts: int
    labeled_ns: int | None
    skip_reason: str | None


@dataclass(frozen=True, slots=True)
class LabeledItem:
    """One labeled frame, as :meth:`LabelQueue.export_labeled` yields it."""

    task_id: int
    frame: StoredFrame
    labeler: str
    payload: Any
    labeled_ns: int


_TASK_COLUMNS = (
    "id, frame_key, state, score, enqueued_ns, lease_owner, lease_expires_ns, attempts,"
    " labeled_ns, skip_reason"
)
_FRAME_COLUMNS = (
    "f.frame_key, f.vehicle_id, f.drive_id, f.frame_seq, f.timestamp_ns, f.score, f.reason,"
    " f.model_versions, f.blob_refs, f.created_ns"
)


# The claim order. Effective priority at time `now` is
#     score + ageing_per_hour * (now - enqueued_ns) / NS_PER_HOUR
#   = [score - ageing_per_hour * enqueued_ns / NS_PER_HOUR] + ageing_per_hour * now / NS_PER_HOUR
# and the second term is the same for every task at a given `now`: ordering by the bracket,
# `rank`, is ordering by effective priority at any claim time. `rank` is computed in SQL when a
# task is enqueued (and for every task again when the ageing rate changes) and indexed with the
# state, so a claim reads one index entry instead of sorting the whole backlog.
def _rank_sql(score: str, enqueued_ns: str) -> str:
    """SQL for a task's rank from two SQL operands; its one parameter is ageing_per_hour."""
    return (
        f"{score} - CAST(? AS DOUBLE PRECISION)"
        f" * (CAST({enqueued_ns} AS DOUBLE PRECISION) / {NS_PER_HOUR}.0)"
    )


_AGEING_SETTING = "ageing_per_hour"


class LabelQueue:
    """The label queue over one :class:`~ingest_service.queue.db.Database` connection.

    Not thread-safe (one connection): give each thread or process its own queue. The schema
    must be current (:func:`~ingest_service.queue.migrations.migrate`); :meth:`open` migrates.
    """

    def __init__(
        self,
        db: Database,
        *,
        config: QueueConfig | None = None,
        clock: Clock = time.time_ns,
    ) -> None:
        check_current(db)
        self.db = db
        self.config = config or QueueConfig()
        self.clock = clock
        self._owns_db = False
        self._sync_ageing_rate()

    @classmethod
    def open(
        cls,
        target: str | Path,
        *,
        config: QueueConfig | None = None,
        clock: Clock = time.time_ns,
        run_migrations: bool = True,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> LabelQueue:
        """Connect to ``target`` (SQLite path or PostgreSQL DSN), migrate, own the connection."""
        db = connect(target, busy_timeout_s=busy_timeout_s)
        try:
            if run_migrations:
                applied = migrate(db)
                if applied:
                    log.info("%s: applied schema migrations %s", db.where, applied)
            queue = cls(db, config=config, clock=clock)
        except BaseException:
            db.close()
            raise
        queue._owns_db = True
        return queue

    def close(self) -> None:
        """Close the connection if :meth:`open` made it."""
        if self._owns_db:
            self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LabelQueue({self.db.where!r})"

    # --- ingest -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[QueueTransaction]:
        """A transaction for the Kafka consumer: ingest a batch, then commit the offsets.

        ::

            refs = {name: blobs.put(data) for name, data in sensors}   # idempotent, outside
            with queue.transaction() as tx:
                for record, refs in batch:
                    tx.ingest_frame(record, refs)
            consumer.commit()           # only after the block committed

        An exception in the block rolls everything in it back. Blobs are put before the block
        (they are content-addressed: a rolled-back or redelivered frame just puts them again);
        putting them inside works too but holds the SQLite write lock during file I/O.
        """
        with self.db.transaction():
            tx = QueueTransaction(self)
            try:
                yield tx
            finally:
                tx._open = False

    def ingest_frame(
        self, record: FrameRecord, blob_refs: Mapping[str, BlobRef], *, now_ns: int | None = None
    ) -> bool:
        """Store the frame and queue its task in one transaction; False for a duplicate."""
        with self.transaction() as tx:
            return tx.ingest_frame(record, blob_refs, now_ns=now_ns)

    # --- annotators ---------------------------------------------------------------------------

    def claim(self, labeler: str, lease_s: float, *, now_ns: int | None = None) -> Task | None:
        """Lease the highest effective-priority claimable task to ``labeler``; None if none.

        Claimable: ``new``, or ``leased`` with its lease run out and fewer than ``max_attempts``
        leases granted. Atomic under concurrency: PostgreSQL locks the chosen row with
        ``FOR UPDATE SKIP LOCKED`` (concurrent claimers take the next one); SQLite serialises
        claimers with ``BEGIN IMMEDIATE``.
        """
        _check_labeler(labeler)
        if not (math.isfinite(lease_s) and lease_s > 0):
            raise ValueError(f"lease_s must be finite and > 0, got {lease_s}")
        now = self._now(now_ns)
        expires = now + int(lease_s * NS_PER_S)
        lock = " FOR UPDATE SKIP LOCKED" if self.db.dialect is Dialect.POSTGRES else ""
        # The best new task and the best task with a lapsed lease, each read off the
        # (state, rank, id) index, then the better of the two. An OR of both conditions would
        # make both databases sort every candidate. PostgreSQL locks (at most) both rows for
        # the statement and skips rows other claimers hold.
        sql = (
            "UPDATE tasks SET state = 'leased', lease_owner = ?, lease_expires_ns = ?,"
            " attempts = attempts + 1"
            " WHERE id = (SELECT id FROM ("
            "  SELECT id, rank FROM (SELECT id, rank FROM tasks WHERE state = 'new'"
            f"   ORDER BY rank DESC, id LIMIT 1{lock}) AS fresh"
            "  UNION ALL"
            "  SELECT id, rank FROM (SELECT id, rank FROM tasks WHERE state = 'leased'"
            "   AND lease_expires_ns <= ? AND attempts < ?"
            f"   ORDER BY rank DESC, id LIMIT 1{lock}) AS lapsed"
            " ) AS candidates ORDER BY rank DESC, id LIMIT 1)"
            f" RETURNING {_TASK_COLUMNS}"
        )
        params = (labeler, expires, now, self.config.max_attempts)
        row = self.db.execute_atomic(sql, params).one()
        return None if row is None else self._task(row, now)

    def submit_label(
        self, task_id: int, labeler: str, payload: Any, *, now_ns: int | None = None
    ) -> None:
        """Store ``payload`` (JSON-serialisable) as the label; the task becomes ``labeled``.

        Only the lease owner with a live lease may submit: :class:`LeaseLost` otherwise,
        :class:`TaskNotFound` for an unknown id.
        """
        _check_labeler(labeler)
        try:
            text = json.dumps(payload, sort_keys=True, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"label payload for task {task_id} is not JSON: {exc}") from exc
        now = self._now(now_ns)
        with self.db.transaction():
            self._finish(
                task_id,
                labeler,
                now,
                "state = 'labeled', labeled_ns = ?, lease_expires_ns = NULL",
                (now,),
            )
            self.db.execute(
                "INSERT INTO labels (task_id, labeler, payload, created_ns) VALUES (?, ?, ?, ?)",
                (task_id, labeler, text, now),
            )

    def skip(self, task_id: int, labeler: str, reason: str, *, now_ns: int | None = None) -> None:
        """The lease owner gives up on the task for good (unlabelable frame); -> ``skipped``."""
        _check_labeler(labeler)
        if not reason.strip():
            raise ValueError(f"skip of task {task_id} needs a reason")
        now = self._now(now_ns)
        with self.db.transaction():
            self._finish(
                task_id,
                labeler,
                now,
                "state = 'skipped', skip_reason = ?, skipped_ns = ?, lease_expires_ns = NULL",
                (reason, now),
            )

    # --- maintenance --------------------------------------------------------------------------

    def expire_leases(self, *, now_ns: int | None = None) -> int:
        """Take back every lease that has run out; return how many.

        A task goes back to ``new`` (keeping its age, so it comes back near the top), or to
        ``expired`` once ``max_attempts`` leases have been granted. Run it periodically: a task
        whose annotator crashed is also taken over by the next :meth:`claim` without it.
        """
        now = self._now(now_ns)
        res = self.db.execute_atomic(
            "UPDATE tasks SET"
            " state = CASE WHEN attempts >= ? THEN 'expired' ELSE 'new' END,"
            " lease_owner = NULL, lease_expires_ns = NULL"
            " WHERE state = 'leased' AND lease_expires_ns <= ?"
            " RETURNING state",
            (self.config.max_attempts, now),
        )
        expired = sum(1 for (state,) in res.rows if state == TaskState.EXPIRED)
        if expired:
            log.warning(
                "%s: %d task(s) used %d leases without a label and are now expired",
                self.db.where,
                expired,
                self.config.max_attempts,
            )
        return len(res.rows)

    def requeue_expired(self) -> int:
        """Put every ``expired`` task back to ``new`` with its attempts reset; return how many."""
        res = self.db.execute_atomic(
            "UPDATE tasks SET state = 'new', attempts = 0 WHERE state = 'expired'"
        )
        return res.rowcount

    # --- reading ------------------------------------------------------------------------------

    def stats(self) -> dict[TaskState, int]:
        """Queue depth per state (every state present, zero included)."""
        counts = dict.fromkeys(TaskState, 0)
        for state, n in self.db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").rows:
            counts[TaskState(state)] = int(n)
        return counts

    def get_task(self, task_id: int, *, now_ns: int | None = None) -> Task:
        """The task with this id (:class:`TaskNotFound`); ``priority`` as of ``now_ns``."""
        row = self.db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).one()
        if row is None:
            raise TaskNotFound(task_id)
        return self._task(row, self._now(now_ns))

    def get_frame(self, key: str) -> StoredFrame:
        """The stored frame ``vehicle/drive/seq`` (what an annotator loads after a claim)."""
        row = self.db.execute(
            f"SELECT {_FRAME_COLUMNS} FROM frames f WHERE f.frame_key = ?", (key,)
        ).one()
        if row is None:
            raise QueueError(f"{self.db.where}: no frame {key!r}")
        return _stored_frame(row)

    def export_labeled(self, *, after_task_id: int = 0, batch: int = 500) -> Iterator[LabeledItem]:
        """Every labeled task with its frame and label, by task id, from ``after_task_id`` on.

        Reads in pages of ``batch`` (keyset pagination), so no read transaction stays open
        while the caller consumes; remember the last ``task_id`` for an incremental export.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        last = after_task_id
        while True:
            rows = self.db.execute(
                f"SELECT t.id, l.labeler, l.payload, l.created_ns, {_FRAME_COLUMNS}"
                " FROM tasks t"
                " JOIN labels l ON l.task_id = t.id"
                " JOIN frames f ON f.frame_key = t.frame_key"
                " WHERE t.state = 'labeled' AND t.id > ?"
                " ORDER BY t.id LIMIT ?",
                (last, batch),
            ).rows
            for row in rows:
                task_id, labeler, payload, created_ns = row[:4]
                yield LabeledItem(
                    task_id=int(task_id),
                    frame=_stored_frame(row[4:]),
                    labeler=str(labeler),
                    payload=json.loads(payload),
                    labeled_ns=int(created_ns),
                )
                last = int(task_id)
            if len(rows) < batch:
                return

    # --- internals ----------------------------------------------------------------------------

    def _sync_ageing_rate(self) -> None:
        """Recompute every task's rank when the configured ageing rate is not the stored one."""
        rate = self.config.ageing_per_hour
        stored = self.db.execute(
            "SELECT value FROM queue_settings WHERE name = ?", (_AGEING_SETTING,)
        ).one()
        if stored is not None and float(stored[0]) == rate:
            return
        with self.db.transaction():
            res = self.db.execute(
                f"UPDATE tasks SET rank = {_rank_sql('score', 'enqueued_ns')}", (rate,)
            )
            self.db.execute(
                "INSERT INTO queue_settings (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (_AGEING_SETTING, repr(rate)),
            )
        if stored is not None:
            log.warning(
                "%s: ageing rate changed from %s to %s per hour; re-ranked %d tasks",
                self.db.where,
                stored[0],
                rate,
                res.rowcount,
            )

    def _now(self, now_ns: int | None) -> int:
        return self.clock() if now_ns is None else now_ns

    def _task(self, row: tuple[Any, ...], now: int) -> Task:
        (task_id, key, state, score, enqueued, owner, expires, attempts, labeled, skip) = row
        age_h = (now - int(enqueued)) / NS_PER_HOUR
        return Task(
            id=int(task_id),
            frame_key=str(key),
            state=TaskState(state),
            score=float(score),
            priority=float(score) + self.config.ageing_per_hour * age_h,
            enqueued_ns=int(enqueued),
            lease_owner=owner,
            lease_expires_ns=None if expires is None else int(expires),
            attempts=int(attempts),
            labeled_ns=None if labeled is None else int(labeled),
            skip_reason=skip,
        )

    def _finish(
        self, task_id: int, labeler: str, now: int, assignments: str, params: tuple[object, ...]
    ) -> None:
        """Inside a transaction: apply ``assignments`` if ``labeler`` holds a live lease."""
        res = self.db.execute(
            f"UPDATE tasks SET {assignments}"
            " WHERE id = ? AND state = 'leased' AND lease_owner = ? AND lease_expires_ns > ?",
            (*params, task_id, labeler, now),
        )
        if res.rowcount == 1:
            return
        row = self.db.execute(
            "SELECT state, lease_owner, lease_expires_ns, attempts FROM tasks WHERE id = ?",
            (task_id,),
        ).one()
        if row is None:
            raise TaskNotFound(task_id)
        state, owner, expires, attempts = row
        if state == TaskState.NEW and int(attempts) == 0:
            # never claimed (or requeued by an admin since): not "the lease expired"
            detail = "the task is not leased (new, no lease granted since it was queued)"
        elif state != TaskState.LEASED:
            detail = f"the task is {state}"
        elif owner != labeler:
            detail = f"it is leased to {owner!r}"
        else:
            detail = f"the lease ran out {(now - int(expires)) / NS_PER_S:.1f} s ago"
        raise LeaseLost(task_id, labeler, detail)


class QueueTransaction:
    """The queue's operations inside one open transaction (:meth:`LabelQueue.transaction`)."""

    def __init__(self, queue: LabelQueue) -> None:
        self._queue = queue
        self._open = True

    def ingest_frame(
        self, record: FrameRecord, blob_refs: Mapping[str, BlobRef], *, now_ns: int | None = None
    ) -> bool:
        """Insert the frame and its ``new`` task; False (and no change) for a duplicate key."""
        if not self._open:
            raise QueueError("this queue transaction has ended; open a new one")
        key = record.key
        refs_json = _refs_to_json(key, blob_refs)
        models_json = json.dumps(dict(record.model_versions), sort_keys=True)
        q = self._queue
        now = q._now(now_ns)
        inserted = q.db.execute(
            "INSERT INTO frames (frame_key, vehicle_id, drive_id, frame_seq, timestamp_ns, score,"
            " reason, model_versions, blob_refs, created_ns)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (frame_key) DO NOTHING RETURNING frame_key",
            (
                key,
                record.vehicle_id,
                record.drive_id,
                record.frame_seq,
                record.timestamp_ns,
                record.score,
                record.reason,
                models_json,
                refs_json,
                now,
            ),
        ).one()
        if inserted is None:
            log.debug("%s: frame %s already ingested", q.db.where, key)
            return False
        q.db.execute(
            "INSERT INTO tasks (frame_key, state, score, enqueued_ns, rank)"
            f" VALUES (?, 'new', ?, ?, {_rank_sql('?', '?')})"
            " ON CONFLICT (frame_key) DO NOTHING",
            # rank's operands in order: score, ageing_per_hour, enqueued_ns
            (key, record.score, now, record.score, q.config.ageing_per_hour, now),
        )
        return True


def _check_labeler(labeler: str) -> None:
    if not labeler or not labeler.strip():
        raise ValueError("labeler must be a non-empty name")


def _refs_to_json(key: str, blob_refs: Mapping[str, BlobRef]) -> str:
    for name, ref in blob_refs.items():
        if not name or not isinstance(ref, BlobRef):
            raise ValueError(f"frame {key}: blob_refs must map sensor names to BlobRef")
    return json.dumps({n: r.to_json() for n, r in blob_refs.items()}, sort_keys=True)


def _stored_frame(row: tuple[Any, ...]) -> StoredFrame:
    (key, vehicle, drive, seq, ts, score, reason, models, refs, created) = row
    refs_obj = json.loads(refs)
    return StoredFrame(
        key=str(key),
        record=FrameRecord(
            vehicle_id=str(vehicle),
            drive_id=str(drive),
            frame_seq=int(seq),
            timestamp_ns=int(ts),
            score=float(score),
            reason=str(reason),
            model_versions=json.loads(models),
        ),
        blob_refs={name: BlobRef.from_json(obj) for name, obj in refs_obj.items()},
        created_ns=int(created),
    )
