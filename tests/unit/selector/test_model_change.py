"""A model swap: the budget's score window is refreshed, a cold start ends, the memory of
embeddings from the old model is dropped, and all of it survives a save and restore."""

from __future__ import annotations

import numpy as np
import pytest

from selector.baseline import RandomSelector
from selector.budget import BudgetConfig, BudgetController
from selector.decision import Reason
from selector.errors import InvalidConfigError, InvalidScoresError, StateError
from selector.stream import (
    DiversityConfig,
    FrameScores,
    MemoryLayout,
    SelectorConfig,
    StreamSelector,
)


def _feed(bc: BudgetController, scores: np.ndarray, t0: float = 0.0) -> int:
    picked = 0
    for i, s in enumerate(scores.tolist()):
        d = bc.decide(s, t0 + i / 10.0, 0)
        bc.update(d)
        picked += d.selected
    return picked


def _swap_rates(model_change: str) -> float:
    """Selection rate in the 500 frames after a swap to a model whose scores are all lower."""
    cfg = BudgetConfig(target_rate=0.05, integral_selections=0.0, model_change=model_change)  # type: ignore[arg-type]
    bc = BudgetController(cfg, seed=3)
    rng = np.random.default_rng(0)
    _feed(bc, rng.uniform(0.5, 1.0, 2000))  # the old model: unsure of everything
    bc.model_changed()
    return _feed(bc, rng.uniform(0.0, 0.5, 500), t0=200.0) / 500


def test_refresh_spends_the_budget_right_after_a_swap() -> None:
    # With the integral correction off, only the window decides: the old model's window
    # keeps every new score below its threshold, the refreshed one selects at the target.
    refreshed = _swap_rates("refresh")
    kept = _swap_rates("keep")
    assert refreshed == pytest.approx(0.05, abs=0.02)
    assert kept < 0.01


def test_the_old_window_stays_until_the_new_model_has_enough_scores() -> None:
    cfg = BudgetConfig(target_rate=0.1, window=100, integral_selections=0.0)
    assert cfg.refresh_size() == 20
    bc = BudgetController(cfg, seed=0)
    _feed(bc, np.linspace(0.0, 1.0, 100))
    before = bc.threshold()
    bc.model_changed()
    assert bc.model_swaps == 1
    assert bc.threshold() == pytest.approx(before)  # no new score yet: the old reference
    new = np.linspace(0.0, 0.1, 20)
    _feed(bc, new[:19], t0=20.0)
    assert bc.scores_in_window == 100  # still the old window
    _feed(bc, new[19:], t0=30.0)
    assert bc.scores_in_window == 20
    assert bc.threshold() < 0.1 < before


def test_a_second_swap_before_the_refresh_keeps_the_last_full_window() -> None:
    bc = BudgetController(BudgetConfig(target_rate=0.1, window=100), seed=0)
    _feed(bc, np.linspace(0.0, 1.0, 100))
    reference = bc.threshold()
    bc.model_changed()
    _feed(bc, np.full(5, 0.01), t0=20.0)
    bc.model_changed()
    assert bc.threshold() == pytest.approx(reference)


def test_a_swap_ends_the_cold_start_and_owes_what_it_missed() -> None:
    bc = BudgetController(BudgetConfig(target_rate=0.1, cold_start_frames=1000), seed=0)
    _feed(bc, np.full(100, 0.5))
    assert bc.in_cold_start
    bc.model_changed()
    assert not bc.in_cold_start
    d = bc.decide(0.5, 100.0, 0)
    assert d.reason not in (Reason.COLD_START_EXPLORE, Reason.COLD_START_SKIP)


def test_no_cold_start_by_default() -> None:
    bc = BudgetController(BudgetConfig(target_rate=0.1), seed=0)
    assert not bc.in_cold_start
    assert bc.decide(0.5, 0.0, 0).reason in (Reason.SELECTED, Reason.BELOW_THRESHOLD)


def test_refresh_scores_is_validated() -> None:
    with pytest.raises(InvalidConfigError, match="refresh_scores"):
        BudgetConfig(target_rate=0.1, window=50, refresh_scores=51)
    with pytest.raises(InvalidConfigError, match="model_change"):
        BudgetConfig(target_rate=0.1, model_change="forget")  # type: ignore[arg-type]


def _frame(i: int, rng: np.random.Generator) -> FrameScores:
    p = rng.dirichlet(np.ones(4))
    return FrameScores(
        timestamp_s=i / 10.0, camera_probs=p, position=(i * 1.0, 0.0), embedding=rng.normal(size=8)
    )


def _selector() -> StreamSelector:
    cfg = SelectorConfig(
        budget=BudgetConfig(target_rate=0.3, window=50), diversity=DiversityConfig(dim=8)
    )
    return StreamSelector(cfg, seed=5)


def _run(sel: StreamSelector, start: int, n: int, seed: int) -> list[bool]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        f = _frame(i, rng)
        d = sel.decide(f)
        sel.update(d, f)
        out.append(d.selected)
    return out


def test_a_retrained_model_empties_the_memory_a_same_space_swap_keeps_it() -> None:
    sel = _selector()
    _run(sel, 0, 100, seed=1)
    assert sel.memory is not None
    assert len(sel.memory) > 0
    sel.model_changed(embedding_changed=False)
    assert len(sel.memory) > 0
    sel.model_changed()
    assert sel.memory is None  # rebuilt at the next selection, sized to the new embedding
    _run(sel, 100, 50, seed=2)
    assert sel.memory is not None
    assert 0 < len(sel.memory) <= 50


def test_state_round_trip_in_the_middle_of_a_refresh() -> None:
    sel = _selector()
    _run(sel, 0, 100, seed=1)
    sel.model_changed(embedding_changed=False)
    _run(sel, 100, 5, seed=2)  # fewer than refresh_size(): the old window is in force
    restored = StreamSelector.from_state(sel.config, sel.state_bytes())
    assert restored.budget.scores_in_window == sel.budget.scores_in_window
    assert _run(restored, 105, 60, seed=3) == _run(sel, 105, 60, seed=3)


def test_random_selector_ignores_a_model_change() -> None:
    sel = RandomSelector(BudgetConfig(target_rate=0.5), seed=1)
    before = sel.state_bytes()
    sel.model_changed()
    assert sel.state_bytes() == before


def test_default_config_runs_without_position_or_timestamp_and_any_embedding_size() -> None:
    cfg = SelectorConfig(budget=BudgetConfig(target_rate=0.2))
    assert cfg.diversity is not None
    assert cfg.diversity.dim is None
    sel = StreamSelector(cfg, seed=0)
    rng = np.random.default_rng(0)
    picked = 0
    for _ in range(300):
        f = FrameScores(camera_probs=rng.dirichlet(np.ones(3)), embedding=rng.normal(size=37))
        d = sel.decide(f)
        sel.update(d, f)
        picked += d.selected
    assert sel.layout is not None
    assert (sel.layout.dim, sel.layout.position, sel.layout.embedding) == (37, False, True)
    assert sel.memory is not None
    assert sel.memory.weights[1] == pytest.approx(0.0)
    assert 30 < picked < 90
    restored = StreamSelector.from_state(cfg, sel.state_bytes())
    f = FrameScores(camera_probs=np.array([0.4, 0.3, 0.3]), embedding=rng.normal(size=37))
    assert restored.decide(f) == sel.decide(f)


def test_a_frame_missing_what_the_memory_measures_is_named() -> None:
    sel = StreamSelector(SelectorConfig(budget=BudgetConfig(target_rate=1.0)), seed=0)
    first = FrameScores(
        0.0, camera_probs=np.array([0.5, 0.5]), position=(0.0, 0.0), embedding=np.ones(4)
    )
    sel.update(sel.decide(first), first)
    with pytest.raises(InvalidScoresError, match=r"frame\.position is missing"):
        sel.decide(FrameScores(0.1, camera_probs=np.array([0.5, 0.5]), embedding=np.ones(4)))
    with pytest.raises(InvalidScoresError, match=r"frame\.embedding is missing"):
        sel.decide(FrameScores(0.1, camera_probs=np.array([0.5, 0.5]), position=(1.0, 0.0)))


def test_frames_without_embedding_are_measured_in_time_only() -> None:
    sel = StreamSelector(SelectorConfig(budget=BudgetConfig(target_rate=1.0)), seed=0)
    first = FrameScores(0.0, camera_probs=np.array([0.5, 0.5]))
    sel.update(sel.decide(first), first)
    again = sel.decide(FrameScores(0.1, camera_probs=np.array([0.5, 0.5])))
    assert again.reason is Reason.TOO_SIMILAR  # 0.1 s later, nothing else to tell them apart
    later = sel.decide(FrameScores(60.0, camera_probs=np.array([0.5, 0.5])))
    assert later.selected


def test_random_selector_takes_the_stream_selector_config() -> None:
    cfg = SelectorConfig(budget=BudgetConfig(target_rate=0.5))
    a, b = RandomSelector(cfg, seed=2), RandomSelector(cfg.budget, seed=2)
    f = FrameScores()
    assert a.decide(f) == b.decide(f)
    assert RandomSelector.from_state(cfg, a.state_bytes()).decide(f) == a.decide(f)


def test_ensure_memory_preloads_and_refuses_another_layout() -> None:
    sel = StreamSelector(SelectorConfig(budget=BudgetConfig(target_rate=0.5)), seed=0)
    memory = sel.ensure_memory(MemoryLayout(2, position=True, embedding=True))
    memory.add(0.0, (0.0, 0.0), np.array([1.0, 0.0]))
    near = FrameScores(
        0.1, camera_probs=np.array([0.5, 0.5]), position=(0.0, 0.0), embedding=np.array([1.0, 0.0])
    )
    assert sel.decide(near).reason is Reason.TOO_SIMILAR  # the pre-loaded frame counts
    with pytest.raises(StateError, match="layout"):
        sel.ensure_memory(MemoryLayout(3, position=True, embedding=True))
    with pytest.raises(StateError, match="no diversity memory"):
        StreamSelector(SelectorConfig(budget=BudgetConfig(0.5), diversity=None)).ensure_memory(
            MemoryLayout(2, position=True, embedding=True)
        )
