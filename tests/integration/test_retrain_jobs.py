"""Retrain jobs against both backends (a SQLite file, a real PostgreSQL server): one job at a
time per kind, never run twice at once, retried after a timeout or a restart, policies."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from ingest_service.errors import QueueError
from ingest_service.queue import LabelQueue, connect
from ingest_service.retrain import (
    JobLost,
    JobState,
    JobStore,
    RetrainPolicy,
    RetrainScheduler,
    labeled_count,
)

pytestmark = pytest.mark.integration

T0 = 1_800_000_000 * 10**9
SEC = 10**9
HOUR = 3600 * SEC


@pytest.fixture
def store(queue_db: str) -> Iterator[JobStore]:
    LabelQueue.open(queue_db).close()  # migrates
    db = connect(queue_db)
    try:
        yield JobStore(db, clock=lambda: T0)
    finally:
        db.close()


def test_one_job_at_a_time_per_kind(store: JobStore) -> None:
    first, created = store.enqueue("camera", "on demand", 10, now_ns=T0)
    assert created
    assert first.state is JobState.QUEUED
    again, created = store.enqueue("camera", "100 new labels", 20, now_ns=T0 + SEC)
    assert (again.id, created) == (first.id, False)
    lidar, created = store.enqueue("lidar", "on demand", 10, now_ns=T0)
    assert created
    assert lidar.id != first.id
    running = store.start("camera", "w1", now_ns=T0 + 2 * SEC)
    assert running is not None
    assert store.enqueue("camera", "on demand", 30)[1] is False  # running counts as active
    store.finish(running.id, "w1", JobState.SUCCEEDED, metric=0.8, now_ns=T0 + 3 * SEC)
    assert store.enqueue("camera", "on demand", 30, now_ns=T0 + 4 * SEC)[1] is True


def test_of_two_workers_only_one_starts_the_job(queue_db: str, store: JobStore) -> None:
    store.enqueue("camera", "on demand", 0, now_ns=T0)
    barrier = threading.Barrier(4)
    got: list[str] = []

    def worker(name: str) -> None:
        own = JobStore(connect(queue_db, busy_timeout_s=10.0))
        barrier.wait()
        if own.start("camera", name, now_ns=T0) is not None:
            got.append(name)
        own.db.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 1
    job = store.active("camera")
    assert job is not None
    assert (job.state, job.worker, job.attempts) == (JobState.RUNNING, got[0], 1)


def test_a_timed_out_job_is_retried_then_failed_and_its_late_finish_refused(
    store: JobStore,
) -> None:
    job, _ = store.enqueue("camera", "on demand", 0, max_attempts=2, timeout_s=60, now_ns=T0)
    first = store.start("camera", "w1", now_ns=T0)
    assert first is not None
    assert store.recover(now_ns=T0 + 59 * SEC) == []  # not yet
    (back,) = store.recover(now_ns=T0 + 61 * SEC)
    assert (back.state, back.attempts, back.worker) == (JobState.QUEUED, 1, None)
    assert "timed out" in back.detail
    with pytest.raises(JobLost, match="queued"):
        store.finish(job.id, "w1", JobState.SUCCEEDED, now_ns=T0 + 62 * SEC)
    second = store.start("camera", "w2", now_ns=T0 + 70 * SEC)
    assert second is not None
    assert second.attempts == 2
    (done,) = store.recover(now_ns=T0 + 200 * SEC)
    assert (done.state, done.attempts) == (JobState.FAILED, 2)
    assert done.finished_ns == T0 + 200 * SEC
    assert store.active("camera") is None


def test_a_restart_takes_back_running_jobs_and_they_survive_it(queue_db: str) -> None:
    LabelQueue.open(queue_db).close()
    before = JobStore(connect(queue_db))
    job, _ = before.enqueue("lidar", "on demand", 5, timeout_s=3600, now_ns=T0)
    assert before.start("lidar", "old-process", now_ns=T0) is not None
    before.db.close()  # the service dies with the job running
    after = JobStore(connect(queue_db))
    (back,) = after.recover(interrupted=True, now_ns=T0 + SEC)  # at start-up
    assert (back.id, back.state) == (job.id, JobState.QUEUED)
    assert "restart" in back.detail
    with pytest.raises(JobLost):
        after.finish(job.id, "old-process", JobState.SUCCEEDED, now_ns=T0 + 2 * SEC)
    rerun = after.start("lidar", "new-process", now_ns=T0 + 3 * SEC)
    assert rerun is not None
    assert rerun.attempts == 2
    finished = after.finish(
        job.id,
        "new-process",
        JobState.REJECTED,
        labels_used=5,
        metric=0.61,
        detail="holdout 0.61 < production 0.64 - margin",
        now_ns=T0 + 4 * SEC,
    )
    assert finished.state is JobState.REJECTED
    assert finished.metric == pytest.approx(0.61)
    assert after.jobs("lidar")[0].id == job.id
    after.db.close()


def test_finish_needs_a_final_state_and_the_holder(store: JobStore) -> None:
    job, _ = store.enqueue("camera", "on demand", 0, now_ns=T0)
    store.start("camera", "w1", now_ns=T0)
    with pytest.raises(QueueError, match="final state"):
        store.finish(job.id, "w1", JobState.RUNNING)
    with pytest.raises(JobLost, match="w2"):
        store.finish(job.id, "w2", JobState.SUCCEEDED, now_ns=T0)


def test_the_policy_counts_new_labels_and_holds_the_interval(store: JobStore) -> None:
    labels = [0]
    sched = RetrainScheduler(
        store,
        [RetrainPolicy("camera", every_labels=100, min_interval_s=3600.0)],
        labels=lambda: labels[0],
    )
    labels[0] = 99
    assert sched.tick(now_ns=T0) == []
    labels[0] = 100
    (job,) = sched.tick(now_ns=T0)
    assert (job.trigger, job.labels_at) == ("100 new labels", 100)
    assert sched.tick(now_ns=T0 + SEC) == []  # one at a time
    assert store.start("camera", "w", now_ns=T0) is not None
    store.finish(job.id, "w", JobState.SUCCEEDED, now_ns=T0 + SEC)
    labels[0] = 250
    assert sched.tick(now_ns=T0 + HOUR - SEC) == []  # 150 new, but within the hour
    (second,) = sched.tick(now_ns=T0 + HOUR + SEC)
    assert second.trigger == "150 new labels"
    assert store.start("camera", "w", now_ns=T0 + HOUR + SEC) is not None
    store.finish(second.id, "w", JobState.FAILED, detail="trainer exited 1", now_ns=T0 + 2 * HOUR)
    # A failed run trained nothing: its labels still count against the last good run.
    (third,) = sched.tick(now_ns=T0 + 2 * HOUR + SEC)
    assert third.trigger == "150 new labels"


def test_on_demand_ignores_the_policy_but_not_an_active_job(store: JobStore) -> None:
    sched = RetrainScheduler(store, [RetrainPolicy("camera")], labels=lambda: 3)
    job, created = sched.request("camera", now_ns=T0)
    assert created
    assert (job.trigger, job.labels_at) == ("on demand", 3)
    assert sched.request("camera", now_ns=T0)[1] is False
    with pytest.raises(QueueError, match="no retrain policy"):
        sched.request("radar")


def test_labeled_count_reads_the_queue(queue_db: str) -> None:
    with LabelQueue.open(queue_db, clock=lambda: T0) as q:
        assert labeled_count(q.db) == 0
