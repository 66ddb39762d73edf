"""selector.aggregate: per-item scores to one frame score; detections and dense outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from selector.aggregate import AGGREGATION_RULES, aggregate, dense_score, detection_score
from selector.errors import InvalidConfigError, InvalidScoresError
from selector.uncertainty import entropy, margin, softmax

PROPS = settings(max_examples=100, deadline=None)

_unit = st.floats(0.0, 1.0)

# --------------------------------------------------------------------------------------
# aggregate
# --------------------------------------------------------------------------------------


def test_aggregate_hand_values() -> None:
    v = [0.2, 0.9, 0.4, 0.5]
    assert aggregate(v, "max") == 0.9
    assert aggregate(v, "mean") == pytest.approx(0.5)  # 2.0 / 4
    assert aggregate(v, "sum") == pytest.approx(2.0)
    assert aggregate(v, "topk_mean", k=2) == pytest.approx(0.7)  # (0.9 + 0.5) / 2
    assert aggregate(v, "topk_mean", k=1) == 0.9
    # k larger than the number of items: the mean of all of them.
    assert aggregate(v, "topk_mean", k=10) == pytest.approx(0.5)
    # k as a fraction: ceil(0.5 * 4) = 2 items; ceil(0.1 * 4) = 1 item.
    assert aggregate(v, "topk_mean", k=0.5) == pytest.approx(0.7)
    assert aggregate(v, "topk_mean", k=0.1) == 0.9
    # Confidence-weighted: (0.2 * 1 + 0.9 * 3 + 0.4 * 0 + 0.5 * 0) / 4 = 2.9 / 4 = 0.725.
    assert aggregate(v, "weighted_mean", weights=[1.0, 3.0, 0.0, 0.0]) == pytest.approx(0.725)
    # All weights 0: every item counts equally.
    assert aggregate(v, "weighted_mean", weights=[0.0] * 4) == pytest.approx(0.5)
    # Weights are ignored by the other rules.
    assert aggregate(v, "max", weights=[1.0]) == 0.9
    assert isinstance(aggregate(np.array([0.3]), "mean"), float)
    # Ten equal scores of 0.1 and odd weights: the float sums are not exact, the mean is.
    assert aggregate([0.1] * 10, "weighted_mean", weights=[0.3, 0.7, 0.1] * 3 + [0.9]) == 0.1
    assert aggregate([0.1] * 10, "mean") == 0.1


def test_aggregate_errors() -> None:
    with pytest.raises(
        InvalidConfigError, match=r"rule must be one of 'max', .*'weighted_mean'; got 'median'"
    ):
        aggregate([0.1], "median")
    with pytest.raises(InvalidScoresError, match=r"values is empty"):
        aggregate([], "max")
    with pytest.raises(InvalidScoresError, match=r"values must be 1-D; got shape \(1, 2\)"):
        aggregate([[0.1, 0.2]], "max")
    with pytest.raises(InvalidScoresError, match=r"values must be finite; item 1 is"):
        aggregate([0.1, math.nan], "mean")
    with pytest.raises(InvalidScoresError, match=r"values must be finite; item 0 is"):
        aggregate([math.inf, 0.1], "max")
    with pytest.raises(InvalidScoresError, match=r"values must be an array of real numbers"):
        aggregate(["a"], "max")
    with pytest.raises(InvalidConfigError, match=r"'weighted_mean' needs weights"):
        aggregate([0.1], "weighted_mean")
    with pytest.raises(InvalidScoresError, match=r"same length as values; got 1 weights for 2"):
        aggregate([0.1, 0.2], "weighted_mean", weights=[1.0])
    with pytest.raises(InvalidScoresError, match=r"weights must be >= 0; item 1 is negative"):
        aggregate([0.1, 0.2], "weighted_mean", weights=[1.0, -1.0])
    with pytest.raises(InvalidScoresError, match=r"weights must be finite"):
        aggregate([0.1, 0.2], "weighted_mean", weights=[1.0, math.nan])
    for bad_k in (0, -1, True, 1.5, 0.0, "3", None):
        with pytest.raises(InvalidConfigError, match=r"k (must|as a float)"):
            aggregate([0.1], "topk_mean", k=bad_k)  # type: ignore[arg-type]


@PROPS
@given(
    values=st.lists(_unit, min_size=1, max_size=20),
    k=st.integers(1, 25),
    data=st.data(),
)
def test_aggregate_properties(values: list[float], k: int, data: st.DataObject) -> None:
    weights = data.draw(st.lists(_unit, min_size=len(values), max_size=len(values)))
    lo, hi = min(values), max(values)
    mean = aggregate(values, "mean")
    top = aggregate(values, "topk_mean", k=k)
    wmean = aggregate(values, "weighted_mean", weights=weights)
    tol = 1e-12
    assert aggregate(values, "max") == hi
    # Every mean lies between the smallest and largest item, exactly (rounding is clamped:
    # a mean of scores in [0, 1] never becomes 1.0000000000000002); the top k lie above it.
    for x in (mean, top, wmean):
        assert lo <= x <= hi
    assert mean - tol <= top
    assert aggregate(values, "sum") == pytest.approx(mean * len(values))
    # The order of the items does not matter.
    perm = data.draw(st.permutations(range(len(values))))
    shuffled = [values[i] for i in perm]
    assert aggregate(shuffled, "topk_mean", k=k) == pytest.approx(top)
    assert aggregate(shuffled, "weighted_mean", weights=[weights[i] for i in perm]) == (
        pytest.approx(wmean)
    )


# --------------------------------------------------------------------------------------
# detection_score
# --------------------------------------------------------------------------------------


def test_detection_score_hand_values() -> None:
    probs = [[0.5, 0.5], [0.9, 0.1], [0.6, 0.4]]
    conf = [0.2, 0.9, 0.5]
    # Per-box margins 1 - (p1 - p2): 1.0, 0.2, 0.8.
    assert detection_score(probs, conf, method="margin") == 1.0  # rule "max" by default
    assert detection_score(probs, conf, method="margin", rule="mean") == pytest.approx(2.0 / 3)
    assert detection_score(probs, conf, method="margin", rule="sum") == pytest.approx(2.0)
    assert detection_score(probs, conf, method="margin", rule="topk_mean", k=2) == (
        pytest.approx(0.9)  # (1.0 + 0.8) / 2
    )
    # Confidence-weighted: (1.0 * 0.2 + 0.2 * 0.9 + 0.8 * 0.5) / 1.6 = 0.78 / 1.6 = 0.4875.
    assert detection_score(probs, conf, method="margin", rule="weighted_mean") == (
        pytest.approx(0.4875)
    )
    # Default method: entropy, whose max here is the [.5, .5] box: 1.
    assert detection_score(probs, conf) == 1.0
    # Logits path equals the probabilities path.
    logits = np.log(np.array(probs))
    assert detection_score(logits, conf, logits=True, rule="mean") == pytest.approx(
        float(entropy(np.array(probs)).mean())
    )


def test_empty_detection_list_returns_empty_score() -> None:
    # Nothing detected is not by itself uncertain (default 0.0) ...
    assert detection_score(np.empty((0, 5)), np.empty(0)) == 0.0
    assert detection_score([], []) == 0.0
    # ... unless the caller says empty frames are interesting.
    assert detection_score([], [], empty_score=1.0) == 1.0
    assert detection_score(np.empty((0, 3)), [], rule="weighted_mean", empty_score=0.7) == 0.7


def test_detection_score_errors() -> None:
    probs = [[0.5, 0.5], [0.9, 0.1]]
    with pytest.raises(InvalidScoresError, match=r"box_conf must be in \[0, 1\]; box 1 has 1\.5"):
        detection_score(probs, [0.5, 1.5])
    with pytest.raises(InvalidScoresError, match=r"box_conf must be in \[0, 1\]; box 0 has -0\.1"):
        detection_score(probs, [-0.1, 0.5])
    with pytest.raises(InvalidScoresError, match=r"box_conf must be finite; item 0"):
        detection_score(probs, [math.nan, 0.5])
    with pytest.raises(InvalidScoresError, match=r"one confidence per box: .*\(2, 2\).* 3 values"):
        detection_score(probs, [0.5, 0.5, 0.5])
    with pytest.raises(InvalidScoresError, match=r"one confidence per box"):
        detection_score([], [0.5])
    with pytest.raises(
        InvalidScoresError, match=r"class_probs must be 2-D .*class_probs\[None, :\]"
    ):
        detection_score([0.5, 0.5], [0.5])
    with pytest.raises(InvalidScoresError, match=r"class_probs rows must sum to 1 .*row \[1\]"):
        detection_score([[0.5, 0.5], [0.5, 0.4]], [0.5, 0.5])
    with pytest.raises(InvalidScoresError, match=r"class_probs must be finite"):
        detection_score([[0.5, math.nan]], [0.5])
    with pytest.raises(InvalidConfigError, match=r"method for detections must be one of 'entropy'"):
        detection_score(probs, [0.5, 0.5], method="bald")
    with pytest.raises(InvalidConfigError, match=r"method must be one of"):
        detection_score(probs, [0.5, 0.5], method="nope")
    with pytest.raises(InvalidConfigError, match=r"rule must be one of"):
        detection_score(probs, [0.5, 0.5], rule="nope")
    with pytest.raises(InvalidConfigError, match=r"empty_score must be a number in \[0, 1\]"):
        detection_score([], [], empty_score=2.0)
    with pytest.raises(InvalidConfigError, match=r"k must be an int count >= 1"):
        detection_score([], [], rule="topk_mean", k=0)


# --------------------------------------------------------------------------------------
# dense_score
# --------------------------------------------------------------------------------------


def test_dense_score_hand_values() -> None:
    # A 2 x 2 image over 2 classes; per-pixel margins 1 - (p1 - p2): 1, 0, .8, 0.
    image = np.array([[[0.5, 0.5], [1.0, 0.0]], [[0.6, 0.4], [0.0, 1.0]]])
    h = entropy(image.reshape(-1, 2))
    assert dense_score(image) == pytest.approx(float(h.mean()))
    assert dense_score(image, rule="max") == 1.0
    assert dense_score(image, method="margin", rule="sum") == pytest.approx(1.0 + 0.8)
    assert dense_score(image, method="margin", rule="topk_mean", k=2) == pytest.approx(0.9)
    # k = 0.5 of 4 pixels = 2 pixels.
    assert dense_score(image, method="margin", rule="topk_mean", k=0.5) == pytest.approx(0.9)
    # Default k = 1 %: at least one item, here the most uncertain pixel.
    assert dense_score(image, rule="topk_mean") == 1.0
    # Channels first (K, H, W) gives the same score.
    chw = np.moveaxis(image, -1, 0)
    assert dense_score(chw, class_axis=0) == pytest.approx(dense_score(image))
    assert dense_score(chw, class_axis=-3, method="margin") == pytest.approx(
        dense_score(image, method="margin")
    )
    # A LiDAR sweep is (N, K); logits path equals softmax then probabilities.
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(50, 4))
    assert dense_score(logits, logits=True) == pytest.approx(dense_score(softmax(logits)))


def test_dense_score_is_vectorised_on_a_full_sweep() -> None:
    # 130k points x 20 classes in one call; spot-check against the per-row measure.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(130_000, 20))
    score = dense_score(logits, logits=True, method="margin", rule="topk_mean", k=0.01)
    m = margin(softmax(logits))
    top = np.sort(m)[-1300:]
    assert score == pytest.approx(float(top.mean()))


def test_half_precision_and_float32_outputs() -> None:
    # FP16 rounding of [.3002, .3002, .3996] sums to 1.000244: accepted (K ulps tolerance).
    box = np.array([[0.3002, 0.3002, 0.3996]], dtype=np.float16)
    assert 0.99 < detection_score(np.repeat(box, 2, axis=0), [0.5, 0.5]) <= 1.0
    assert 0.99 < dense_score(np.repeat(box, 4, axis=0).reshape(2, 2, 3)) <= 1.0
    p32 = softmax(np.random.default_rng(3).normal(size=(6, 5))).astype(np.float32)
    assert dense_score(p32) == pytest.approx(dense_score(p32.astype(np.float64)), abs=1e-6)


def test_non_numeric_input_is_named() -> None:
    with pytest.raises(InvalidScoresError, match=r"class_probs must be an array of real numbers"):
        detection_score([["a", "b"]], [0.5])
    with pytest.raises(InvalidScoresError, match=r"probs must be an array of real numbers"):
        dense_score([[0.5, 0.5], [0.5]])


def test_dense_score_errors() -> None:
    good = np.full((2, 3, 2), 0.5)
    with pytest.raises(InvalidConfigError, match=r"'weighted_mean' needs per-item weights"):
        dense_score(good, rule="weighted_mean")
    with pytest.raises(InvalidConfigError, match=r"method for dense outputs must be one of"):
        dense_score(good, method="vote_entropy")
    with pytest.raises(InvalidConfigError, match=r"class_axis must be in \[-3, 2\]"):
        dense_score(good, class_axis=3)
    with pytest.raises(InvalidScoresError, match=r"at least one leading axis; got shape \(2,\)"):
        dense_score([0.5, 0.5])
    with pytest.raises(InvalidScoresError, match=r"no pixel or point to score"):
        dense_score(np.empty((0, 4, 2)))
    bad = good.copy()
    bad[1, 2] = [0.9, 0.9]
    # Rows are numbered in the flattened (N, K) view: pixel (1, 2) of a 2 x 3 map is row 5.
    with pytest.raises(InvalidScoresError, match=r"probs rows must sum to 1 .*row \[5\]"):
        dense_score(bad)
    with pytest.raises(InvalidScoresError, match=r"probs must have at least 2 classes"):
        dense_score(np.ones((4, 1)))
    with pytest.raises(InvalidConfigError, match=r"k as a float is a fraction"):
        dense_score(good, rule="topk_mean", k=2.0)


@PROPS
@given(
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    k=st.integers(2, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_dense_score_equals_flattened_scores(h: int, w: int, k: int, seed: int) -> None:
    probs: NDArray[np.float64] = softmax(np.random.default_rng(seed).normal(size=(h, w, k)) * 3)
    before = probs.copy()
    s = dense_score(probs, rule="mean")
    assert np.array_equal(probs, before)
    assert 0.0 <= s <= 1.0
    assert s == pytest.approx(float(entropy(probs.reshape(-1, k)).mean()))
    assert dense_score(probs, rule="max") >= s - 1e-12


def test_rules_tuple() -> None:
    assert AGGREGATION_RULES == ("max", "mean", "sum", "topk_mean", "weighted_mean")
