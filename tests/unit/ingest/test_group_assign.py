"""A blind assignment (the group leader had no partition metadata for a subscribed topic, so
the assignor gave its partitions to no one: dpkp/kafka-python#2377) is noticed, and the
consumer rejoins the group once its metadata knows the topic's partitions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka.coordinator.assignors.range import RangePartitionAssignor

from ingest_service.blobstore import LocalBlobStore
from ingest_service.config import IngestConfig, KafkaSection
from ingest_service.consumer import IngestConsumer
from ingest_service.group_assign import AssignmentWatch
from ingest_service.queue import LabelQueue


@dataclass
class Cluster:
    partitions: dict[str, set[int]]

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)


@dataclass
class Subscription:
    topics: list[str]


@dataclass
class Member:
    member_id: str
    metadata: Any
    group_instance_id: str | None = None


def _members(*topics: str) -> list[Member]:
    meta = Subscription(list(topics))
    return [Member("m-1", meta), Member("m-2", meta)]


def _assigned(assignment: Any) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for member_assignment in assignment.values():
        for tp in member_assignment.partitions():
            out.setdefault(tp.topic, []).append(tp.partition)
    return {t: sorted(p) for t, p in out.items()}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_assignment_with_metadata_is_the_assignors_own_and_flags_nothing() -> None:
    clock = Clock()
    watch = AssignmentWatch(grace_s=30.0, clock=clock)
    watched = watch.strategies()[0]
    assert watched.name == "range"  # the same protocol name as kafka-python's
    cluster = Cluster({"frames": {0, 1, 2}})
    ours = watched.assign(cluster, _members("frames"))
    theirs = RangePartitionAssignor.assign(cluster, _members("frames"))
    assert _assigned(ours) == _assigned(theirs) == {"frames": [0, 1, 2]}
    clock.now = 100.0
    assert watch.due(lambda _t: True) == set()


def test_a_blind_assignment_is_due_after_the_grace_once_the_partitions_are_known() -> None:
    clock = Clock()
    watch = AssignmentWatch(grace_s=30.0, clock=clock)
    watched = watch.strategies()[1]
    assert watched.name == "roundrobin"
    watched.assign(Cluster({}), _members("frames"))  # no metadata for it: nobody gets it
    clock.now = 29.0
    assert watch.due(lambda _t: True) == set()  # kafka-python may still heal it itself
    clock.now = 31.0
    assert watch.due(lambda _t: False) == set()  # not known yet: wait, do not loop
    assert watch.due(lambda t: t == "frames") == {"frames"}
    assert watch.due(lambda _t: True) == set()  # once


def test_a_later_assignment_with_metadata_heals_a_blind_one() -> None:
    clock = Clock()
    watch = AssignmentWatch(grace_s=30.0, clock=clock)
    watched = watch.strategies()[0]
    watched.assign(Cluster({}), _members("frames"))
    watched.assign(Cluster({"frames": {0, 1}}), _members("frames"))  # the library rebalanced
    clock.now = 60.0
    assert watch.due(lambda _t: True) == set()


@dataclass
class StubConsumer:
    known: set[int] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.known

    def unsubscribe(self) -> None:
        self.calls.append("unsubscribe")

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.calls.append(f"subscribe {','.join(topics)}")


def test_the_consumer_rejoins_after_a_blind_assignment_that_did_not_heal(tmp_path: Path) -> None:
    cfg = IngestConfig(kafka=KafkaSection(topic="frames"))
    clock = Clock()
    consumer = IngestConsumer(
        cfg,
        queue_factory=lambda: LabelQueue.open(tmp_path / "q.db"),
        blobs=LocalBlobStore(tmp_path / "blobs", fsync=False),
        clock=clock,
    )
    stub = StubConsumer(known={0, 1, 2})
    consumer._consumer = stub
    consumer._rejoin_if_assigned_blind()
    assert stub.calls == []  # nothing was assigned blind
    consumer._assignment.strategies()[0].assign(Cluster({}), _members("frames"))
    clock.now = 10.0
    consumer._rejoin_if_assigned_blind()
    assert stub.calls == []  # within the grace
    clock.now = 40.0
    consumer._assigned = {("frames", 0)}
    consumer._rejoin_if_assigned_blind()
    assert stub.calls == []  # it holds partitions: not the stuck case
    consumer._assigned = set()
    consumer._rejoin_if_assigned_blind()
    assert stub.calls == ["unsubscribe", "subscribe frames"]
    consumer._rejoin_if_assigned_blind()
    assert stub.calls == ["unsubscribe", "subscribe frames"]  # once
