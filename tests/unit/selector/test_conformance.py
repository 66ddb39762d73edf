"""One conformance suite, run over every registered strategy and a few configurations."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import numpy as np
import pytest

from selector.budget import BudgetConfig
from selector.decision import Decision, Reason
from selector.registry import STRATEGIES
from selector.stream import DiversityConfig, FrameScores, Selector, SelectorConfig
from tests.unit.selector.streams import video_stream

DIV = DiversityConfig(
    capacity=64, dim=16, time_scale_s=20.0, space_scale_m=30.0, similar_threshold=0.08
)
CONFIGS = {
    "entropy-veto": SelectorConfig(
        budget=BudgetConfig(target_rate=0.1, window=100, cold_start_frames=50), diversity=DIV
    ),
    "margin-geometric-caps": SelectorConfig(
        budget=BudgetConfig(
            target_rate=0.05,
            window=100,
            cold_start_frames=80,
            cold_start_mode="diversity",
            max_frames_per_minute=12.0,
            burst_frames=2.0,
            max_bytes_per_hour=2e6,
        ),
        uncertainty_method="margin",
        sensor_fusion="product",
        combine_rule="geometric",
        diversity=DiversityConfig(capacity=32, dim=16, eviction="reservoir"),
    ),
    "least-confidence-no-diversity": SelectorConfig(
        budget=BudgetConfig(target_rate=0.2, window=50, cold_start_frames=0),
        uncertainty_method="least_confidence",
        sensor_fusion="weighted_mean",
        camera_weight=0.3,
        diversity=None,
    ),
}
FRAMES = video_stream(600, seed=8, stop_every=150)
CASES = [(s, c) for s in sorted(STRATEGIES) for c in CONFIGS]


def _run(sel: Selector, frames: list[FrameScores]) -> Iterator[Decision]:
    for f in frames:
        d = sel.decide(f)
        sel.update(d, f)
        yield d


@pytest.fixture(params=CASES, ids=[f"{s}-{c}" for s, c in CASES])
def case(request: pytest.FixtureRequest) -> tuple[str, SelectorConfig]:
    strategy, config = request.param
    return strategy, CONFIGS[config]


def test_inputs_not_mutated(case: tuple[str, SelectorConfig]) -> None:
    name, cfg = case
    frames = copy.deepcopy(FRAMES[:200])
    sel = STRATEGIES[name].build(cfg, 1)
    list(_run(sel, frames))
    for got, want in zip(frames, FRAMES[:200], strict=True):
        assert got.timestamp_s == want.timestamp_s
        assert got.position == want.position
        for attr in ("camera_probs", "lidar_probs", "embedding"):
            np.testing.assert_array_equal(getattr(got, attr), getattr(want, attr))


def test_decide_is_pure(case: tuple[str, SelectorConfig]) -> None:
    name, cfg = case
    sel = STRATEGIES[name].build(cfg, 2)
    for i, f in enumerate(FRAMES[:300]):
        if i % 25 == 0:
            before = sel.state_bytes()
            assert sel.decide(f) == sel.decide(f)
            assert sel.state_bytes() == before
        sel.update(sel.decide(f), f)


def test_same_seed_same_decisions(case: tuple[str, SelectorConfig]) -> None:
    name, cfg = case
    a = list(_run(STRATEGIES[name].build(cfg, 3), FRAMES))
    b = list(_run(STRATEGIES[name].build(cfg, 3), FRAMES))
    assert a == b
    c = list(_run(STRATEGIES[name].build(cfg, 4), FRAMES))
    if name == "random" or (
        cfg.budget.cold_start_frames and cfg.budget.cold_start_mode == "random"
    ):
        assert [d.selected for d in a] != [d.selected for d in c]


def test_scores_finite_and_bounded(case: tuple[str, SelectorConfig]) -> None:
    name, cfg = case
    decisions = list(_run(STRATEGIES[name].build(cfg, 5), FRAMES))
    for d in decisions:
        assert isinstance(d.reason, Reason)
        assert math.isfinite(d.score)
        assert 0.0 <= d.score <= 1.0
        assert math.isfinite(d.threshold)
        assert 0.0 <= d.threshold <= 1.0
        for _, value in d.components:
            assert math.isfinite(value)
            assert 0.0 <= value <= 1.0
        assert d.selected == (d.reason in (Reason.SELECTED, Reason.COLD_START_EXPLORE))
    assert any(d.selected for d in decisions)
    assert [d.seq for d in decisions] == list(range(len(FRAMES)))


def test_rate_and_caps_respected(case: tuple[str, SelectorConfig]) -> None:
    name, cfg = case
    decisions = list(_run(STRATEGIES[name].build(cfg, 6), FRAMES))
    times = np.array([d.timestamp_s for d in decisions if d.selected])
    assert times.size <= 2.5 * cfg.budget.target_rate * len(FRAMES) + 5
    if cfg.budget.max_frames_per_minute is not None:
        rate = cfg.budget.max_frames_per_minute / 60.0
        for i in range(times.size):
            count = np.arange(1, times.size - i + 1)
            assert np.all(count <= cfg.budget.burst_frames + rate * (times[i:] - times[i]) + 1e-9)


def test_state_round_trip(case: tuple[str, SelectorConfig]) -> None:
    name, cfg = case
    sel = STRATEGIES[name].build(cfg, 7)
    list(_run(sel, FRAMES[:300]))
    data = sel.state_bytes()
    restored = STRATEGIES[name].restore(cfg, data)
    assert restored.state_bytes() == data
    assert list(_run(sel, FRAMES[300:])) == list(_run(restored, FRAMES[300:]))
