"""Claim order is effective-priority order, whatever the scores, ages, rate and clock.

The claim reads an index on ``rank`` instead of computing ``score + rate * age`` for every
task; this checks the two orders agree (property-based, on an in-memory SQLite queue).
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_service.queue import FrameRecord, LabelQueue, QueueConfig

T0 = 1_800_000_000 * 10**9
HOUR = 3600 * 10**9

tasks = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
        st.integers(min_value=0, max_value=200 * HOUR),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(
    tasks=tasks,
    rate=st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
    later=st.integers(min_value=0, max_value=1000 * HOUR),
)
def test_claims_come_in_effective_priority_order(
    tasks: list[tuple[float, int]], rate: float, later: int
) -> None:
    with LabelQueue.open(":memory:", config=QueueConfig(ageing_per_hour=rate)) as q:
        for seq, (score, offset) in enumerate(tasks):
            rec = FrameRecord("veh-1", "d1", seq, T0 + offset, score, "entropy")
            assert q.ingest_frame(rec, {}, now_ns=T0 + offset)
        now = T0 + max(offset for _, offset in tasks) + later
        claimed = []
        while (task := q.claim("alice", 60, now_ns=now)) is not None:
            claimed.append(task)
    assert len(claimed) == len(tasks)
    expected = [score + rate * (now - T0 - offset) / HOUR for score, offset in tasks]
    got = [expected[int(t.frame_key.rsplit("/", 1)[1])] for t in claimed]
    for a, b in itertools.pairwise(got):
        assert a >= b - 1e-9, (got, rate)
    for t in claimed:
        assert abs(t.priority - expected[int(t.frame_key.rsplit("/", 1)[1])]) < 1e-9
