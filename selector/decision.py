"""What the selector decided about one frame, and why.

A :class:`Decision` is a value: ``decide(...)`` returns one without changing any state, and
``update(decision, ...)`` commits it. It carries what the commit needs (the frame's sequence
number, timestamp, size and the per-frame random draw it was based on), so a decision can only
be committed once, in order.

>>> d = Decision(selected=True, score=0.9, threshold=0.7, reason=Reason.SELECTED, seq=0)
>>> d.reason
<Reason.SELECTED: 'selected'>
>>> str(Reason.TOO_SIMILAR)
'too_similar'
>>> d.component("uncertainty") is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Why a frame was, or was not, selected. The values are stable metric label values."""

    SELECTED = "selected"
    """Score above the budget threshold, within every cap, novel enough."""
    BELOW_THRESHOLD = "below_threshold"
    """Score below the streaming-quantile threshold."""
    BUDGET_EXHAUSTED = "budget_exhausted"
    """Would have been selected, but the frames-per-minute token bucket is empty."""
    BYTES_EXHAUSTED = "bytes_exhausted"
    """Would have been selected, but the bytes-per-hour token bucket cannot cover the frame."""
    COLD_START_EXPLORE = "cold_start_explore"
    """Selected by the cold-start exploration rule (random or diversity only)."""
    COLD_START_SKIP = "cold_start_skip"
    """Not selected by the cold-start exploration rule."""
    TOO_SIMILAR = "too_similar"
    """Passed the budget, vetoed: too close in time, space and features to a selected frame."""
    RANDOM_SKIP = "random_skip"
    """Random baseline: the draw said no."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of ``decide`` for one frame; pass it back to ``update`` to commit it.

    ``components`` holds the named inputs of the score, e.g. ``("uncertainty", 0.8)``,
    ``("novelty", 0.4)``, ``("camera", 0.7)``, ``("lidar", 0.9)``.
    """

    selected: bool
    score: float
    threshold: float
    reason: Reason
    seq: int
    """Index of the frame in the stream (0-based); ``update`` rejects stale decisions by it."""
    timestamp_s: float = 0.0
    nbytes: int = 0
    draw: float = 0.0
    """The per-frame uniform random draw in [0, 1) that the decision used (if any)."""
    components: tuple[tuple[str, float], ...] = ()

    def component(self, name: str) -> float | None:
        """The value of one named component, or ``None`` if absent.

        >>> Decision(False, 0.1, 0.5, Reason.BELOW_THRESHOLD, 3,
        ...          components=(("novelty", 0.25),)).component("novelty")
        0.25
        """
        for key, value in self.components:
            if key == name:
                return value
        return None
