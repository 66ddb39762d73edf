"""The ingest group's partition assignors, watched for a blind assignment.

kafka-python's group leader assigns partitions from its own cluster metadata. When that
metadata lacks a subscribed topic's partitions at the moment of the assignment (a topic made
just before, a metadata response in flight), the range and round-robin assignors log "No
partition metadata for topic" and give its partitions to no member; and because the leader
records the metadata snapshot it holds, not what the assignor saw, no later metadata update
looks like a change, so the group never rebalances: the topic is not consumed until a member
restarts (dpkp/kafka-python#2377; seen here as a CI run whose consumer waited 120 s for its
first frame).

:class:`AssignmentWatch` supplies the same assignors (same protocol names, so members of any
version mix), each noting when it assigned blind; an assignment that sees every topic's
partitions clears the note. Usually kafka-python heals a blind assignment itself (its next
metadata update differs from the snapshot it assigned with, and the group rebalances, which
runs the assignors again). When that has not happened within ``grace_s``, the topic's
partitions are known to this member's metadata and it holds none of them, :meth:`due` says so
and the consumer rejoins the group (unsubscribe and subscribe again), which makes the leader
assign again with what it now knows. Nothing is held by anyone then, so nothing is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["AssignmentWatch"]


class AssignmentWatch:
    """Assignor classes for ``partition_assignment_strategy`` that flag a blind assignment."""

    def __init__(self, *, grace_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.grace_s = grace_s
        self.clock = clock
        self._lock = threading.Lock()
        self._blind: dict[str, float] = {}  # topic -> when it was assigned blind

    def strategies(self) -> tuple[type[Any], ...]:
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        return (self._watched(RangePartitionAssignor), self._watched(RoundRobinPartitionAssignor))

    def _watched(self, base: type[Any]) -> type[Any]:
        watch = self
        base_assign: Callable[..., Any] = base.assign

        def assign(cls: type[Any], cluster: Any, members: Any) -> Any:
            topics = {topic for member in members for topic in member.metadata.topics}
            missing = {t for t in topics if cluster.partitions_for_topic(t) is None}
            now = watch.clock()
            with watch._lock:
                for topic in topics:
                    if topic in missing:
                        watch._blind.setdefault(topic, now)
                    else:
                        watch._blind.pop(topic, None)  # assigned with metadata: healed
            return base_assign(cluster, members)

        return type(f"Watched{base.__name__}", (base,), {"assign": classmethod(assign)})

    def due(self, partitions_known: Callable[[str], bool]) -> set[str]:
        """The topics to rejoin for: assigned blind at least ``grace_s`` ago, not healed by
        a later assignment, and known to the metadata now; each is reported once."""
        now = self.clock()
        with self._lock:
            late = [t for t, at in self._blind.items() if now - at >= self.grace_s]
        ready = {t for t in late if partitions_known(t)}
        with self._lock:
            for topic in ready:
                self._blind.pop(topic, None)
        return ready
