"""Streaming budget control: turn a stream of scores in [0, 1] into select / drop at a rate.

Three mechanisms, applied in this order by :meth:`BudgetController.decide`:

1. **Cold start** (off by default). For the first ``cold_start_frames`` frames (or until
   ``cold_start_min_selected`` selections, whichever comes first, or until the first model
   swap) the model's scores are not trusted: frames are picked by the exploration rule,
   ``"random"`` (probability ``target_rate``, from the seeded per-frame draw) or
   ``"diversity"`` (novelty at least ``cold_start_novelty``). Reasons ``cold_start_explore`` /
   ``cold_start_skip``. Measured in the closed loop (docs/evaluation.md), every cold start
   tried lost to none with the margin utility, so the default has none; a swap to a model
   trained on labels ends one, since its scores are the ones to trust.
2. **Streaming quantile with integral correction.** The threshold is the ``1 - r_eff``
   quantile of the last ``window`` scores, kept sorted (``bisect.insort`` into a list, the
   oldest removed by ``bisect``; O(window) memmove per update, about a microsecond). For iid
   scores the chance that a new score beats the i-th smallest of m is exactly
   ``(m + 1 - i) / (m + 1)``, so the order statistic at ``(1 - r)(m + 1)`` selects at rate r
   without bias. ``r_eff = target_rate + (D + 4 B) / H`` (plus the veto term below), where
   ``D`` + ``B`` is the selection deficit (``target_rate * frames - selections`` since frame 0,
   the cold start included) and ``H = integral_selections / target_rate`` frames: a
   first-order loop with time constant H that makes the long-run rate exact even when caps or
   vetoes refuse some frames. Anti-windup is asymmetric:

   * a *surplus* is clamped at ``-integral_selections`` (``D``): after an abrupt shift of the
     score distribution the window needs ``window`` frames to refill, and the surplus of that
     transient beyond the clamp is forgotten rather than paid back for thousands of frames;
     at the clamp ``r_eff`` is 0, so no more can be overspent;
   * a *deficit* fills ``D`` up to ``+integral_selections``, and what lies beyond goes to the
     backlog ``B`` (at most ``4 * integral_selections``), paid back four times faster. A
     deficit is what a lagging window causes on correlated streams (video, day to night):
     while the score level sits below the window's, even ``2 * target_rate`` (``D`` at its
     clamp) selects too little; forgetting that deficit made the long-run rate 10-20 % short,
     the backlog brings it within a few per cent. After an abrupt shift downwards the backlog
     of the transient is paid back within about ``H / 4`` frames of the window refilling, so
     the recovery is as quick as before.

   Downstream vetoes (``too_similar``) can refuse whole bursts of would-be selections, more
   than the integral can make up quickly, so they are compensated feed-forward as well: with
   ``a`` the running share (EMA over the last ~32) of would-be selections that survive the
   veto, ``r_eff = target_rate / max(a, 0.1) + (D + 4 B) / H`` while behind (``D > 0``),
   clipped to [0, 1]; once caught up the boost stops, so it cannot overshoot.
   **Model swaps** (:meth:`BudgetController.model_changed`): scores of two models are not
   comparable (a retrained model is more confident), so with ``model_change = "refresh"``
   (default) the window is restarted at a swap; the old window stays the reference until the
   new model has scored ``refresh_size()`` frames (``refresh_scores``, default 2 /
   ``target_rate``, at least 10), so that the threshold never comes from a handful of scores.
   The integral state is kept across a swap.
3. **Hard caps.** Two token buckets, frames per minute and bytes per hour. Never exceeded
   over any time window: at most ``burst + rate * T`` over any span of T seconds.

``decide`` is pure; ``update(decision)`` commits it.

>>> cfg = BudgetConfig(target_rate=0.1, window=200, cold_start_frames=100)
>>> bc = BudgetController(cfg, seed=0)
>>> d = bc.decide(0.3, timestamp_s=0.0, nbytes=1000)
>>> d.reason in (Reason.COLD_START_EXPLORE, Reason.COLD_START_SKIP)
True
>>> bc.decide(0.3, timestamp_s=0.0, nbytes=1000) == d      # deciding changes nothing
True
>>> bc.update(d); bc.frames_seen
1
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from selector.decision import Decision, Reason
from selector.errors import InvalidConfigError, InvalidScoresError, StateError
from selector.state import UniformStream, array, field

ColdStartMode = Literal["random", "diversity"]
COLD_START_MODES: tuple[str, ...] = ("random", "diversity")
ModelChange = Literal["refresh", "keep"]
MODEL_CHANGES: tuple[str, ...] = ("refresh", "keep")

_ACCEPT_GAIN = 1.0 / 32.0  # EMA weight of one would-be selection in the acceptance share
_MIN_ACCEPT = 0.1  # the veto compensation raises the rate at most tenfold
_BACKLOG_LIMIT = 4.0  # the backlog holds at most this many times integral_selections
_BACKLOG_GAIN = 4.0  # the backlog is paid back with time constant H / _BACKLOG_GAIN


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise InvalidConfigError(f"{name}: {message}")


class TokenBucket:
    """A token bucket: ``rate_per_s`` tokens per second, at most ``burst`` held.

    Starts full. ``available(t)`` is pure; ``take(t, n)`` spends ``n`` tokens.

    >>> b = TokenBucket(rate_per_s=1.0, burst=2.0)
    >>> b.available(0.0), b.can_take(0.0, 3.0)
    (2.0, False)
    >>> b.take(0.0, 2.0); b.available(0.5)
    0.5
    """

    __slots__ = ("_last_t", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float) -> None:
        _require(math.isfinite(rate_per_s) and rate_per_s > 0, "rate_per_s", "must be > 0")
        _require(math.isfinite(burst) and burst > 0, "burst", "must be > 0")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last_t: float | None = None

    @property
    def tokens(self) -> float:
        """Tokens held at the last update."""
        return self._tokens

    def available(self, timestamp_s: float) -> float:
        """Tokens that would be held at ``timestamp_s`` (time never runs backwards)."""
        if self._last_t is None:
            return self._tokens
        elapsed = timestamp_s - self._last_t
        if elapsed <= 0.0:
            return self._tokens
        return min(self.burst, self._tokens + elapsed * self.rate_per_s)

    def can_take(self, timestamp_s: float, n: float) -> bool:
        """Whether ``n`` tokens are available at ``timestamp_s``."""
        return self.available(timestamp_s) >= n

    def advance(self, timestamp_s: float) -> None:
        """Refill up to ``timestamp_s`` without spending."""
        self._tokens = self.available(timestamp_s)
        if self._last_t is None or timestamp_s > self._last_t:
            self._last_t = timestamp_s

    def take(self, timestamp_s: float, n: float) -> None:
        """Spend ``n`` tokens at ``timestamp_s``; :class:`StateError` if not available."""
        self.advance(timestamp_s)
        if self._tokens < n:
            raise StateError(f"token bucket holds {self._tokens:g} tokens, cannot take {n:g}")
        self._tokens -= n

    def get_state(self) -> dict[str, Any]:
        """JSON-able state."""
        return {"tokens": self._tokens, "last_t": self._last_t}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`get_state`."""
        tokens = field(state, "tokens", (int, float))
        last_t = state.get("last_t")
        if not 0.0 <= tokens <= self.burst or not (
            last_t is None or isinstance(last_t, int | float)
        ):
            raise StateError("corrupt selector state: token bucket out of range")
        self._tokens = float(tokens)
        self._last_t = None if last_t is None else float(last_t)


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """Budget parameters; validated on construction (:class:`InvalidConfigError` names the field).

    ``max_frames_per_minute`` / ``max_bytes_per_hour`` of ``None`` mean no hard cap.
    ``burst_bytes`` defaults to one minute's worth of ``max_bytes_per_hour``.
    """

    target_rate: float
    """Share of frames to select (0.05: one in twenty), over the long run."""
    window: int = 1000
    """Recent scores the selection threshold is a quantile of."""
    integral_selections: float = 20.0
    """Selections of surplus or deficit the controller corrects over (its horizon is this /
    target_rate frames)."""
    max_frames_per_minute: float | None = None
    burst_frames: float = 10.0
    """With max_frames_per_minute: frames that may go at once above the rate (token bucket)."""
    max_bytes_per_hour: float | None = None
    burst_bytes: float | None = None
    cold_start_frames: int = 0
    cold_start_min_selected: int | None = None
    cold_start_mode: ColdStartMode = "random"
    cold_start_novelty: float = 0.5
    """With cold_start_mode diversity: the novelty a cold-start frame needs to be taken."""
    model_change: ModelChange = "refresh"
    refresh_scores: int | None = None

    def __post_init__(self) -> None:
        _require(
            isinstance(self.target_rate, int | float) and 0.0 < self.target_rate <= 1.0,
            "target_rate",
            f"must be in (0, 1], got {self.target_rate!r}",
        )
        _require(
            isinstance(self.window, int) and self.window >= 10,
            "window",
            f"must be an int >= 10, got {self.window!r}",
        )
        _require(
            math.isfinite(self.integral_selections) and self.integral_selections >= 0,
            "integral_selections",
            f"must be >= 0, got {self.integral_selections!r}",
        )
        if self.max_frames_per_minute is not None:
            _require(
                math.isfinite(self.max_frames_per_minute) and self.max_frames_per_minute > 0,
                "max_frames_per_minute",
                f"must be > 0 or None, got {self.max_frames_per_minute!r}",
            )
        _require(
            math.isfinite(self.burst_frames) and self.burst_frames >= 1,
            "burst_frames",
            f"must be >= 1, got {self.burst_frames!r}",
        )
        if self.max_bytes_per_hour is not None:
            _require(
                math.isfinite(self.max_bytes_per_hour) and self.max_bytes_per_hour > 0,
                "max_bytes_per_hour",
                f"must be > 0 or None, got {self.max_bytes_per_hour!r}",
            )
        if self.burst_bytes is not None:
            _require(
                math.isfinite(self.burst_bytes) and self.burst_bytes > 0,
                "burst_bytes",
                f"must be > 0 or None, got {self.burst_bytes!r}",
            )
        _require(
            isinstance(self.cold_start_frames, int) and self.cold_start_frames >= 0,
            "cold_start_frames",
            f"must be an int >= 0, got {self.cold_start_frames!r}",
        )
        if self.cold_start_min_selected is not None:
            _require(
                isinstance(self.cold_start_min_selected, int) and self.cold_start_min_selected > 0,
                "cold_start_min_selected",
                f"must be an int > 0 or None, got {self.cold_start_min_selected!r}",
            )
        _require(
            self.cold_start_mode in COLD_START_MODES,
            "cold_start_mode",
            f"must be one of {COLD_START_MODES}, got {self.cold_start_mode!r}",
        )
        _require(
            0.0 <= self.cold_start_novelty <= 1.0,
            "cold_start_novelty",
            f"must be in [0, 1], got {self.cold_start_novelty!r}",
        )
        _require(
            self.model_change in MODEL_CHANGES,
            "model_change",
            f"must be one of {MODEL_CHANGES}, got {self.model_change!r}",
        )
        if self.refresh_scores is not None:
            _require(
                isinstance(self.refresh_scores, int) and 1 <= self.refresh_scores <= self.window,
                "refresh_scores",
                f"must be an int in [1, window={self.window}] or None, got {self.refresh_scores!r}",
            )

    @property
    def cold_start(self) -> bool:
        """Whether a selector built from this config starts in a cold start."""
        return self.cold_start_frames > 0 or self.cold_start_min_selected is not None

    def refresh_size(self) -> int:
        """Scores of a new model that replace the old model's window (``refresh_scores``, or
        by default the frames in which the budget expects two selections, at least 10)."""
        if self.refresh_scores is not None:
            return self.refresh_scores
        return min(self.window, max(10, math.ceil(2.0 / self.target_rate)))

    def frame_bucket(self) -> TokenBucket | None:
        """A fresh frames-per-minute bucket, or ``None`` without a cap."""
        if self.max_frames_per_minute is None:
            return None
        return TokenBucket(self.max_frames_per_minute / 60.0, self.burst_frames)

    def byte_bucket(self) -> TokenBucket | None:
        """A fresh bytes-per-hour bucket, or ``None`` without a cap."""
        if self.max_bytes_per_hour is None:
            return None
        burst = self.burst_bytes if self.burst_bytes is not None else self.max_bytes_per_hour / 60
        return TokenBucket(self.max_bytes_per_hour / 3600.0, burst)

    def to_json(self) -> dict[str, Any]:
        """The configuration as a JSON-able dict."""
        return asdict(self)


def cap_reason(
    frames: TokenBucket | None, nbytes_bucket: TokenBucket | None, t: float, nbytes: int
) -> Reason | None:
    if frames is not None and not frames.can_take(t, 1.0):
        return Reason.BUDGET_EXHAUSTED
    if nbytes_bucket is not None and not nbytes_bucket.can_take(t, float(nbytes)):
        return Reason.BYTES_EXHAUSTED
    return None


def check_frame(score: float, timestamp_s: float, nbytes: int) -> None:
    if not (isinstance(score, float | int) and 0.0 <= score <= 1.0):
        raise InvalidScoresError(f"score must be a finite float in [0, 1], got {score!r}")
    if not math.isfinite(timestamp_s):
        raise InvalidScoresError(f"timestamp_s must be finite, got {timestamp_s!r}")
    if not (isinstance(nbytes, int | np.integer) and nbytes >= 0):
        raise InvalidScoresError(f"nbytes must be an int >= 0, got {nbytes!r}")


class BudgetController:
    """Streaming budget controller; see the module docstring for the mechanisms."""

    def __init__(self, config: BudgetConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self._draws = UniformStream(seed)
        self._frames = config.frame_bucket()
        self._bytes = config.byte_bucket()
        self._ring: list[float] = []  # the last `window` scores in arrival order
        self._head = 0  # next slot of _ring to overwrite once it is full
        self._sorted: list[float] = []
        # The previous model's sorted window, used until the new model has ``_refresh`` scores.
        self._stale: list[float] | None = None
        self._models = 0  # model swaps seen
        self._deficit = 0.0  # D, clamped to +-integral_selections
        self._backlog = 0.0  # B: owed beyond the clamp, in [0, backlog limit]
        self._accept = 1.0  # EMA of the share of would-be selections not vetoed downstream
        self._seen = 0
        self._selected = 0
        self._cold_seen = 0
        self._cold_selected = 0
        self._reasons: dict[Reason, int] = dict.fromkeys(Reason, 0)
        self._in_cold_start = config.cold_start
        # Constants of the hot path, derived once from the (frozen, validated) config.
        self._target = float(config.target_rate)
        self._window = config.window
        self._bound = float(config.integral_selections)
        self._limit = self._bound * _BACKLOG_LIMIT
        self._horizon = self._bound / self._target  # H, frames
        self._random_cold_start = config.cold_start_mode == "random"
        self._capped = self._frames is not None or self._bytes is not None
        self._refresh = config.refresh_size() if config.model_change == "refresh" else 0

    # -- read-only views ---------------------------------------------------------------------
    @property
    def frames_seen(self) -> int:
        """Frames committed with :meth:`update`."""
        return self._seen

    @property
    def frames_selected(self) -> int:
        """Frames committed as selected."""
        return self._selected

    @property
    def in_cold_start(self) -> bool:
        """Whether the next frame is decided by the cold-start rule."""
        return self._in_cold_start

    @property
    def model_swaps(self) -> int:
        """How many times :meth:`model_changed` was called."""
        return self._models

    @property
    def scores_in_window(self) -> int:
        """Scores in the window the threshold is taken from (the new model's, once refreshed)."""
        return len(self._sorted if self._stale is None else self._stale)

    @property
    def deficit(self) -> float:
        """Integral state D: selections owed (+) or overspent (-) since frame 0,
        clamped to ``±integral_selections`` (what is owed beyond is :attr:`backlog`)."""
        return self._deficit

    @property
    def backlog(self) -> float:
        """Selections owed beyond the clamp of :attr:`deficit` (B), in
        ``[0, 4 * integral_selections]``; positive only while the deficit is at its clamp."""
        return self._backlog

    @property
    def reason_counts(self) -> Mapping[Reason, int]:
        """Committed frames per reason."""
        return dict(self._reasons)

    @property
    def frame_bucket(self) -> TokenBucket | None:
        """The frames-per-minute bucket (``None`` without a cap); do not mutate."""
        return self._frames

    @property
    def byte_bucket(self) -> TokenBucket | None:
        """The bytes-per-hour bucket (``None`` without a cap); do not mutate."""
        return self._bytes

    def effective_rate(self) -> float:
        """The target rate after the integral correction, in [0, 1]."""
        base = self._target
        deficit = self._deficit
        if deficit > 0.0:  # behind: compensate for the share lost to vetoes
            accept = self._accept
            base /= accept if accept > _MIN_ACCEPT else _MIN_ACCEPT
        if self._horizon == 0.0:
            return base if base < 1.0 else 1.0
        r = base + (deficit + _BACKLOG_GAIN * self._backlog) / self._horizon
        return 1.0 if r > 1.0 else (r if r > 0.0 else 0.0)

    def threshold(self) -> float:
        """Current score threshold: a frame is selected when its score is above it."""
        s = self._sorted if self._stale is None else self._stale
        m = len(s)
        r = self.effective_rate()
        if m == 0:
            return 1.0 - r
        x = (1.0 - r) * (m + 1) - 1.0  # 0-based position among the sorted scores
        if x <= -1.0:
            return 0.0
        if x >= m:
            return 1.0
        i = math.floor(x)
        frac = x - i
        lo = s[i] if i >= 0 else 0.0
        hi = s[i + 1] if i + 1 < m else 1.0
        return lo + (hi - lo) * frac

    # -- decide / update ---------------------------------------------------------------------
    def decide(
        self, score: float, timestamp_s: float, nbytes: int = 0, *, novelty: float | None = None
    ) -> Decision:
        """Decide one frame without changing any state.

        ``novelty`` (in [0, 1]) is needed only during a ``"diversity"`` cold start.
        """
        selected, threshold, reason, draw = self.evaluate(
            score, timestamp_s, nbytes, novelty=novelty
        )
        return Decision(
            selected=selected,
            score=float(score),
            threshold=threshold,
            reason=reason,
            seq=self._seen,
            timestamp_s=float(timestamp_s),
            nbytes=int(nbytes),
            draw=draw,
        )

    def evaluate(
        self, score: float, timestamp_s: float, nbytes: int = 0, *, novelty: float | None = None
    ) -> tuple[bool, float, Reason, float]:
        """:meth:`decide` without building the :class:`Decision`: ``(selected, threshold,
        reason, draw)``, for callers that build their own (saves a dataclass per frame)."""
        check_frame(score, timestamp_s, nbytes)
        return self.evaluate_checked(score, timestamp_s, nbytes, novelty)

    def evaluate_checked(
        self, score: float, timestamp_s: float, nbytes: int, novelty: float | None
    ) -> tuple[bool, float, Reason, float]:
        """:meth:`evaluate` for inputs already checked with :func:`check_frame`."""
        draw = self._draws.peek()
        if self._in_cold_start:
            cfg = self.config
            threshold = self._target
            if self._random_cold_start:
                explore = draw < threshold
            else:
                if novelty is None:
                    raise InvalidScoresError(
                        "novelty is required during a cold start with cold_start_mode='diversity'"
                    )
                threshold = cfg.cold_start_novelty
                explore = novelty >= threshold
            reason = Reason.COLD_START_EXPLORE if explore else Reason.COLD_START_SKIP
        else:
            threshold = self.threshold()
            explore = score > threshold
            reason = Reason.SELECTED if explore else Reason.BELOW_THRESHOLD
        if explore and self._capped:
            capped = cap_reason(self._frames, self._bytes, timestamp_s, nbytes)
            if capped is not None:
                explore, reason = False, capped
        return explore, threshold, reason, draw

    def update(self, decision: Decision) -> None:
        """Commit a decision made by :meth:`decide` for the current frame.

        A downstream veto (e.g. too similar) is committed by passing the decision with
        ``selected=False`` and its reason. Raises :class:`StateError` for a stale decision.
        """
        if decision.seq != self._seen:
            raise StateError(
                f"decision.seq {decision.seq} does not match the next frame {self._seen}; "
                "each decision is committed once, in order"
            )
        selected = decision.selected
        reason = decision.reason
        if self._capped:
            t = decision.timestamp_s
            if selected:
                if self._frames is not None:
                    self._frames.take(t, 1.0)
                if self._bytes is not None:
                    self._bytes.take(t, float(decision.nbytes))
            else:
                if self._frames is not None:
                    self._frames.advance(t)
                if self._bytes is not None:
                    self._bytes.advance(t)
        self._push(decision.score)
        if self._in_cold_start:
            cfg = self.config
            self._cold_seen += 1
            self._cold_selected += selected
            done = (cfg.cold_start_frames > 0 and self._cold_seen >= cfg.cold_start_frames) or (
                cfg.cold_start_min_selected is not None
                and self._cold_selected >= cfg.cold_start_min_selected
            )
            if done:
                self._end_cold_start()
        else:
            self._settle(self._deficit + self._backlog + self._target - (1.0 if selected else 0.0))
            if reason is Reason.SELECTED or reason is Reason.TOO_SIMILAR:
                self._accept += ((1.0 if selected else 0.0) - self._accept) * _ACCEPT_GAIN
        self._seen += 1
        if selected:
            self._selected += 1
        self._reasons[reason] += 1
        self._draws.advance()

    def model_changed(self) -> None:
        """The model that scores the frames changed (a rollout, a rollback, a retrain).

        Scores of different models are not comparable: a retrained model is more confident,
        so the old window's quantile would sit far above the new scores and the budget would
        under-spend until the window refills (``window`` frames). With ``model_change =
        "refresh"`` the old window stays in force only until the new model has scored
        ``refresh_size()`` frames, then the threshold is taken from the new model's scores
        alone. A cold start ends here: a swapped-in model was trained on labels, so its
        scores are the ones to trust. The integral state (what is owed) is kept.
        """
        self._models += 1
        if self._in_cold_start:
            self._end_cold_start()
        if not self._refresh:
            return
        if self._stale is None or len(self._sorted) >= self._refresh:
            self._stale = self._sorted  # else the last full window stays the reference
        self._sorted = []
        self._ring = []
        self._head = 0

    def _end_cold_start(self) -> None:
        """Leave the cold start; the long run counts from frame 0: owe what exploring missed."""
        self._in_cold_start = False
        self._settle(self._target * self._cold_seen - self._cold_selected)

    def _settle(self, owed: float) -> None:
        """Split the selections ``owed`` in all into D (up to its clamp) and the backlog B
        (beyond it, up to its limit); a surplus beyond ``-bound`` is forgotten (anti-windup)."""
        bound = self._bound
        if owed > bound:
            self._deficit = bound
            self._backlog = min(owed - bound, self._limit)
        else:
            self._deficit = owed if owed > -bound else -bound
            self._backlog = 0.0

    def _push(self, score: float) -> None:
        ring = self._ring
        s = self._sorted
        if len(ring) < self._window:
            ring.append(score)
        else:
            head = self._head
            del s[bisect_left(s, ring[head])]
            ring[head] = score
            head += 1
            self._head = 0 if head == self._window else head
        insort(s, score)
        if self._stale is not None and len(s) >= self._refresh:
            self._stale = None  # the new model's scores are enough

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """JSON-able scalars and numeric arrays that restore this controller exactly."""
        draws_header, draws_buf = self._draws.get_state()
        header: dict[str, Any] = {
            "config": self.config.to_json(),
            "seed": self.seed,
            "draws": draws_header,
            "head": self._head,
            "deficit": self._deficit,
            "backlog": self._backlog,
            "accept": self._accept,
            "seen": self._seen,
            "selected": self._selected,
            "cold_seen": self._cold_seen,
            "cold_selected": self._cold_selected,
            "in_cold_start": self._in_cold_start,
            "models": self._models,
            "stale": self._stale is not None,
            "reasons": {str(k): v for k, v in self._reasons.items()},
            "frames_bucket": None if self._frames is None else self._frames.get_state(),
            "bytes_bucket": None if self._bytes is None else self._bytes.get_state(),
        }
        arrays = {"ring": np.asarray(self._ring, dtype=np.float64), "draws": draws_buf}
        if self._stale is not None:
            arrays["stale"] = np.asarray(self._stale, dtype=np.float64)
        return header, arrays

    @classmethod
    def from_state(
        cls, config: BudgetConfig, header: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]
    ) -> BudgetController:
        """Inverse of :meth:`get_state`; the saved config must equal ``config``."""
        if field(header, "config", dict) != config.to_json():
            raise StateError("selector state was saved with a different budget configuration")
        obj = cls(config, seed=field(header, "seed", int))
        obj._draws = UniformStream.from_state(
            field(header, "draws", dict), array(arrays, "draws", np.float64, (None,))
        )
        ring = array(arrays, "ring", np.float64, (None,)).tolist()
        head = field(header, "head", int)
        if len(ring) > config.window or not 0 <= head < max(1, len(ring)):
            raise StateError("corrupt selector state: score window out of range")
        if any(not 0.0 <= s <= 1.0 for s in ring):
            raise StateError("corrupt selector state: score window holds values outside [0, 1]")
        obj._ring = ring
        obj._head = head
        obj._sorted = sorted(ring)
        obj._deficit = float(field(header, "deficit", (int, float)))
        obj._backlog = float(field(header, "backlog", (int, float)))
        obj._accept = float(field(header, "accept", (int, float)))
        if (
            not 0.0 <= obj._accept <= 1.0
            or abs(obj._deficit) > obj._bound
            or not 0.0 <= obj._backlog <= obj._limit
            or (obj._backlog > 0.0 and obj._deficit != obj._bound)
        ):
            raise StateError("corrupt selector state: rate controller out of range")
        obj._seen = field(header, "seen", int)
        obj._selected = field(header, "selected", int)
        obj._cold_seen = field(header, "cold_seen", int)
        obj._cold_selected = field(header, "cold_selected", int)
        obj._in_cold_start = field(header, "in_cold_start", bool)
        obj._models = field(header, "models", int)
        if field(header, "stale", bool):
            stale = array(arrays, "stale", np.float64, (None,)).tolist()
            if len(stale) > config.window or any(not 0.0 <= v <= 1.0 for v in stale):
                raise StateError("corrupt selector state: stale window out of range")
            obj._stale = sorted(stale)
        reasons = field(header, "reasons", dict)
        try:
            obj._reasons = {Reason(k): int(v) for k, v in reasons.items()}
        except ValueError as exc:
            raise StateError(f"corrupt selector state: {exc}") from exc
        for r in Reason:
            obj._reasons.setdefault(r, 0)
        for name, bucket in (("frames_bucket", obj._frames), ("bytes_bucket", obj._bytes)):
            saved = header.get(name)
            if (saved is None) != (bucket is None):
                raise StateError(f"corrupt selector state: {name} does not match the config")
            if bucket is not None and saved is not None:
                bucket.set_state(saved)
        return obj
