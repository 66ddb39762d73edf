"""selector.uncertainty: hand-computed values, properties over random inputs, error messages."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray

from selector.errors import InvalidConfigError, InvalidScoresError, SelectorError
from selector.uncertainty import (
    COMMITTEE_METHODS,
    PER_SAMPLE_METHODS,
    bald,
    entropy,
    least_confidence,
    margin,
    mean_kl,
    ratio,
    score_one,
    softmax,
    uncertainty_scores,
    validate_probs,
    vote_entropy,
)

Measure = Callable[..., NDArray[np.float64]]
PER_SAMPLE: dict[str, Measure] = {
    "entropy": entropy,
    "least_confidence": least_confidence,
    "margin": margin,
    "ratio": ratio,
}
COMMITTEE: dict[str, Measure] = {"bald": bald, "vote_entropy": vote_entropy, "mean_kl": mean_kl}
ALL: dict[str, Measure] = {**PER_SAMPLE, **COMMITTEE}

PROPS = settings(max_examples=100, deadline=None)

# --------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------

_weight = st.one_of(
    st.just(0.0), st.just(1.0), st.floats(0.0, 10.0, allow_nan=False, allow_infinity=False)
)


def _normalise(w: NDArray[np.float64]) -> NDArray[np.float64]:
    w = w.copy()
    w[..., 0] += w.sum(axis=-1) == 0.0  # an all-zero row becomes one-hot
    out: NDArray[np.float64] = w / w.sum(axis=-1, keepdims=True)
    return out


@st.composite
def prob_matrices(draw: st.DrawFn) -> NDArray[np.float64]:
    """(n, K) rows on the simplex, with exact zeros, ties and one-hot rows included."""
    n = draw(st.integers(1, 6))
    k = draw(st.integers(2, 6))
    return _normalise(draw(arrays(np.float64, (n, k), elements=_weight)))


@st.composite
def committees(draw: st.DrawFn) -> NDArray[np.float64]:
    """(T, n, K) committee outputs, T >= 2."""
    t = draw(st.integers(2, 5))
    n = draw(st.integers(1, 4))
    k = draw(st.integers(2, 5))
    return _normalise(draw(arrays(np.float64, (t, n, k), elements=_weight)))


def _logits(shape: tuple[int, ...]) -> st.SearchStrategy[NDArray[np.float64]]:
    return arrays(np.float64, shape, elements=st.floats(-30.0, 30.0))


def _inputs_for(name: str) -> st.SearchStrategy[NDArray[np.float64]]:
    return prob_matrices() if name in PER_SAMPLE else committees()


# --------------------------------------------------------------------------------------
# hand-computed values
# --------------------------------------------------------------------------------------


def test_entropy_hand_values() -> None:
    # [.5, .5]: ln 2 / ln 2 = 1; [1, 0]: 0 ln 0 = 0 by convention, so 0.
    # [.6, .3, .1]: -(.6 ln .6 + .3 ln .3 + .1 ln .1) / ln 3 = (.30650 + .36119 + .23026)
    # / 1.09861 = 0.81735.
    h3 = -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1)) / math.log(3)
    assert entropy([[0.5, 0.5], [1.0, 0.0]]).tolist() == [1.0, 0.0]
    np.testing.assert_allclose(entropy([[0.6, 0.3, 0.1]]), [h3], rtol=1e-12)
    np.testing.assert_allclose(h3, 0.81735, atol=1e-5)
    # Uniform over K is 1 for any K; one-hot is 0 wherever the 1 sits.
    assert entropy(np.full((1, 7), 1 / 7)).tolist() == pytest.approx([1.0])
    assert entropy([[0.0, 0.0, 1.0]]).tolist() == [0.0]


def test_least_confidence_hand_values() -> None:
    # (1 - p_max) * K / (K - 1): (1 - .6) * 3 / 2 = .6; uniform (1 - 1/4) * 4 / 3 = 1; one-hot 0.
    np.testing.assert_allclose(least_confidence([[0.6, 0.3, 0.1]]), [0.6])
    np.testing.assert_allclose(least_confidence([[0.25] * 4, [0.0, 1.0, 0.0, 0.0]]), [1.0, 0.0])


def test_margin_hand_values() -> None:
    # 1 - (p1 - p2): 1 - (.6 - .3) = .7; a tie [.5, .5] is 1; one-hot is 1 - (1 - 0) = 0.
    np.testing.assert_allclose(margin([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]]), [0.7, 0.7])
    assert margin([[0.5, 0.5], [0.0, 1.0]]).tolist() == [1.0, 0.0]
    # Top two, not first two: [.2, .1, .7] has p1 = .7, p2 = .2, so 1 - .5 = .5.
    np.testing.assert_allclose(margin([[0.2, 0.1, 0.7]]), [0.5])


def test_ratio_hand_values() -> None:
    # p2 / p1: .3 / .6 = .5; a tie is 1; one-hot 0 / 1 = 0.
    np.testing.assert_allclose(ratio([[0.6, 0.3, 0.1]]), [0.5])
    assert ratio([[0.5, 0.5], [1.0, 0.0]]).tolist() == [1.0, 0.0]


def test_bald_hand_values() -> None:
    # Confident members that disagree: H(mean [.5, .5]) - mean(H([1, 0]), H([0, 1]))
    # = ln 2 - 0, normalised by ln 2: 1.
    assert bald([[[1.0, 0.0]], [[0.0, 1.0]]]).tolist() == [1.0]
    # Identical members, however unsure, carry no model disagreement: 0.
    assert bald([[[0.7, 0.3]], [[0.7, 0.3]]]).tolist() == [0.0]
    assert bald([[[0.5, 0.5]], [[0.5, 0.5]]]).tolist() == [0.0]

    # [.8, .2] and [.4, .6]: mean [.6, .4]; H(.6, .4) = .67301, H(.8, .2) = .50040,
    # H(.4, .6) = .67301; MI = .67301 - (.50040 + .67301) / 2 = .08630; / ln 2 = .12451.
    def h(*p: float) -> float:
        return -sum(x * math.log(x) for x in p)

    mi = h(0.6, 0.4) - (h(0.8, 0.2) + h(0.4, 0.6)) / 2
    np.testing.assert_allclose(bald([[[0.8, 0.2]], [[0.4, 0.6]]]), [mi / math.log(2)])
    np.testing.assert_allclose(mi / math.log(2), 0.12451, atol=1e-5)


def test_vote_entropy_hand_values() -> None:
    # Two members vote 0 and 1: votes [1/2, 1/2], H = ln 2, / ln min(2, 2) = 1.
    assert vote_entropy([[[0.9, 0.1]], [[0.2, 0.8]]]).tolist() == [1.0]
    # Three members over three classes vote 0, 0, 1: votes [2/3, 1/3, 0],
    # H = -(2/3 ln 2/3 + 1/3 ln 1/3) = .63651, / ln min(3, 3) = .57938.
    p = [[[0.5, 0.3, 0.2]], [[0.6, 0.2, 0.2]], [[0.1, 0.8, 0.1]]]
    expected = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(3)
    np.testing.assert_allclose(vote_entropy(p), [expected])
    np.testing.assert_allclose(expected, 0.57938, atol=1e-5)
    # A tied member splits its vote: [.5, .5] gives 1/2 to each class, [1, 0] all to class
    # 0, so votes [3/4, 1/4]: H = -(.75 ln .75 + .25 ln .25) / ln 2 = .81128.
    tied = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    np.testing.assert_allclose(vote_entropy([[[0.5, 0.5]], [[1.0, 0.0]]]), [tied])
    # Everyone agrees on the argmax, however unsure: 0.
    assert vote_entropy([[[0.6, 0.4]], [[0.9, 0.1]], [[0.55, 0.45]]]).tolist() == [0.0]


def test_mean_kl_hand_values() -> None:
    # [.8, .2] and [.4, .6], consensus [.6, .4]:
    # KL1 = .8 ln(.8/.6) + .2 ln(.2/.4) = .23015 - .13863 = .09152
    # KL2 = .4 ln(.4/.6) + .6 ln(.6/.4) = -.16219 + .24328 = .08109
    # mean .08630, mapped 1 - exp(-.08630) = .08268.
    kl1 = 0.8 * math.log(0.8 / 0.6) + 0.2 * math.log(0.2 / 0.4)
    kl2 = 0.4 * math.log(0.4 / 0.6) + 0.6 * math.log(0.6 / 0.4)
    expected = 1.0 - math.exp(-(kl1 + kl2) / 2)
    np.testing.assert_allclose(mean_kl([[[0.8, 0.2]], [[0.4, 0.6]]]), [expected])
    np.testing.assert_allclose(expected, 0.08268, atol=1e-5)
    # Confident and opposed: each KL is ln 2 (1 ln(1 / .5)), so 1 - exp(-ln 2) = .5.
    np.testing.assert_allclose(mean_kl([[[1.0, 0.0]], [[0.0, 1.0]]]), [0.5])
    assert mean_kl([[[0.3, 0.7]], [[0.3, 0.7]]]).tolist() == [0.0]


def test_several_samples_at_once() -> None:
    p = np.array([[0.5, 0.5], [0.9, 0.1], [1.0, 0.0]])
    for name, f in PER_SAMPLE.items():
        scores = f(p)
        assert scores.shape == (3,), name
        assert scores.dtype == np.float64, name
        np.testing.assert_allclose(scores, [f(row[None, :])[0] for row in p], err_msg=name)


def test_empty_batch_gives_empty_scores() -> None:
    for f in PER_SAMPLE.values():
        assert f(np.empty((0, 3))).shape == (0,)
    for f in COMMITTEE.values():
        assert f(np.empty((2, 0, 3))).shape == (0,)


def test_softmax_is_stable_and_masks_minus_inf() -> None:
    # exp(1000) overflows; with the row maximum subtracted it is exp(0) = 1.
    np.testing.assert_allclose(softmax([[1000.0, 1000.0]]), [[0.5, 0.5]])
    np.testing.assert_allclose(softmax([[0.0, -np.inf]]), [[1.0, 0.0]])
    np.testing.assert_allclose(softmax([[0.0, math.log(3.0)]]), [[0.25, 0.75]])
    np.testing.assert_allclose(softmax([[0.0], [math.log(3.0)]], axis=0), [[0.25], [0.75]])


def test_validate_probs_returns_float64_without_copying_float64() -> None:
    p = np.array([[0.25, 0.75]])
    assert validate_probs(p) is p
    out = validate_probs([[1, 0]])
    assert out.dtype == np.float64
    assert out.tolist() == [[1.0, 0.0]]
    # Within atol the row sum is accepted, outside it is not.
    validate_probs([[0.5, 0.50005]])
    validate_probs([[0.5, 0.505]], atol=0.01)


def test_logits_flag_on_every_measure() -> None:
    logits = np.array([[2.0, 0.0, -1.0]])
    for name, f in PER_SAMPLE.items():
        np.testing.assert_allclose(f(logits, logits=True), f(softmax(logits)), err_msg=name)
    committee = np.array([[[2.0, 0.0]], [[0.0, 2.0]], [[1.0, 1.0]]])
    for name, f in COMMITTEE.items():
        np.testing.assert_allclose(f(committee, logits=True), f(softmax(committee)), err_msg=name)


def test_method_name_tuples() -> None:
    assert PER_SAMPLE_METHODS == ("entropy", "least_confidence", "margin", "ratio")
    assert COMMITTEE_METHODS == ("bald", "vote_entropy", "mean_kl")


# --------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ALL))
@PROPS
@given(data=st.data())
def test_measure_properties(name: str, data: st.DataObject) -> None:
    """One random input per example, every property checked on it (keeps the suite fast)."""
    f = ALL[name]
    p = data.draw(_inputs_for(name), label="p")
    before = p.copy()
    scores = f(p)

    # Bounded, finite, one float64 per sample.
    assert scores.shape == (p.shape[-2],)
    assert scores.dtype == np.float64
    assert np.all(np.isfinite(scores))
    assert np.all((scores >= 0.0) & (scores <= 1.0))

    # Inputs not mutated; same input, same output, through either entry point.
    assert np.array_equal(p, before)
    assert np.array_equal(f(p), scores)
    assert np.array_equal(uncertainty_scores(p, name), scores)

    # A single row (the per-frame fast path) scores as it does inside a batch.
    if name in PER_SAMPLE:
        batch = f(np.repeat(p, 2, axis=0))[::2]  # n >= 2: always the vectorised path
        singles = [f(p[i : i + 1])[0] for i in range(p.shape[0])]
        np.testing.assert_allclose(singles, batch, rtol=0, atol=1e-12)

    # Invariant to the order of the classes (up to summation order).
    class_perm = data.draw(st.permutations(range(p.shape[-1])), label="class_perm")
    np.testing.assert_allclose(f(p[..., class_perm]), scores, rtol=0, atol=1e-12)

    # Permuting the samples permutes the scores.
    perm = np.array(data.draw(st.permutations(range(p.shape[-2])), label="perm"), dtype=np.intp)
    permuted = p[perm] if p.ndim == 2 else p[:, perm]
    np.testing.assert_allclose(f(permuted), scores[perm], rtol=0, atol=1e-12)

    # The logits path equals softmax followed by the probability path; logits untouched.
    logits = data.draw(_logits(p.shape), label="logits")
    logits_before = logits.copy()
    from_logits = f(logits, logits=True)
    assert np.array_equal(logits, logits_before)
    np.testing.assert_allclose(from_logits, f(softmax(logits)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        uncertainty_scores(logits, name, logits=True), from_logits, rtol=0, atol=0
    )


@PROPS
@given(p=prob_matrices())
def test_entropy_extremes(p: NDArray[np.float64]) -> None:
    k = p.shape[1]
    # Uniform rows are the maximum, one-hot rows the minimum.
    assert entropy(np.full((1, k), 1.0 / k))[0] == pytest.approx(1.0)
    assert np.all(entropy(p) <= 1.0)
    one_hot = np.eye(k)[np.argmax(p, axis=1)]
    assert np.all(entropy(one_hot) == 0.0)


@PROPS
@given(p=prob_matrices())
def test_two_class_margin_equals_least_confidence(p: NDArray[np.float64]) -> None:
    # With K = 2: 1 - (p1 - p2) = 1 - (2 p1 - 1) = 2 (1 - p1) = least confidence.
    two = p[:, :2].copy()
    two = _normalise(two)
    np.testing.assert_allclose(margin(two), least_confidence(two), atol=1e-12)


@PROPS
@given(p=committees())
def test_mean_kl_and_bald_measure_the_same_information(p: NDArray[np.float64]) -> None:
    # mean_t KL(p_t || mean p) = H(mean p) - mean_t H(p_t): the two differ by normalisation.
    mi_from_bald = bald(p) * math.log(p.shape[-1])
    mi_from_kl = -np.log1p(-mean_kl(p))
    np.testing.assert_allclose(mi_from_kl, mi_from_bald, rtol=1e-7, atol=1e-9)


@PROPS
@given(p=committees())
def test_identical_members_have_no_disagreement(p: NDArray[np.float64]) -> None:
    same = np.broadcast_to(p[:1], p.shape)
    # Exact 0 up to the rounding of the member mean (0.2 + 0.2 + 0.2 != 0.6 in floats).
    assert np.all(bald(same) <= 1e-12)
    assert np.all(mean_kl(same) <= 1e-12)
    # All members vote for the same class (ties split alike), so only ties spread the vote.
    no_ties = np.sum(same[0] == same[0].max(axis=-1, keepdims=True), axis=-1) == 1
    assert np.all(vote_entropy(same)[no_ties] == 0.0)


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PER_SAMPLE))
def test_per_sample_errors(name: str) -> None:
    f = PER_SAMPLE[name]
    with pytest.raises(InvalidScoresError, match=r"p must be finite; row \[1\] contains NaN"):
        f([[0.5, 0.5], [np.nan, 0.5]])
    with pytest.raises(
        InvalidScoresError, match=r"p must be finite; row \[0\] contains NaN or inf"
    ):
        f([[np.inf, 0.0]])
    with pytest.raises(InvalidScoresError, match=r"row \[0\] has a negative value -0\.2"):
        f([[1.2, -0.2]])
    with pytest.raises(InvalidScoresError, match=r"rows must sum to 1 .*row \[1\] sums to 0\.9"):
        f([[0.5, 0.5], [0.6, 0.3]])
    with pytest.raises(InvalidScoresError, match=r"rows must sum to 1 .*sums to 2"):
        f([[1.0, 1.0]])
    with pytest.raises(InvalidScoresError, match=r"must be 2-D .* got shape \(2,\).*p\[None, :\]"):
        f([0.5, 0.5])
    with pytest.raises(InvalidScoresError, match=r"must be 2-D .* got shape \(2, 1, 2\)"):
        f(np.full((2, 1, 2), 0.5))
    with pytest.raises(InvalidScoresError, match=r"at least 2 classes .* n_classes=1"):
        f([[1.0], [1.0]])
    with pytest.raises(InvalidScoresError, match=r"p must be an array of real numbers"):
        f([["a", "b"]])
    with pytest.raises(InvalidScoresError, match=r"logits.*row \[0\] gives no valid softmax"):
        f([[np.nan, 0.0]], logits=True)
    with pytest.raises(InvalidScoresError, match=r"row \[0\] gives no valid softmax"):
        f([[np.inf, 0.0]], logits=True)
    with pytest.raises(InvalidScoresError, match=r"row \[1\] gives no valid softmax"):
        f([[0.0, 0.0], [-np.inf, -np.inf]], logits=True)


@pytest.mark.parametrize("name", list(COMMITTEE))
def test_committee_errors(name: str) -> None:
    f = COMMITTEE[name]
    good = np.full((2, 3, 2), 0.5)
    with pytest.raises(InvalidScoresError, match=r"at least 2 committee members .* n_members=1"):
        f(good[:1])
    with pytest.raises(
        InvalidScoresError, match=r"must be 3-D .*\(n_members, n_samples, n_classes\)"
    ):
        f(good[0])
    bad = good.copy()
    bad[1, 2, 0] = np.nan
    # The message points at member 1, sample 2.
    with pytest.raises(InvalidScoresError, match=r"p must be finite; row \[1, 2\]"):
        f(bad)
    bad = good.copy()
    bad[0, 1] = [0.7, 0.7]
    with pytest.raises(InvalidScoresError, match=r"row \[0, 1\] sums to 1\.4"):
        f(bad)
    with pytest.raises(InvalidScoresError, match=r"at least 2 classes"):
        f(np.ones((2, 3, 1)))


def test_uncertainty_scores_dispatch_and_errors() -> None:
    p = np.array([[0.6, 0.3, 0.1]])
    for name, f in PER_SAMPLE.items():
        np.testing.assert_array_equal(uncertainty_scores(p, name), f(p))
    c = np.array([[[0.8, 0.2]], [[0.4, 0.6]]])
    for name, f in COMMITTEE.items():
        np.testing.assert_array_equal(uncertainty_scores(c, name), f(c))
    with pytest.raises(
        InvalidConfigError, match=r"method must be one of 'entropy', .*'mean_kl'; got 'entropie'"
    ):
        uncertainty_scores(p, "entropie")
    with pytest.raises(
        InvalidScoresError,
        match=r"must be 2-D with shape \(n_samples, n_classes\) for method 'margin'",
    ):
        uncertainty_scores(c, "margin")
    with pytest.raises(InvalidScoresError, match=r"committee input takes one of bald"):
        uncertainty_scores(c, "margin")
    with pytest.raises(
        InvalidScoresError,
        match=r"must be 3-D with shape \(n_members, n_samples, n_classes\) for method 'bald'",
    ):
        uncertainty_scores(p, "bald")
    with pytest.raises(InvalidScoresError, match=r"single-model input takes one of entropy"):
        uncertainty_scores(p, "bald")


def test_validate_probs_errors() -> None:
    with pytest.raises(InvalidConfigError, match=r"atol must be a finite number >= 0"):
        validate_probs([[0.5, 0.5]], atol=-1.0)
    with pytest.raises(InvalidScoresError, match=r"rows must sum to 1 within atol=1e-06"):
        validate_probs([[0.5, 0.50001]], atol=1e-6)


def test_errors_are_value_errors() -> None:
    # Callers that only know ValueError still catch everything the selector raises.
    assert issubclass(InvalidScoresError, SelectorError)
    assert issubclass(InvalidConfigError, ValueError)
    with pytest.raises(ValueError, match="method must be one of"):
        uncertainty_scores([[0.5, 0.5]], "nope")


def test_half_precision_outputs_are_accepted() -> None:
    # [.3002, .3002, .3996] rounds in float16 to [.3003, .3003, .3997], which sums to
    # 1.000244: outside the float32 tolerance 1e-4, inside K = 3 half-precision ulps.
    p64 = np.array([[0.3002, 0.3002, 0.3996]])
    p16 = p64.astype(np.float16)
    assert abs(float(p16.astype(np.float64).sum()) - 1.0) > 2e-4
    with pytest.raises(InvalidScoresError, match=r"within atol=0\.0001"):
        entropy(p16.astype(np.float64))
    np.testing.assert_allclose(entropy(p16), entropy(p64), atol=1e-3)
    # Still far from a distribution: rejected, naming the tolerance used (2 * 2**-10).
    with pytest.raises(InvalidScoresError, match=r"rows must sum to 1 within atol=0\.00195"):
        entropy(np.array([[0.5, 0.4]], dtype=np.float16))


def test_extreme_logits_do_not_warn() -> None:
    # Warnings are errors in this suite: x - max overflows to -inf, exp gives exactly 0.
    assert entropy([[1e308, -1e308]], logits=True).tolist() == [0.0]
    assert margin([[-np.inf, 0.0, 0.0]], logits=True).tolist() == [1.0]


def test_single_row_fast_path_falls_back_for_errors_and_wide_rows() -> None:
    # The same messages as for a batch: the vectorised path words every error.
    with pytest.raises(InvalidScoresError, match=r"row \[0\] sums to 0\.9"):
        entropy([[0.6, 0.3]])
    with pytest.raises(InvalidScoresError, match=r"p must be finite; row \[0\]"):
        margin([[np.nan, 1.0]])
    with pytest.raises(InvalidScoresError, match=r"row \[0\] gives no valid softmax"):
        ratio([[np.inf, 0.0]], logits=True)
    # 100 classes: past the fast path's width, same formula.
    wide = np.full((1, 100), 0.01)
    np.testing.assert_allclose(entropy(wide), [1.0])
    np.testing.assert_allclose(least_confidence(wide), [1.0])
    # -inf logits (masked classes) are legal; the vectorised path handles them.
    np.testing.assert_allclose(
        entropy([[0.0, 0.0, -np.inf]], logits=True), [math.log(2) / math.log(3)]
    )


def test_negative_value_message_points_at_its_row() -> None:
    with pytest.raises(InvalidScoresError, match=r"row \[1\] has a negative value -0\.1 "):
        entropy([[0.5, 0.5], [1.1, -0.1], [1.5, -0.5]])


@pytest.mark.parametrize("method", PER_SAMPLE_METHODS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("logits", [False, True])
def test_score_one_equals_a_batch_of_one(method: str, dtype: type, logits: bool) -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        raw = rng.normal(size=7) if logits else rng.dirichlet(np.full(7, 0.5))
        p = raw.astype(dtype)
        want = uncertainty_scores(p[None, :], method, logits=logits)[0]
        assert score_one(p, method, logits=logits) == pytest.approx(want, abs=1e-12)
        if dtype is not np.float16:  # as a list it is float64, held to the float64 tolerance
            assert score_one(p.tolist(), method, logits=logits) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("method", COMMITTEE_METHODS)
def test_score_one_committee(method: str) -> None:
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])  # (T, K)
    assert score_one(p, method) == uncertainty_scores(p[:, None, :], method)[0]


def test_score_one_errors_as_the_batch_path() -> None:
    with pytest.raises(InvalidScoresError, match="sum"):
        score_one(np.array([0.9, 0.9]), "entropy")
    with pytest.raises(InvalidScoresError):
        score_one(np.array([0.5, np.nan]), "entropy")
    with pytest.raises(InvalidConfigError, match="method"):
        score_one(np.array([0.5, 0.5]), "entropie")
