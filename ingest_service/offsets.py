"""Which Kafka offset a consumer of chunked frames may commit, per partition.

Every chunk of a frame shares one partition (the frame key is the record key), but chunks of
several frames interleave there. Committing "last consumed + 1" would skip the earlier chunks
of a frame that is still being reassembled (or whose database transaction has not committed
yet); a successor resuming there could never finish it. The safe offset of a partition is the
offset of the first chunk of the oldest frame still *held* on it, or last consumed + 1 when
nothing is held.

A frame is held from its first chunk until it has left the consumer for good: stored (its
database transaction committed) or dead-lettered (the dead letter acknowledged). A record that
is handled on its own (garbage dead-lettered, a trailing chunk of a frame already stored) only
moves the partition's next offset.

A successor resuming at a safe offset may re-read trailing chunks of frames that were finished
before it (their first chunk lies below the safe offset); the ingest recognises them by frame
key, which is the idempotency key of the label queue.

>>> t = SafeOffsetTracker()
>>> t.hold(("f", 0), 10, "a")      # first chunk of frame a
>>> t.hold(("f", 0), 11, "b")      # b, a single-chunk frame, waiting for its transaction
>>> t.hold(("f", 0), 12, "a")
>>> t.safe_offsets()
{('f', 0): 10}
>>> t.release("a")                 # a stored
>>> t.safe_offsets()
{('f', 0): 11}
>>> t.release("b")
>>> t.to_commit()
{('f', 0): 13}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["Partition", "SafeOffsetTracker"]

Partition = tuple[str, int]
"""(topic, partition); kafka-python's ``TopicPartition`` is such a tuple."""


class SafeOffsetTracker:
    """Per partition, the offset a consumer may commit without losing a frame it holds.

    Not thread-safe: used by the consumer loop (and its rebalance callbacks, which kafka-python
    runs inside ``poll`` on the same thread).
    """

    def __init__(self) -> None:
        self._next: dict[Partition, int] = {}
        # partition -> frame key -> offset of the first record of the frame held there
        self._held: dict[Partition, dict[str, int]] = {}
        self._committed: dict[Partition, int] = {}

    def hold(self, tp: Partition, offset: int, frame_key: str) -> None:
        """The record at ``offset`` belongs to ``frame_key``, which is not finished yet."""
        tp = (tp[0], tp[1])
        frames = self._held.setdefault(tp, {})
        first = frames.get(frame_key)
        if first is None or offset < first:
            frames[frame_key] = offset
        self._advance(tp, offset)

    def consumed(self, tp: Partition, offset: int) -> None:
        """The record at ``offset`` was handled on its own; nothing to hold for it."""
        self._advance((tp[0], tp[1]), offset)

    def release(self, frame_key: str) -> None:
        """``frame_key`` is finished (stored or dead-lettered) on whatever partition held it."""
        for frames in self._held.values():
            frames.pop(frame_key, None)

    def holds(self, frame_key: str) -> bool:
        """Whether any partition holds ``frame_key``."""
        return any(frame_key in frames for frames in self._held.values())

    def held_keys(self, tp: Partition) -> list[str]:
        """Frame keys held on ``tp``, oldest first offset first."""
        frames = self._held.get((tp[0], tp[1]), {})
        return sorted(frames, key=frames.__getitem__)

    def forget(self, partitions: Iterable[Partition]) -> list[str]:
        """Drop all state of ``partitions`` (revoked); the keys of the frames they held."""
        dropped: list[str] = []
        for tp in partitions:
            tp = (tp[0], tp[1])
            dropped.extend(self._held.pop(tp, {}))
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
        return dropped

    def safe_offsets(self) -> dict[Partition, int]:
        """Per partition seen, the offset up to which everything before it is finished."""
        safe: dict[Partition, int] = {}
        for tp, next_offset in self._next.items():
            frames = self._held.get(tp)
            safe[tp] = min(frames.values()) if frames else next_offset
        return safe

    def to_commit(self) -> dict[Partition, int]:
        """Safe offsets that moved past what :meth:`mark_committed` last recorded."""
        return {
            tp: off for tp, off in self.safe_offsets().items() if off > self._committed.get(tp, -1)
        }

    def mark_committed(self, offsets: Mapping[Partition, int]) -> None:
        """Kafka acknowledged the commit of ``offsets``."""
        for tp, off in offsets.items():
            key = (tp[0], tp[1])
            self._committed[key] = max(self._committed.get(key, -1), off)

    def _advance(self, tp: Partition, offset: int) -> None:
        if offset + 1 > self._next.get(tp, 0):
            self._next[tp] = offset + 1
