"""The label queue against both backends: a SQLite file and a real PostgreSQL server.

Every test gets its own database: a fresh SQLite file in ``tmp_path``, or a fresh schema on
the session's PostgreSQL server (``search_path`` set in the DSN), dropped afterwards.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from ingest_service.blobstore import BlobRef
from ingest_service.errors import DatabaseError, LeaseLost, MigrationError, QueueError, TaskNotFound
from ingest_service.queue import (
    FrameRecord,
    LabelQueue,
    QueueConfig,
    QueueTransaction,
    TaskState,
    connect,
    current_version,
    migrate,
)
from ingest_service.queue.migrations import latest_version

pytestmark = pytest.mark.integration

T0 = 1_800_000_000 * 10**9  # a fixed "now": every test passes explicit clocks
HOUR = 3600 * 10**9
SEC = 10**9


@pytest.fixture
def target(queue_db: str) -> str:
    """A fresh label-queue database of each backend (``queue_db`` in conftest.py)."""
    return queue_db


@pytest.fixture
def queue(target: str) -> Iterator[LabelQueue]:
    with LabelQueue.open(target, clock=lambda: T0) as q:
        yield q


def record(
    seq: int, score: float = 0.5, *, vehicle: str = "veh-1", drive: str = "d1"
) -> FrameRecord:
    return FrameRecord(
        vehicle_id=vehicle,
        drive_id=drive,
        frame_seq=seq,
        timestamp_ns=T0 + seq,
        score=score,
        reason="entropy",
        model_versions={"detector": "1.4.0"},
    )


REFS = {"cam_front": BlobRef.of(b"jpeg bytes"), "lidar": BlobRef.of(b"sweep bytes")}


def count(q: LabelQueue, table: str) -> int:
    row = q.db.execute(f"SELECT COUNT(*) FROM {table}").one()
    assert row is not None
    return int(row[0])


# --- migrations --------------------------------------------------------------------------------


def test_migrations_apply_once_and_rerun_is_noop(target: str) -> None:
    with connect(target) as db:
        assert current_version(db) == 0
        assert migrate(db) == list(range(1, latest_version() + 1))
        assert migrate(db) == []
        assert current_version(db) == latest_version()
    with connect(target) as db:  # another connection: still a no-op
        assert migrate(db) == []
        rows = db.execute("SELECT version FROM schema_migrations").rows
        assert [r[0] for r in rows] == list(range(1, latest_version() + 1))


def test_database_newer_than_code_is_a_clear_error(target: str) -> None:
    with connect(target) as db:
        migrate(db)
        db.execute(
            "INSERT INTO schema_migrations (version, description, checksum, applied_ns)"
            " VALUES (?, ?, ?, ?)",
            (99, "from the future", "x", T0),
        )
        with pytest.raises(MigrationError, match=r"schema version 99, newer than this code"):
            LabelQueue(db)
        with pytest.raises(MigrationError, match="upgrade ingest_service"):
            migrate(db)


def test_unmigrated_database_is_refused_and_edited_migration_detected(target: str) -> None:
    with connect(target) as db:
        with pytest.raises(MigrationError, match="run the migrations first"):
            LabelQueue(db)
        migrate(db)
        db.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="append-only"):
            LabelQueue(db)


# --- ingest --------------------------------------------------------------------------------------


def test_ingest_is_idempotent_across_connections(target: str) -> None:
    with LabelQueue.open(target) as q1, LabelQueue.open(target) as q2:
        results = [
            q1.ingest_frame(record(7), REFS, now_ns=T0),
            q2.ingest_frame(record(7), REFS, now_ns=T0 + 1),
            q1.ingest_frame(record(7, score=0.9), REFS, now_ns=T0 + 2),
        ]
        assert results == [True, False, False]
        assert count(q1, "tasks") == 1
        assert count(q2, "frames") == 1
        assert q2.stats()[TaskState.NEW] == 1
        frame = q2.get_frame("veh-1/d1/000007")
        assert frame.blob_refs == REFS
        assert frame.record == record(7)


def test_concurrent_ingest_of_one_frame_makes_one_task(target: str) -> None:
    queues = [LabelQueue.open(target) for _ in range(4)]
    barrier = threading.Barrier(len(queues))
    outcomes: list[bool] = []
    errors: list[BaseException] = []

    def work(q: LabelQueue) -> None:
        try:
            barrier.wait()
            for seq in range(20):
                outcomes.append(q.ingest_frame(record(seq), REFS, now_ns=T0))
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        assert outcomes.count(True) == 20
        assert count(queues[0], "tasks") == 20
    finally:
        for q in queues:
            q.close()


def test_rollback_inside_transaction_leaves_nothing(queue: LabelQueue) -> None:
    ended: list[QueueTransaction] = []

    def crash_mid_batch() -> None:
        with queue.transaction() as tx:
            ended.append(tx)
            assert tx.ingest_frame(record(1), REFS)
            assert tx.ingest_frame(record(2), REFS)
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError, match="crash before commit"):
        crash_mid_batch()
    assert count(queue, "frames") == 0
    assert count(queue, "tasks") == 0
    assert sum(queue.stats().values()) == 0
    with pytest.raises(QueueError, match="has ended"):
        ended[0].ingest_frame(record(3), REFS)
    # The batch goes through when redelivered.
    with queue.transaction() as tx:
        assert tx.ingest_frame(record(1), REFS)
        assert tx.ingest_frame(record(2), REFS)
    assert queue.stats()[TaskState.NEW] == 2


def test_transactions_do_not_nest(queue: LabelQueue) -> None:
    with queue.transaction(), pytest.raises(QueueError, match="already open"):
        queue.ingest_frame(record(1), REFS)
    assert count(queue, "tasks") == 0


# --- claiming ------------------------------------------------------------------------------------


def test_claim_order_is_score_with_ageing(target: str) -> None:
    config = QueueConfig(ageing_per_hour=0.05, max_attempts=3)
    with LabelQueue.open(target, config=config) as q:
        # old: score 0.2, enqueued 20 h before the claim -> 0.2 + 1.0 = 1.2
        # top: score 0.9, fresh                           -> 0.9
        # mid: score 0.6, 4 h old                        -> 0.6 + 0.2 = 0.8
        # low: score 0.1, fresh                           -> 0.1
        q.ingest_frame(record(1, 0.2), REFS, now_ns=T0)
        q.ingest_frame(record(2, 0.6), REFS, now_ns=T0 + 16 * HOUR)
        q.ingest_frame(record(3, 0.9), REFS, now_ns=T0 + 20 * HOUR)
        q.ingest_frame(record(4, 0.1), REFS, now_ns=T0 + 20 * HOUR)
        now = T0 + 20 * HOUR
        claimed = []
        while (task := q.claim("alice", 600, now_ns=now)) is not None:
            claimed.append(task)
        assert [t.frame_key[-1] for t in claimed] == ["1", "3", "2", "4"]
        assert [round(t.priority, 6) for t in claimed] == [1.2, 0.9, 0.8, 0.1]
        assert all(t.state is TaskState.LEASED and t.attempts == 1 for t in claimed)

    with LabelQueue.open(target, config=QueueConfig(ageing_per_hour=0.0)) as q:
        for i in range(5, 8):
            q.ingest_frame(record(i, 0.5), REFS, now_ns=T0 + i)  # ties: oldest first
        keys = [q.claim("bob", 600, now_ns=now) for _ in range(3)]
        assert [k.frame_key[-1] for k in keys if k is not None] == ["5", "6", "7"]


def test_changing_the_ageing_rate_reranks_the_backlog(target: str) -> None:
    with LabelQueue.open(target, config=QueueConfig(ageing_per_hour=0.0)) as q:
        q.ingest_frame(record(1, 0.1), REFS, now_ns=T0)  # old, low score
        q.ingest_frame(record(2, 0.9), REFS, now_ns=T0 + 10 * HOUR)  # fresh, high score
    # Ageing at 0.1/h: task 1 is at 0.1 + 1.0 = 1.1 ten hours on, above task 2's 0.9.
    with LabelQueue.open(target, config=QueueConfig(ageing_per_hour=0.1)) as q:
        first = q.claim("alice", 60, now_ns=T0 + 10 * HOUR)
        assert first is not None
        assert first.frame_key.endswith("/000001")
        assert first.priority == pytest.approx(1.1)


def test_lease_timeout_returns_task_of_a_crashed_annotator(queue: LabelQueue) -> None:
    queue.ingest_frame(record(1), REFS, now_ns=T0)
    task = queue.claim("alice", 60, now_ns=T0)
    assert task is not None
    assert task.lease_expires_ns == T0 + 60 * SEC
    # alice crashes; within her lease nobody else gets the task.
    assert queue.claim("bob", 60, now_ns=T0 + 30 * SEC) is None
    assert queue.expire_leases(now_ns=T0 + 59 * SEC) == 0
    assert queue.expire_leases(now_ns=T0 + 61 * SEC) == 1
    again = queue.get_task(task.id)
    assert (again.state, again.lease_owner, again.attempts) == (TaskState.NEW, None, 1)
    assert again.enqueued_ns == T0  # keeps its age
    bob = queue.claim("bob", 60, now_ns=T0 + 62 * SEC)
    assert bob is not None
    assert (bob.id, bob.lease_owner, bob.attempts) == (task.id, "bob", 2)
    with pytest.raises(LeaseLost, match=rf"task {task.id}: labeler 'alice'.*leased to 'bob'"):
        queue.submit_label(task.id, "alice", {"boxes": []}, now_ns=T0 + 63 * SEC)
    # A stale lease is also taken over by the next claim without expire_leases.
    carol = queue.claim("carol", 60, now_ns=T0 + 200 * SEC)
    assert carol is not None
    assert (carol.id, carol.lease_owner, carol.attempts) == (task.id, "carol", 3)


def test_max_attempts_then_expired_then_requeued(target: str) -> None:
    with LabelQueue.open(target, config=QueueConfig(max_attempts=2)) as q:
        q.ingest_frame(record(1), REFS, now_ns=T0)
        now = T0
        for _ in range(2):
            assert q.claim("alice", 10, now_ns=now) is not None
            now += 11 * SEC
        assert q.claim("bob", 10, now_ns=now) is None  # stale lease, but attempts used up
        assert q.expire_leases(now_ns=now) == 1
        assert q.stats()[TaskState.EXPIRED] == 1
        assert q.requeue_expired() == 1
        task = q.claim("bob", 10, now_ns=now)
        assert task is not None
        assert (task.state, task.attempts) == (TaskState.LEASED, 1)


def test_only_the_lease_owner_submits_and_labels_export(queue: LabelQueue) -> None:
    for i in range(3):
        queue.ingest_frame(record(i, score=1.0 - i / 10), REFS, now_ns=T0)
    task = queue.claim("alice", 60, now_ns=T0)
    assert task is not None
    with pytest.raises(LeaseLost, match="leased to 'alice'"):
        queue.submit_label(task.id, "bob", {"boxes": []}, now_ns=T0 + SEC)
    with pytest.raises(LeaseLost, match="lease ran out"):
        queue.submit_label(task.id, "alice", {"boxes": []}, now_ns=T0 + 61 * SEC)
    with pytest.raises(TaskNotFound, match="task 9999 does not exist"):
        queue.submit_label(9999, "alice", {}, now_ns=T0)
    label = {"boxes": [{"class": "car", "xywh": [1, 2, 3, 4]}]}
    queue.submit_label(task.id, "alice", label, now_ns=T0 + 2 * SEC)
    with pytest.raises(LeaseLost, match="the task is labeled"):
        queue.submit_label(task.id, "alice", label, now_ns=T0 + 3 * SEC)

    second = queue.claim("bob", 60, now_ns=T0)
    assert second is not None
    with pytest.raises(LeaseLost):
        queue.skip(second.id, "alice", "blurred", now_ns=T0)
    queue.skip(second.id, "bob", "camera blinded by the sun", now_ns=T0 + SEC)
    assert queue.get_task(second.id).skip_reason == "camera blinded by the sun"

    stats = queue.stats()
    assert stats == {"new": 1, "leased": 0, "labeled": 1, "skipped": 1, "expired": 0}
    exported = list(queue.export_labeled(batch=1))
    assert len(exported) == 1
    item = exported[0]
    assert (item.task_id, item.labeler, item.payload) == (task.id, "alice", label)
    assert item.frame.key == task.frame_key
    assert item.frame.blob_refs == REFS
    assert item.labeled_ns == T0 + 2 * SEC
    assert list(queue.export_labeled(after_task_id=task.id)) == []


def test_concurrent_claims_take_every_task_exactly_once(target: str) -> None:
    n_tasks, n_workers = 200, 4
    with LabelQueue.open(target) as q, q.transaction() as tx:
        for i in range(n_tasks):
            tx.ingest_frame(record(i, score=(i % 17) / 17), REFS, now_ns=T0)
    queues = [LabelQueue.open(target) for _ in range(n_workers)]
    barrier = threading.Barrier(n_workers)
    claimed: list[list[int]] = [[] for _ in range(n_workers)]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()
            while (task := queues[n].claim(f"annotator-{n}", 3600, now_ns=T0)) is not None:
                claimed[n].append(task.id)
                time.sleep(0.001)  # the annotator looks at the task: lets the others in
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not errors, errors
        every = [tid for ids in claimed for tid in ids]
        assert len(every) == n_tasks
        assert len(set(every)) == n_tasks
        assert sum(1 for ids in claimed if ids) >= 2, [len(ids) for ids in claimed]
        assert queues[0].stats()[TaskState.LEASED] == n_tasks
    finally:
        for q in queues:
            q.close()


# --- configuration and errors --------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_error_names_the_database_without_password() -> None:
    port = closed_port()
    dsn = f"postgresql://ingest:s3cret-pw@127.0.0.1:{port}/queue?connect_timeout=2"
    with pytest.raises(DatabaseError) as info:
        connect(dsn)
    message = str(info.value)
    assert "s3cret-pw" not in message
    assert f"port={port}" in message
    assert "dbname=queue" in message
