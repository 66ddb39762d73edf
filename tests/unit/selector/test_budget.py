"""BudgetController and TokenBucket: rate on stationary and shifting streams, hard caps,
cold start, validation, and a stateful model of the controller."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from selector.budget import BudgetConfig, BudgetController, TokenBucket
from selector.decision import Decision, Reason
from selector.errors import InvalidConfigError, InvalidScoresError, StateError


def _run(
    controller: BudgetController,
    scores: np.ndarray,
    *,
    fps: float = 10.0,
    nbytes: int | np.ndarray = 1000,
) -> list[Decision]:
    sizes = np.broadcast_to(np.asarray(nbytes), scores.shape)
    out = []
    for i, (s, b) in enumerate(zip(scores.tolist(), sizes.tolist(), strict=True)):
        d = controller.decide(s, i / fps, b)
        controller.update(d)
        out.append(d)
    return out


@pytest.mark.parametrize("target", [0.01, 0.05, 0.10])
def test_stationary_rate_within_5_percent(target: float) -> None:
    scores = np.random.default_rng(11).beta(2.0, 5.0, 20_000)
    decisions = _run(BudgetController(BudgetConfig(target_rate=target), seed=1), scores)
    rate = np.mean([d.selected for d in decisions])
    assert rate == pytest.approx(target, rel=0.05)


@pytest.mark.parametrize("target", [0.05, 0.10])
@pytest.mark.parametrize("after", [(5.0, 2.0), (1.0, 8.0)], ids=["scores-up", "scores-down"])
def test_abrupt_shift_recovers_within_2000_frames(
    target: float, after: tuple[float, float]
) -> None:
    """Scores jump to another distribution at frame 10,000; the rate over frames
    [12,000, 14,000) is within +-10 % (relative) of the target.

    Not asserted at 1 %: a 2,000-frame window then holds 20 expected selections, whose
    counting noise alone is about +-20 %.
    """
    rng = np.random.default_rng(5)
    scores = np.concatenate([rng.beta(2.0, 5.0, 10_000), rng.beta(*after, 10_000)])
    decisions = _run(BudgetController(BudgetConfig(target_rate=target), seed=2), scores)
    selected = np.array([d.selected for d in decisions])
    assert selected[12_000:14_000].mean() == pytest.approx(target, rel=0.10)


def test_integral_correction_makes_up_for_downstream_vetoes() -> None:
    """A downstream veto refusing every third selection: the long-run rate still hits target."""
    target = 0.05
    bc = BudgetController(BudgetConfig(target_rate=target), seed=3)
    scores = np.random.default_rng(3).beta(2.0, 5.0, 20_000)
    selected = 0
    would = 0
    for i, s in enumerate(scores.tolist()):
        d = bc.decide(s, i / 10.0, 100)
        if d.reason is Reason.SELECTED:
            would += 1
            if would % 3 == 0:
                d = Decision(
                    False,
                    d.score,
                    d.threshold,
                    Reason.TOO_SIMILAR,
                    d.seq,
                    d.timestamp_s,
                    d.nbytes,
                    d.draw,
                )
        bc.update(d)
        selected += d.selected
    assert selected / scores.size == pytest.approx(target, rel=0.02)


def _wandering_level(n: int, seed: int) -> np.ndarray:
    """Scores around a slowly wandering level (AR(1), phi 0.995, like a scene in a video):
    for hundreds of frames at a time the window holds scores from another level."""
    rng = np.random.default_rng(seed)
    level = np.empty(n)
    x = 0.0
    for i in range(n):
        x = 0.995 * x + rng.normal() * math.sqrt(1.0 - 0.995**2)
        level[i] = x
    out: np.ndarray = 1.0 / (1.0 + np.exp(-(level + 0.5 * rng.normal(size=n))))
    return out


@pytest.mark.parametrize("target", [0.05, 0.10])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_long_run_rate_on_a_correlated_stream(target: float, seed: int) -> None:
    """The deficit a lagging window causes is kept in the backlog and paid back: within 6 %
    (forgetting it beyond the clamp, as before the backlog, left the rate 13-26 % short)."""
    scores = _wandering_level(20_000, seed)
    bc = BudgetController(BudgetConfig(target_rate=target), seed=1)
    decisions = _run(bc, scores)
    assert np.mean([d.selected for d in decisions]) == pytest.approx(target, rel=0.06)
    assert abs(bc.deficit) <= 20.0
    assert 0.0 <= bc.backlog <= 4 * 20.0


def test_backlog_only_beyond_the_clamp_and_bounded() -> None:
    """Nothing is ever selected: D fills to its clamp, then B to its limit, then stops."""
    cfg = BudgetConfig(target_rate=0.1, integral_selections=5.0, cold_start_frames=0)
    bc = BudgetController(cfg, seed=0)
    for i in range(2_000):
        d = bc.decide(0.0, i / 10.0)  # a score of 0 never beats the threshold
        assert not d.selected
        bc.update(d)
        owed = 0.1 * (i + 1)
        assert bc.deficit == pytest.approx(min(owed, 5.0))
        assert bc.backlog == pytest.approx(min(max(owed - 5.0, 0.0), 20.0))
    assert bc.effective_rate() == 1.0  # 0.1 + (5 + 4 * 20) / 50, clipped


def test_cold_start_shortfall_is_owed_afterwards() -> None:
    """Vetoes during the cold start: what it missed of target_rate * frames is owed after."""
    cfg = BudgetConfig(target_rate=0.1, cold_start_frames=100)
    bc = BudgetController(cfg, seed=4)
    explored = 0
    for i in range(100):
        d = bc.decide(0.5, i / 10.0)
        if d.selected:
            explored += 1
            d = Decision(False, d.score, d.threshold, Reason.TOO_SIMILAR, d.seq, d.timestamp_s)
        bc.update(d)
    assert explored > 0
    assert not bc.in_cold_start
    assert bc.deficit == pytest.approx(0.1 * 100)
    assert bc.backlog == 0.0


def _check_never_exceeded(
    times: np.ndarray, amounts: np.ndarray, rate: float, burst: float
) -> None:
    """For every window [times[i], times[j]] of committed takes: sum <= burst + rate * span."""
    csum = np.concatenate([[0.0], np.cumsum(amounts)])
    for i in range(times.size):
        spent = csum[i + 1 :] - csum[i]
        allowed = burst + rate * (times[i:] - times[i]) + 1e-6
        assert np.all(spent <= allowed), f"window starting at take {i} overspent"


def test_frame_bucket_never_exceeded_over_any_window() -> None:
    cfg = BudgetConfig(
        target_rate=0.5, max_frames_per_minute=30.0, burst_frames=5.0, cold_start_frames=0
    )
    scores = np.random.default_rng(1).uniform(size=6_000)
    decisions = _run(BudgetController(cfg, seed=1), scores, fps=10.0)
    times = np.array([d.timestamp_s for d in decisions if d.selected])
    assert any(d.reason is Reason.BUDGET_EXHAUSTED for d in decisions)
    _check_never_exceeded(times, np.ones(times.size), 30.0 / 60.0, 5.0)


def test_byte_bucket_never_exceeded_over_any_window() -> None:
    cfg = BudgetConfig(
        target_rate=0.3, max_bytes_per_hour=3.6e6, burst_bytes=20_000.0, cold_start_frames=0
    )
    rng = np.random.default_rng(2)
    scores = rng.uniform(size=6_000)
    sizes = rng.integers(500, 8_000, size=6_000)
    decisions = _run(BudgetController(cfg, seed=1), scores, fps=10.0, nbytes=sizes)
    sel = [d for d in decisions if d.selected]
    assert any(d.reason is Reason.BYTES_EXHAUSTED for d in decisions)
    _check_never_exceeded(
        np.array([d.timestamp_s for d in sel]),
        np.array([d.nbytes for d in sel], float),
        1000.0,
        20_000.0,
    )


def test_token_bucket_refills_and_caps() -> None:
    b = TokenBucket(rate_per_s=2.0, burst=4.0)
    for _ in range(4):
        b.take(0.0, 1.0)
    assert not b.can_take(0.0, 1.0)
    assert b.available(1.0) == pytest.approx(2.0)
    assert b.available(100.0) == pytest.approx(4.0)
    assert b.available(-5.0) == 0.0  # time never runs backwards
    with pytest.raises(StateError):
        b.take(0.1, 1.0)


@pytest.mark.parametrize("mode", ["random", "diversity"])
def test_cold_start_selects_only_by_its_exploration_rule(mode: str) -> None:
    target = 0.1
    cfg = BudgetConfig(
        target_rate=target,
        cold_start_frames=300,
        cold_start_mode=mode,  # type: ignore[arg-type]
        cold_start_novelty=0.7,
    )
    bc = BudgetController(cfg, seed=9)
    rng = np.random.default_rng(9)
    for i in range(300):
        score, novelty = float(rng.uniform()), float(rng.uniform())
        d = bc.decide(score, i / 10.0, 10, novelty=novelty)
        assert d.reason in (Reason.COLD_START_EXPLORE, Reason.COLD_START_SKIP)
        expected = d.draw < target if mode == "random" else novelty >= 0.7
        assert d.selected == expected
        bc.update(d)
    assert not bc.in_cold_start
    d = bc.decide(0.5, 30.0, 10, novelty=0.5)
    assert d.reason in (Reason.SELECTED, Reason.BELOW_THRESHOLD)


def test_cold_start_ends_at_min_selected() -> None:
    cfg = BudgetConfig(target_rate=0.5, cold_start_frames=1000, cold_start_min_selected=3)
    bc = BudgetController(cfg, seed=0)
    decisions = _run(bc, np.full(100, 0.5))
    explored = [d for d in decisions if d.reason is Reason.COLD_START_EXPLORE]
    assert len(explored) == 3
    first_after = decisions.index(explored[-1]) + 1
    assert all(
        d.reason not in (Reason.COLD_START_EXPLORE, Reason.COLD_START_SKIP)
        for d in decisions[first_after:]
    )


def test_diversity_cold_start_requires_novelty() -> None:
    bc = BudgetController(
        BudgetConfig(target_rate=0.1, cold_start_frames=100, cold_start_mode="diversity"), seed=0
    )
    with pytest.raises(InvalidScoresError, match="novelty"):
        bc.decide(0.5, 0.0, 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target_rate": 0.0}, "target_rate"),
        ({"target_rate": 1.5}, "target_rate"),
        ({"target_rate": float("nan")}, "target_rate"),
        ({"window": 5}, "window"),
        ({"integral_selections": -1.0}, "integral_selections"),
        ({"max_frames_per_minute": 0.0}, "max_frames_per_minute"),
        ({"burst_frames": 0.5}, "burst_frames"),
        ({"max_bytes_per_hour": -1.0}, "max_bytes_per_hour"),
        ({"burst_bytes": 0.0}, "burst_bytes"),
        ({"cold_start_frames": -1}, "cold_start_frames"),
        ({"cold_start_min_selected": 0}, "cold_start_min_selected"),
        ({"cold_start_mode": "greedy"}, "cold_start_mode"),
        ({"cold_start_novelty": 2.0}, "cold_start_novelty"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"target_rate": 0.1, **kwargs}
    with pytest.raises(InvalidConfigError, match=field):
        BudgetConfig(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan"), float("inf")])
def test_invalid_scores_rejected(bad: float) -> None:
    bc = BudgetController(BudgetConfig(target_rate=0.1), seed=0)
    with pytest.raises(InvalidScoresError):
        bc.decide(bad, 0.0, 0)


def test_stale_decision_rejected() -> None:
    bc = BudgetController(BudgetConfig(target_rate=0.1), seed=0)
    d = bc.decide(0.5, 0.0, 0)
    bc.update(d)
    with pytest.raises(StateError, match="seq"):
        bc.update(d)


class BudgetMachine(RuleBasedStateMachine):
    """Random streams of frames through a controller with both caps; invariants after each."""

    @initialize(
        rate=st.sampled_from([0.01, 0.1, 0.5, 1.0]),
        cold=st.integers(0, 30),
        mode=st.sampled_from(["random", "diversity"]),
        seed=st.integers(0, 1000),
    )
    def setup(self, rate: float, cold: int, mode: str, seed: int) -> None:
        self.cfg = BudgetConfig(
            target_rate=rate,
            window=20,
            cold_start_frames=cold,
            cold_start_mode=mode,  # type: ignore[arg-type]
            max_frames_per_minute=60.0,
            burst_frames=3.0,
            max_bytes_per_hour=3.6e5,
            burst_bytes=5000.0,
        )
        self.bc = BudgetController(self.cfg, seed=seed)
        self.t = 0.0
        self.selected = 0

    @rule(
        score=st.floats(0.0, 1.0),
        novelty=st.floats(0.0, 1.0),
        dt=st.floats(0.0, 5.0),
        nbytes=st.integers(0, 6000),
        veto=st.booleans(),
    )
    def frame(self, score: float, novelty: float, dt: float, nbytes: int, veto: bool) -> None:
        self.t += dt
        before = self.bc.get_state()
        d = self.bc.decide(score, self.t, nbytes, novelty=novelty)
        assert self.bc.decide(score, self.t, nbytes, novelty=novelty) == d
        after = self.bc.get_state()
        assert before[0] == after[0]
        for key in before[1]:
            np.testing.assert_array_equal(before[1][key], after[1][key])
        assert math.isfinite(d.threshold)
        assert 0.0 <= d.threshold <= 1.0
        if veto and d.selected:
            d = Decision(
                False,
                d.score,
                d.threshold,
                Reason.TOO_SIMILAR,
                d.seq,
                d.timestamp_s,
                d.nbytes,
                d.draw,
            )
        self.bc.update(d)
        self.selected += d.selected

    @invariant()
    def counters_consistent(self) -> None:
        bc = self.bc
        counts = bc.reason_counts
        assert sum(counts.values()) == bc.frames_seen
        assert bc.frames_selected == self.selected
        assert bc.frames_selected == counts[Reason.SELECTED] + counts[Reason.COLD_START_EXPLORE]
        assert abs(bc.deficit) <= self.cfg.integral_selections
        assert 0.0 <= bc.effective_rate() <= 1.0
        assert 0.0 <= bc.threshold() <= 1.0

    @invariant()
    def buckets_in_range(self) -> None:
        for bucket in (self.bc.frame_bucket, self.bc.byte_bucket):
            assert bucket is not None
            assert 0.0 <= bucket.tokens <= bucket.burst


TestBudgetMachine = BudgetMachine.TestCase
TestBudgetMachine.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
