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


_SETTERS = tuple(
    Decision.__dict__[name].__set__
    for name in (
        "selected",
        "score",
        "threshold",
        "reason",
        "seq",
        "timestamp_s",
        "nbytes",
        "draw",
        "components",
    )
)


def make_decision(
    selected: bool,
    score: float,
    threshold: float,
    reason: Reason,
    seq: int,
    timestamp_s: float,
    nbytes: int,
    draw: float,
    components: tuple[tuple[str, float], ...],
) -> Decision:
    """``Decision(selected, ..., components)``, built about twice as fast, for the per-frame
    path: the generated ``__init__`` of a frozen dataclass sets each field through
    ``object.__setattr__``; this writes the slots directly (``Decision`` has no
    ``__post_init__`` to skip; a test checks that both give equal decisions).

    >>> make_decision(True, 0.9, 0.7, Reason.SELECTED, 0, 0.0, 0, 0.0, ()) == Decision(
    ...     True, 0.9, 0.7, Reason.SELECTED, 0)
    True
    """
    d: Decision = object.__new__(Decision)
    s = _SETTERS
    s[0](d, selected)
    s[1](d, score)
    s[2](d, threshold)
    s[3](d, reason)
    s[4](d, seq)
    s[5](d, timestamp_s)
    s[6](d, nbytes)
    s[7](d, draw)
    s[8](d, components)
    return d
