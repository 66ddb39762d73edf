"""StreamSelector: the pipeline, the novelty veto, state save/restore."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from selector.budget import BudgetConfig
from selector.decision import Decision, Reason, make_decision
from selector.errors import InvalidConfigError, InvalidScoresError, StateError
from selector.stream import DiversityConfig, FrameScores, SelectorConfig, StreamSelector
from selector.uncertainty import entropy
from tests.unit.selector.streams import video_stream

DIV = DiversityConfig(
    capacity=200, dim=16, time_scale_s=30.0, space_scale_m=50.0, similar_threshold=0.1
)


def _config(**kw: object) -> SelectorConfig:
    args: dict[str, object] = {
        "budget": BudgetConfig(target_rate=0.1, window=200, cold_start_frames=100),
        "diversity": DIV,
    }
    args.update(kw)
    return SelectorConfig(**args)  # type: ignore[arg-type]


def _drive(selector: StreamSelector, frames: list[FrameScores]) -> list[Decision]:
    out = []
    for f in frames:
        d = selector.decide(f)
        selector.update(d, f)
        out.append(d)
    return out


@pytest.mark.parametrize(
    "config",
    [
        _config(),
        _config(
            combine_rule="weighted",
            diversity=dataclasses.replace(DIV, eviction="reservoir", capacity=50),
            budget=BudgetConfig(
                target_rate=0.05,
                cold_start_frames=300,
                cold_start_mode="diversity",
                max_frames_per_minute=20.0,
                max_bytes_per_hour=5e6,
            ),
        ),
        _config(diversity=None, sensor_fusion="weighted_mean", uncertainty_method="margin"),
    ],
    ids=["veto-fifo", "weighted-reservoir-caps", "no-diversity"],
)
def test_restored_selector_continues_identically(config: SelectorConfig) -> None:
    frames = video_stream(5_000, seed=3)
    original = StreamSelector(config, seed=42)
    first = _drive(original, frames[:2_500])
    restored = StreamSelector.from_state(config, original.state_bytes())
    assert restored.state_bytes() == original.state_bytes()
    rest_a = _drive(original, frames[2_500:])
    rest_b = _drive(restored, frames[2_500:])
    assert rest_a == rest_b
    # ... and equal to one uninterrupted run.
    assert first + rest_a == _drive(StreamSelector(config, seed=42), frames)
    assert any(d.selected for d in rest_a)


def test_too_similar_frames_are_vetoed_and_not_remembered() -> None:
    sel = StreamSelector(
        _config(budget=BudgetConfig(target_rate=0.2, window=100, cold_start_frames=0)), seed=0
    )
    decisions = _drive(sel, video_stream(3_000, seed=1))
    vetoed = [d for d in decisions if d.reason is Reason.TOO_SIMILAR]
    assert vetoed, "the stopped car should produce too-similar frames"
    for d in vetoed:
        assert not d.selected
        novelty = d.component("novelty")
        assert novelty is not None
        assert novelty < DIV.similar_threshold
    memory = sel.memory
    assert memory is not None
    assert memory.added == sum(d.selected for d in decisions)
    # While the car stands still nearly everything is vetoed; the integral's anti-windup
    # clamp means those frames are not made up later with a burst.
    rate = sel.budget.frames_selected / 3_000
    assert 0.05 < rate <= 0.2 * 1.05


def test_novelty_only_computed_when_needed() -> None:
    frames = video_stream(600, seed=2)
    veto_only = _drive(StreamSelector(_config(), seed=0), frames)
    for d in veto_only:
        has = d.component("novelty") is not None
        would_select = d.selected or d.reason is Reason.TOO_SIMILAR
        assert has == would_select
    weighted = _drive(StreamSelector(_config(combine_rule="weighted", alpha=0.7), seed=0), frames)
    for d in weighted:
        u, n = d.component("uncertainty"), d.component("novelty")
        assert u is not None
        assert n is not None
        assert d.score == pytest.approx(0.7 * u + 0.3 * n)


def test_uncertainty_from_probs_equals_precomputed() -> None:
    cfg = _config(diversity=None, sensor_fusion="max", uncertainty_method="entropy")
    probs_cam = np.array([0.7, 0.2, 0.1])
    probs_lid = np.array([0.4, 0.3, 0.3])
    a = StreamSelector(cfg, seed=0).decide(
        FrameScores(0.0, camera_probs=probs_cam, lidar_probs=probs_lid)
    )
    ent = entropy(np.stack([probs_cam, probs_lid]))
    b = StreamSelector(cfg, seed=0).decide(
        FrameScores(0.0, camera_uncertainty=float(ent[0]), lidar_uncertainty=float(ent[1]))
    )
    assert a == b
    assert a.component("camera") == pytest.approx(ent[0])
    assert a.score == pytest.approx(max(ent))


def test_single_sensor_and_committee_method() -> None:
    cfg = _config(diversity=None, uncertainty_method="bald")
    committee = np.array([[0.9, 0.1], [0.1, 0.9]])  # (T, K): members disagree
    d = StreamSelector(cfg, seed=0).decide(FrameScores(0.0, lidar_probs=committee))
    assert d.component("camera") is None
    assert d.component("lidar") == pytest.approx(d.score)
    assert d.score > 0.5


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (FrameScores(0.0), "camera and lidar"),
        (FrameScores(0.0, camera_probs=np.array([0.5, 0.5]), camera_uncertainty=0.5), "not both"),
        (FrameScores(0.0, camera_uncertainty=1.5), "camera_uncertainty"),
        (FrameScores(0.0, camera_probs=np.array([[0.5, 0.5]])), "dimension"),
        (FrameScores(0.0, camera_probs=np.array([0.9, 0.9])), "sum"),
    ],
)
def test_invalid_frames_rejected(frame: FrameScores, match: str) -> None:
    with pytest.raises(InvalidScoresError, match=match):
        StreamSelector(_config(diversity=None), seed=0).decide(frame)


def test_missing_embedding_with_diversity_rejected() -> None:
    sel = StreamSelector(_config(combine_rule="novelty"), seed=0)
    with pytest.raises(InvalidScoresError, match="embedding"):
        sel.decide(FrameScores(0.0, camera_uncertainty=0.5, position=(0.0, 0.0)))


def test_update_rejects_stale_or_foreign_decisions() -> None:
    frames = video_stream(3, seed=0)
    sel = StreamSelector(_config(), seed=0)
    d = sel.decide(frames[0])
    with pytest.raises(StateError, match="timestamp"):
        sel.update(d, frames[1])
    sel.update(d, frames[0])
    with pytest.raises(StateError, match="seq"):
        sel.update(d, frames[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"uncertainty_method": "entropie"}, "method"),
        ({"sensor_fusion": "min"}, "sensor_fusion"),
        ({"combine_rule": "sum"}, "combine_rule"),
        ({"alpha": 1.5}, "alpha"),
        ({"camera_weight": -0.1}, "camera_weight"),
        ({"combine_rule": "weighted", "diversity": None}, "diversity"),
        (
            {
                "budget": BudgetConfig(target_rate=0.1, cold_start_mode="diversity"),
                "diversity": None,
            },
            "diversity",
        ),
    ],
)
def test_invalid_config(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidConfigError, match=match):
        _config(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"weights": (0.5, 0.5, 0.5)}, "weights"), ({"dim": 0}, "dim")]
)
def test_invalid_diversity_config_fails_when_built(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidConfigError, match=match):
        dataclasses.replace(DIV, **kwargs)


def test_from_state_rejects_another_config() -> None:
    sel = StreamSelector(_config(), seed=0)
    with pytest.raises(StateError, match="SelectorConfig"):
        StreamSelector.from_state(_config(alpha=0.3), sel.state_bytes())


def test_make_decision_equals_the_dataclass() -> None:
    args = (True, 0.9, 0.7, Reason.SELECTED, 3, 1.5, 100, 0.25, (("uncertainty", 0.9),))
    fast = make_decision(*args)
    slow = Decision(*args)
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.selected = False  # type: ignore[misc]


@pytest.mark.parametrize(
    "config",
    [
        _config(),
        _config(diversity=None),
        _config(diversity=None, sensor_fusion="weighted_mean", camera_weight=0.3),
        _config(diversity=None, sensor_fusion="product"),
        _config(combine_rule="weighted", alpha=0.7),
    ],
    ids=["veto", "no-diversity", "weighted-mean", "product", "weighted"],
)
def test_fast_paths_agree_with_the_reference_functions(config: SelectorConfig) -> None:
    """Scalar uncertainties, one sensor or two: every decision's score is what
    fuse_sensors / combine_uncertainty_novelty give for its components."""
    from selector.fusion import combine_uncertainty_novelty, fuse_sensors

    frames = video_stream(1_500, seed=4)
    ent = {id(f): entropy(np.stack([f.camera_probs, f.lidar_probs])) for f in frames}  # type: ignore[list-item]
    scalar = [
        dataclasses.replace(
            f,
            camera_probs=None,
            lidar_probs=None,
            camera_uncertainty=float(ent[id(f)][0]),
            lidar_uncertainty=float(ent[id(f)][1]) if i % 3 else None,
        )
        for i, f in enumerate(frames)
    ]
    for d in _drive(StreamSelector(config, seed=9), scalar):
        cam, lid, u = d.component("camera"), d.component("lidar"), d.component("uncertainty")
        assert u == fuse_sensors(cam, lid, config.sensor_fusion, camera_weight=config.camera_weight)
        nov = d.component("novelty")
        if config.combine_rule == "uncertainty" or nov is None:
            assert d.score == u
        else:
            assert u is not None
            assert d.score == combine_uncertainty_novelty(u, nov, config.combine_rule, alpha=0.7)


def test_other_number_types_take_the_checked_path() -> None:
    """numpy scalars and an int timestamp are valid: same decision as plain Python floats."""
    cfg = _config(diversity=None, budget=BudgetConfig(target_rate=0.5, cold_start_frames=0))
    a = StreamSelector(cfg, seed=0).decide(FrameScores(2.0, nbytes=7, camera_uncertainty=0.75))
    b = StreamSelector(cfg, seed=0).decide(
        FrameScores(
            2,  # type: ignore[arg-type]
            nbytes=np.int64(7),  # type: ignore[arg-type]
            camera_uncertainty=np.float64(0.75),  # type: ignore[arg-type]
        )
    )
    assert a == b
    with pytest.raises(InvalidScoresError, match="nbytes"):
        StreamSelector(cfg, seed=0).decide(FrameScores(0.0, nbytes=-1, camera_uncertainty=0.5))
    with pytest.raises(InvalidScoresError, match="timestamp"):
        StreamSelector(cfg, seed=0).decide(FrameScores(math.nan, camera_uncertainty=0.5))
