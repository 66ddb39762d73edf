"""selector.fusion: camera with LiDAR, uncertainty with novelty."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.errors import InvalidConfigError, InvalidScoresError
from selector.fusion import (
    COMBINE_RULES,
    FUSION_RULES,
    combine_uncertainty_novelty,
    combine_uncertainty_novelty_many,
    fuse_sensors,
)

PROPS = settings(max_examples=100, deadline=None)
_unit = st.floats(0.0, 1.0)


def test_fuse_sensors_hand_values() -> None:
    assert fuse_sensors(0.2, 0.6, "max") == 0.6
    # 0.25 * 0.2 + 0.75 * 0.6 = 0.05 + 0.45 = 0.5.
    assert fuse_sensors(0.2, 0.6, "weighted_mean", camera_weight=0.25) == pytest.approx(0.5)
    assert fuse_sensors(0.2, 0.6, "weighted_mean") == pytest.approx(0.4)  # default 0.5 / 0.5
    assert fuse_sensors(0.2, 0.6, "weighted_mean", camera_weight=1.0) == 0.2
    assert fuse_sensors(0.2, 0.6, "weighted_mean", camera_weight=0.0) == 0.6
    assert fuse_sensors(0.5, 0.6, "product") == pytest.approx(0.3)


@pytest.mark.parametrize("rule", FUSION_RULES)
def test_missing_sensor_returns_the_other(rule: str) -> None:
    assert fuse_sensors(None, 0.7, rule, camera_weight=0.9) == 0.7
    assert fuse_sensors(0.3, None, rule, camera_weight=0.1) == 0.3
    with pytest.raises(InvalidScoresError, match=r"camera and lidar are both None"):
        fuse_sensors(None, None, rule)


def test_fuse_sensors_errors() -> None:
    with pytest.raises(
        InvalidConfigError,
        match=r"rule must be one of 'max', 'weighted_mean', 'product'; got 'min'",
    ):
        fuse_sensors(0.1, 0.2, "min")
    for bad in (-0.1, 1.5, math.nan, "a"):
        with pytest.raises(InvalidConfigError, match=r"camera_weight must be a number in \[0, 1\]"):
            fuse_sensors(0.1, 0.2, "max", camera_weight=bad)  # type: ignore[arg-type]
    with pytest.raises(
        InvalidScoresError, match=r"camera must be a finite score in \[0, 1\]; got 1\.2"
    ):
        fuse_sensors(1.2, 0.2, "max")
    with pytest.raises(
        InvalidScoresError, match=r"lidar must be a finite score in \[0, 1\]; got nan"
    ):
        fuse_sensors(0.1, math.nan, "max")
    with pytest.raises(InvalidScoresError, match=r"lidar must be a finite score"):
        fuse_sensors(None, math.inf, "max")
    with pytest.raises(InvalidScoresError, match=r"camera must be a score in \[0, 1\]"):
        fuse_sensors("high", 0.2, "max")  # type: ignore[arg-type]


def test_combine_hand_values() -> None:
    u, n = 0.64, 0.25
    assert combine_uncertainty_novelty(u, n, "uncertainty") == 0.64
    assert combine_uncertainty_novelty(u, n, "novelty") == 0.25
    # 0.5 * 0.64 + 0.5 * 0.25 = 0.445; with alpha 0.75: 0.48 + 0.0625 = 0.5425.
    assert combine_uncertainty_novelty(u, n, "weighted") == pytest.approx(0.445)
    assert combine_uncertainty_novelty(u, n, "weighted", alpha=0.75) == pytest.approx(0.5425)
    assert combine_uncertainty_novelty(u, n, "product") == pytest.approx(0.16)
    # sqrt(0.64 * 0.25) = 0.8 * 0.5 = 0.4; alpha 1 and 0 pick one score exactly.
    assert combine_uncertainty_novelty(u, n, "geometric") == pytest.approx(0.4)
    assert combine_uncertainty_novelty(u, n, "geometric", alpha=1.0) == 0.64
    assert combine_uncertainty_novelty(u, n, "geometric", alpha=0.0) == 0.25
    assert combine_uncertainty_novelty(0.0, 0.9, "geometric", alpha=1.0) == 0.0
    assert combine_uncertainty_novelty(0.0, 0.9, "geometric", alpha=0.0) == 0.9


def test_combine_errors() -> None:
    with pytest.raises(
        InvalidConfigError, match=r"rule must be one of 'uncertainty', .*'geometric'; got 'sum'"
    ):
        combine_uncertainty_novelty(0.1, 0.2, "sum")
    with pytest.raises(InvalidConfigError, match=r"alpha must be a number in \[0, 1\]; got 2"):
        combine_uncertainty_novelty(0.1, 0.2, "weighted", alpha=2)
    with pytest.raises(InvalidScoresError, match=r"uncertainty must be a finite score"):
        combine_uncertainty_novelty(-0.1, 0.2, "weighted")
    with pytest.raises(InvalidScoresError, match=r"novelty must be a finite score"):
        combine_uncertainty_novelty(0.1, math.nan, "weighted")
    with pytest.raises(InvalidScoresError, match=r"same shape; got \(2,\) and \(3,\)"):
        combine_uncertainty_novelty_many([0.1, 0.2], [0.1, 0.2, 0.3], "product")
    with pytest.raises(InvalidScoresError, match=r"novelty must hold finite scores .* item 1"):
        combine_uncertainty_novelty_many([0.1, 0.2], [0.1, 1.2], "product")
    with pytest.raises(InvalidConfigError, match=r"rule must be one of"):
        combine_uncertainty_novelty_many([0.1], [0.1], "sum")


@PROPS
@given(
    c=_unit,
    li=_unit,
    rule=st.sampled_from(FUSION_RULES),
    w=_unit,
)
def test_fusion_stays_in_unit_interval(c: float, li: float, rule: str, w: float) -> None:
    s = fuse_sensors(c, li, rule, camera_weight=w)
    assert 0.0 <= s <= 1.0
    # Symmetric in the sensors once the weight is swapped too.
    assert fuse_sensors(li, c, rule, camera_weight=1.0 - w) == pytest.approx(s, abs=1e-12)
    if rule != "product":
        assert min(c, li) - 1e-12 <= s <= max(c, li) + 1e-12


@PROPS
@given(
    pairs=st.lists(st.tuples(_unit, _unit), min_size=1, max_size=8),
    rule=st.sampled_from(COMBINE_RULES),
    alpha=_unit,
)
def test_combine_many_matches_scalar(
    pairs: list[tuple[float, float]], rule: str, alpha: float
) -> None:
    u = np.array([p[0] for p in pairs])
    n = np.array([p[1] for p in pairs])
    u_before, n_before = u.copy(), n.copy()
    many = combine_uncertainty_novelty_many(u, n, rule, alpha=alpha)
    one = [combine_uncertainty_novelty(a, b, rule, alpha=alpha) for a, b in pairs]
    np.testing.assert_allclose(many, one, rtol=1e-12, atol=1e-15)
    assert np.all((many >= 0.0) & (many <= 1.0))
    assert np.array_equal(u, u_before)
    assert np.array_equal(n, n_before)
    many[...] = 0.5  # the result never aliases an input
    assert np.array_equal(u, u_before)
    assert np.array_equal(n, n_before)


def test_rule_tuples() -> None:
    assert FUSION_RULES == ("max", "weighted_mean", "product")
    assert COMBINE_RULES == ("uncertainty", "novelty", "weighted", "product", "geometric")
