"""The random baseline: select uniformly at random at the target rate, under the same caps.

What every strategy is compared against before a rollout. Same interface as
:class:`~selector.stream.StreamSelector` (``decide`` pure, ``update`` commits, state to bytes)
and the same hard caps (the token buckets of :class:`~selector.budget.BudgetConfig`); the
window, integral and cold-start settings of the config are not used.

Each frame gets a seeded uniform draw ``u``; its score is ``1 - u`` and it is selected when
the score is above ``1 - target_rate``, i.e. with probability ``target_rate``.

>>> sel = RandomSelector(BudgetConfig(target_rate=0.2), seed=3)
>>> frames = [FrameScores(timestamp_s=0.1 * i) for i in range(1000)]
>>> picked = 0
>>> for f in frames:
...     d = sel.decide(f)
...     sel.update(d, f)
...     picked += d.selected
>>> 150 < picked < 250
True
"""

from __future__ import annotations

import math
from typing import Any

from selector.budget import BudgetConfig, TokenBucket, cap_reason
from selector.decision import Decision, Reason
from selector.errors import InvalidScoresError, StateError
from selector.state import UniformStream, array, field, pack, unpack
from selector.stream import FrameScores, SelectorConfig, frame_time

__all__ = ["RandomSelector"]

_KIND = "random_selector"


class RandomSelector:
    """Uniform random selection at ``config.target_rate``, seeded, under the caps."""

    def __init__(self, config: BudgetConfig | SelectorConfig, seed: int = 0) -> None:
        if isinstance(config, SelectorConfig):  # the same config as a StreamSelector's
            config = config.budget
        self.config = config
        self.seed = seed
        self._draws = UniformStream(seed)
        self._frames: TokenBucket | None = config.frame_bucket()
        self._bytes: TokenBucket | None = config.byte_bucket()
        self._seen = 0
        self._selected = 0

    @property
    def frames_seen(self) -> int:
        """Frames committed."""
        return self._seen

    @property
    def frames_selected(self) -> int:
        """Frames committed as selected."""
        return self._selected

    def decide(self, frame: FrameScores) -> Decision:
        """Decide one frame; changes nothing."""
        t = frame_time(frame, self._seen)
        if not (isinstance(t, float | int) and math.isfinite(t)):
            raise InvalidScoresError(f"timestamp_s must be finite, got {t!r}")
        if frame.nbytes < 0:
            raise InvalidScoresError(f"nbytes must be >= 0, got {frame.nbytes!r}")
        draw = self._draws.peek()
        score = 1.0 - draw
        threshold = 1.0 - self.config.target_rate
        selected = draw < self.config.target_rate
        reason = Reason.SELECTED if selected else Reason.RANDOM_SKIP
        if selected:
            capped = cap_reason(self._frames, self._bytes, t, frame.nbytes)
            if capped is not None:
                selected, reason = False, capped
        return Decision(
            selected=selected,
            score=score,
            threshold=threshold,
            reason=reason,
            seq=self._seen,
            timestamp_s=float(t),
            nbytes=int(frame.nbytes),
            draw=draw,
        )

    def update(self, decision: Decision, frame: FrameScores) -> None:
        """Commit ``decision`` for ``frame`` (the current frame)."""
        if decision.seq != self._seen:
            raise StateError(
                f"decision.seq {decision.seq} does not match the next frame {self._seen}"
            )
        if decision.timestamp_s != frame_time(frame, decision.seq):
            raise StateError("decision and frame disagree on timestamp_s: not the same frame")
        t = decision.timestamp_s
        for bucket, amount in ((self._frames, 1.0), (self._bytes, float(decision.nbytes))):
            if bucket is None:
                continue
            if decision.selected:
                bucket.take(t, amount)
            else:
                bucket.advance(t)
        self._seen += 1
        self._selected += decision.selected
        self._draws.advance()

    def model_changed(self, *, embedding_changed: bool = True) -> None:
        """Random selection does not look at the model: nothing to do."""

    def state_bytes(self) -> bytes:
        """Everything needed to continue exactly, as bytes (no pickle)."""
        draws_header, draws_buf = self._draws.get_state()
        header: dict[str, Any] = {
            "config": self.config.to_json(),
            "seed": self.seed,
            "draws": draws_header,
            "seen": self._seen,
            "selected": self._selected,
            "frames_bucket": None if self._frames is None else self._frames.get_state(),
            "bytes_bucket": None if self._bytes is None else self._bytes.get_state(),
        }
        return pack(_KIND, header, {"draws": draws_buf})

    @classmethod
    def from_state(cls, config: BudgetConfig | SelectorConfig, data: bytes) -> RandomSelector:
        """A selector restored from :meth:`state_bytes`; ``config`` must be the saved one."""
        if isinstance(config, SelectorConfig):
            config = config.budget
        header, arrays = unpack(data, _KIND)
        if field(header, "config", dict) != config.to_json():
            raise StateError("selector state was saved with a different BudgetConfig")
        obj = cls(config, seed=field(header, "seed", int))
        obj._draws = UniformStream.from_state(
            field(header, "draws", dict), array(arrays, "draws", float, (None,))
        )
        obj._seen = field(header, "seen", int)
        obj._selected = field(header, "selected", int)
        for name, bucket in (("frames_bucket", obj._frames), ("bytes_bucket", obj._bytes)):
            saved = header.get(name)
            if (saved is None) != (bucket is None):
                raise StateError(f"corrupt selector state: {name} does not match the config")
            if bucket is not None and saved is not None:
                bucket.set_state(saved)
        return obj
