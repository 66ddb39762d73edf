"""DiversityMemory: exact pruned novelty (against brute force), eviction, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.diversity import EMPTY_NOVELTY, DiversityMemory
from selector.errors import InvalidConfigError, InvalidScoresError

DIM = 8


def _memory(capacity: int, eviction: str = "fifo", **kw: object) -> DiversityMemory:
    args: dict[str, object] = {
        "time_scale_s": 10.0,
        "space_scale_m": 50.0,
        "weights": (0.25, 0.25, 0.5),
        "similar_threshold": 0.05,
        "eviction": eviction,
        "seed": 3,
    }
    args.update(kw)
    return DiversityMemory(capacity, DIM, **args)  # type: ignore[arg-type]


def _drive(
    rng: np.random.Generator, n: int, *, correlated: bool
) -> list[tuple[float, tuple[float, float, float], np.ndarray]]:
    """Frames along a wandering path: time steps, positions, embeddings (AR(1) if correlated)."""
    out = []
    t = 0.0
    xy = np.zeros(2)
    z = rng.normal(size=DIM)
    for _ in range(n):
        t += float(rng.exponential(2.0))
        xy = xy + rng.normal(0.0, 15.0, size=2)
        z = 0.9 * z + 0.45 * rng.normal(size=DIM) if correlated else rng.normal(size=DIM)
        out.append((t, (float(xy[0]), float(xy[1]), float(rng.normal())), z.copy()))
    return out


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    capacity=st.integers(1, 40),
    n_add=st.integers(0, 120),
    eviction=st.sampled_from(["fifo", "reservoir"]),
    correlated=st.booleans(),
    weights=st.sampled_from(
        [
            (0.25, 0.25, 0.5),
            (0.6, 0.3, 0.1),
            (0.1, 0.1, 0.8),
            (0.0, 0.5, 0.5),
            (0.5, 0.0, 0.5),
            (1.0, 0.0, 0.0),
        ]
    ),
)
def test_pruned_novelty_equals_brute_force(
    seed: int,
    capacity: int,
    n_add: int,
    eviction: str,
    correlated: bool,
    weights: tuple[float, float, float],
) -> None:
    rng = np.random.default_rng(seed)
    mem = _memory(capacity, eviction, weights=weights)
    frames = _drive(rng, n_add + 30, correlated=correlated)
    for t, p, e in frames[:n_add]:
        mem.add(t, p, e)
    assert len(mem) == min(capacity, n_add)
    queries = frames[n_add:] + [
        (
            frames[k][0] + float(rng.normal(0, 3)),
            frames[k][1],
            frames[k][2] + rng.normal(0, 0.3, DIM),
        )
        for k in rng.integers(0, len(frames), 20)
    ]
    for t, p, e in queries:
        got = mem.novelty(t, p, e)
        want = mem.brute_force_novelty(t, p, e)
        assert got.value == pytest.approx(want, abs=1e-6)
        for cap in (0.05, 0.3):
            capped = mem.novelty(t, p, e, cap=cap).value
            assert capped == pytest.approx(min(want, cap), abs=1e-6)
        wt, ws, wf = mem.weights
        assert got.value == pytest.approx(
            wt * got.d_time + ws * got.d_space + wf * got.d_feature, abs=1e-9
        )


def test_large_memory_exact_on_all_paths() -> None:
    """Capacity 2,000 with wraparound: near, far in time, far in space, novel features."""
    rng = np.random.default_rng(7)
    for eviction in ("fifo", "reservoir"):
        mem = _memory(2000, eviction)
        frames = _drive(rng, 5000, correlated=True)
        for t, p, e in frames:
            mem.add(t, p, e)
        assert len(mem) == 2000
        last_t = frames[-1][0]
        queries = [
            (last_t + 1.0, frames[-1][1], frames[-1][2]),  # recent and the same
            (last_t + 1e4, (1e6, 0.0, 0.0), rng.normal(size=DIM)),  # far away, full pass
            (frames[100][0] + 0.5, frames[100][1], frames[100][2]),  # an old (evicted?) place
            (last_t + 1e4, frames[-500][1], frames[-500][2]),  # old place, late: spatial grid
        ] + [
            (float(rng.uniform(0, last_t)), tuple(rng.normal(0, 500, 3)), rng.normal(size=DIM))
            for _ in range(50)
        ]
        for t, p, e in queries:
            assert mem.novelty(t, p, e).value == pytest.approx(
                mem.brute_force_novelty(t, p, e), abs=1e-6
            )


def test_empty_memory_is_fully_novel() -> None:
    mem = _memory(4)
    assert mem.novelty(0.0, (0.0, 0.0), np.ones(DIM)) == EMPTY_NOVELTY


def test_car_waiting_at_a_light_is_too_similar() -> None:
    mem = _memory(10)
    emb = np.linspace(1.0, 2.0, DIM)
    mem.add(100.0, (10.0, 20.0, 0.0), emb)
    nov = mem.novelty(101.0, (10.2, 20.0, 0.0), emb * 1.01)
    assert mem.is_too_similar(nov.value)
    moved = mem.novelty(160.0, (400.0, 20.0, 0.0), -emb)
    assert not mem.is_too_similar(moved.value)
    assert moved.value == pytest.approx(1.0)


def test_novelty_does_not_mutate() -> None:
    rng = np.random.default_rng(1)
    mem = _memory(50, "reservoir")
    for t, p, e in _drive(rng, 80, correlated=False):
        mem.add(t, p, e)
    before = mem.get_state()
    emb = rng.normal(size=DIM)
    pos = np.array([1.0, 2.0, 3.0])
    emb_copy, pos_copy = emb.copy(), pos.copy()
    for _ in range(3):
        mem.novelty(50.0, pos, emb)
    after = mem.get_state()
    assert before[0] == after[0]
    for key in before[1]:
        np.testing.assert_array_equal(before[1][key], after[1][key])
    np.testing.assert_array_equal(emb, emb_copy)
    np.testing.assert_array_equal(pos, pos_copy)


def test_fifo_keeps_the_latest_and_reservoir_is_seeded() -> None:
    rng = np.random.default_rng(2)
    frames = _drive(rng, 100, correlated=False)
    fifo = _memory(10)
    for t, p, e in frames:
        fifo.add(t, p, e)
    _, arrays = fifo.get_state()
    assert sorted(arrays["t"].tolist()) == [f[0] for f in frames[-10:]]
    states = []
    for _ in range(2):
        res = _memory(10, "reservoir")
        kept = [res.add(t, p, e) for t, p, e in frames]
        assert sum(kept) >= 10
        states.append(sorted(res.get_state()[1]["t"].tolist()))
    assert states[0] == states[1]


def test_state_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(4)
    frames = _drive(rng, 60, correlated=True)
    a = _memory(20, "reservoir")
    for t, p, e in frames[:30]:
        a.add(t, p, e)
    b = _memory(20, "reservoir")
    b.restore(*a.get_state())
    for t, p, e in frames[30:]:
        assert a.add(t, p, e) == b.add(t, p, e)
        assert a.novelty(t + 1, p, e) == b.novelty(t + 1, p, e)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"weights": (0.5, 0.5, 0.5)}, "weights"),
        ({"weights": (-0.5, 1.0, 0.5)}, "weights"),
        ({"time_scale_s": 0.0}, "time_scale_s"),
        ({"space_scale_m": float("nan")}, "space_scale_m"),
        ({"similar_threshold": 1.5}, "similar_threshold"),
        ({"eviction": "lru"}, "eviction"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfigError, match=field):
        _memory(10, **kwargs)  # type: ignore[arg-type]


def test_invalid_inputs() -> None:
    mem = _memory(4)
    with pytest.raises(InvalidScoresError, match="embedding"):
        mem.novelty(0.0, (0.0, 0.0), np.zeros(DIM))
    with pytest.raises(InvalidScoresError, match="embedding"):
        mem.novelty(0.0, (0.0, 0.0), np.ones(DIM + 1))
    with pytest.raises(InvalidScoresError, match="position"):
        mem.novelty(0.0, (0.0,), np.ones(DIM))
    with pytest.raises(InvalidScoresError, match="position"):
        mem.add(0.0, (float("nan"), 0.0), np.ones(DIM))
    with pytest.raises(InvalidScoresError, match="timestamp"):
        mem.add(float("inf"), (0.0, 0.0), np.ones(DIM))
