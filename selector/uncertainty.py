"""Predictive uncertainty of class probabilities: one score in [0, 1] per sample.

Two families, both vectorised, both validating their input first:

* per sample, over ``(n, K)`` probabilities: :func:`entropy`, :func:`least_confidence`,
  :func:`margin`, :func:`ratio`;
* per committee, over ``(T, n, K)`` probabilities from ``T >= 2`` ensemble members or
  MC-dropout passes: :func:`bald`, :func:`vote_entropy`, :func:`mean_kl`.

Every score is normalised so that 0 means "certain" and 1 "as uncertain as this measure can
say"; higher is more worth a label. Every function takes ``logits=True`` to apply a
numerically stable softmax over the class axis first. :func:`uncertainty_scores` dispatches
by name.

Input rows must be finite, non-negative and sum to 1 within 1e-4 (float32 model outputs
pass; float16 arrays get a tolerance of K half-precision ulps); anything else raises
:class:`~selector.errors.InvalidScoresError` naming the argument and the row at fault.
Each call is one validation pass plus a handful of ufuncs, with no copy of a float64
input: cheap enough to run per frame.

>>> import numpy as np
>>> p = np.array([[0.5, 0.5], [1.0, 0.0]])
>>> uncertainty_scores(p, "entropy").tolist()
[1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from selector.errors import InvalidConfigError, InvalidScoresError

__all__ = [
    "COMMITTEE_METHODS",
    "PER_SAMPLE_METHODS",
    "bald",
    "check_method",
    "entropy",
    "least_confidence",
    "margin",
    "mean_kl",
    "ratio",
    "score_one",
    "softmax",
    "uncertainty_scores",
    "validate_probs",
    "vote_entropy",
]

Float64Array = NDArray[np.float64]

PER_SAMPLE_METHODS: Final = ("entropy", "least_confidence", "margin", "ratio")
COMMITTEE_METHODS: Final = ("bald", "vote_entropy", "mean_kl")

# Smallest positive normal float64: log(_TINY) is finite, so p * log(max(p, _TINY)) is an
# exact 0 for p == 0 (the convention 0 log 0 = 0) without a boolean mask.
_TINY: Final = float(np.finfo(np.float64).tiny)
_DEFAULT_ATOL: Final = 1e-4
_F16_EPS: Final = float(np.finfo(np.float16).eps)


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


def softmax(logits: ArrayLike, axis: int = -1) -> Float64Array:
    """Numerically stable softmax along ``axis``, as float64; the input is not modified.

    The row maximum is subtracted before ``exp``, so large logits do not overflow. A
    ``-inf`` logit (a masked class) gets probability 0. No validation: NaN in, NaN out
    (use :func:`validate_probs` with ``logits=True`` for checked input).

    >>> softmax([[0.0, 0.0], [1000.0, 0.0]]).round(6).tolist()
    [[0.5, 0.5], [1.0, 0.0]]
    """
    x = np.asarray(logits, dtype=np.float64)
    z: Float64Array = np.exp(x - np.max(x, axis=axis, keepdims=True))
    z /= np.sum(z, axis=axis, keepdims=True)
    return z


def _as_float_array(x: ArrayLike, name: str) -> Float64Array:
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidScoresError(f"{name} must be an array of real numbers: {exc}") from exc


def _row_label(a: Float64Array, flat_row: int) -> str:
    """Human-readable index of a row (everything but the class axis) of ``a``."""
    index = np.unravel_index(flat_row, a.shape[:-1])
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def _diagnose(
    name: str, probs: Float64Array, raw: Float64Array | None, atol: float
) -> InvalidScoresError:
    """Explain why ``probs`` failed the fast check (only called on failure)."""
    k = probs.shape[-1]
    rows = probs.reshape(-1, k)
    bad_finite = ~np.isfinite(rows).all(axis=-1)
    if bad_finite.any():
        r = int(np.argmax(bad_finite))
        if raw is not None:
            return InvalidScoresError(
                f"{name} (logits) row {_row_label(probs, r)} gives no valid softmax: logits must"
                " not be NaN or +inf, and at least one logit per row must be finite"
            )
        return InvalidScoresError(
            f"{name} must be finite; row {_row_label(probs, r)} contains NaN or inf"
        )
    if raw is None and float(rows.min()) < 0.0:
        r = int(np.argmax((rows < 0.0).any(axis=-1)))
        lo = float(rows[r].min())
        return InvalidScoresError(
            f"{name} must be probabilities in [0, 1]; row {_row_label(probs, r)} has a"
            f" negative value {lo:.6g} (pass logits=True for raw model outputs)"
        )
    sums = rows.sum(axis=-1)
    dev = np.abs(sums - 1.0)
    r = int(np.argmax(dev))
    return InvalidScoresError(
        f"{name} rows must sum to 1 within atol={atol:g}; row {_row_label(probs, r)} sums to"
        f" {float(sums[r]):.6g} (pass logits=True for raw model outputs)"
    )


def _checked(
    p: ArrayLike, name: str, logits: bool, atol: float, ndim: int | None, method: str = ""
) -> Float64Array:
    """Convert, check shape, (softmax), check values: the one validation pass.

    ``ndim`` is the required number of dimensions (3 also requires 2 or more members on
    axis 0), or None for "at least 2" (dense input). ``method`` only words the messages.
    """
    raw = _as_float_array(p, name)
    if ndim is not None and raw.ndim != ndim:
        where = f" for method {method!r}" if method else ""
        if ndim == 2:
            want = "(n_samples, n_classes)"
            hint = (
                " (wrap a single sample as p[None, :])"
                if raw.ndim == 1
                else f" (committee input takes one of {', '.join(COMMITTEE_METHODS)})"
                if raw.ndim == 3
                else ""
            )
        else:
            want = "(n_members, n_samples, n_classes)"
            hint = (
                f" (single-model input takes one of {', '.join(PER_SAMPLE_METHODS)})"
                if raw.ndim == 2
                else ""
            )
        raise InvalidScoresError(
            f"{name} must be {ndim}-D with shape {want}{where}; got shape {raw.shape}{hint}"
        )
    if ndim is None and raw.ndim < 2:
        raise InvalidScoresError(
            f"{name} must have shape (..., n_classes) with at least one leading axis;"
            f" got shape {raw.shape}"
        )
    k = raw.shape[-1]
    if k < 2:
        raise InvalidScoresError(
            f"{name} must have at least 2 classes on its last axis; got n_classes={k}"
        )
    if ndim == 3 and raw.shape[0] < 2:
        where = f" for method {method!r}" if method else ""
        raise InvalidScoresError(
            f"{name} must hold at least 2 committee members or stochastic passes on axis 0"
            f" of (n_members, n_samples, n_classes){where}; got n_members={raw.shape[0]}"
        )
    if raw.size == 0:
        return raw
    if logits:
        # +inf, NaN or all -inf logits give NaN rows, diagnosed below; logits of opposite
        # signs near the float limit give exact zeros (exp(-inf)).
        with np.errstate(invalid="ignore", over="ignore"):
            probs = softmax(raw, axis=-1)
    else:
        probs = raw
        if isinstance(p, np.ndarray) and p.dtype == np.float16:
            # Half-precision outputs (TensorRT FP16) round every value by up to 2**-11
            # relative: a tolerance of K ulps keeps valid rows valid.
            atol = max(atol, k * _F16_EPS)
    # Fast path: three reductions. NaN propagates through min/max and +-inf through the
    # row sums, so non-finite input fails one of the comparisons too. Non-negative rows
    # that sum to at most 1 + atol hold no value above 1 + atol.
    if not (
        np.minimum.reduce(probs, axis=None) >= 0.0
        and np.maximum.reduce(np.abs(np.add.reduce(probs, axis=-1) - 1.0), axis=None) <= atol
    ):
        raise _diagnose(name, probs, raw if logits else None, atol)
    return probs


def validate_probs(
    p: ArrayLike, *, logits: bool = False, atol: float = _DEFAULT_ATOL
) -> Float64Array:
    """Check ``(n, K)`` class probabilities and return them as float64.

    Requires a 2-D array with ``K >= 2`` classes, finite non-negative values and rows
    summing to 1 within ``atol`` (so no value exceeds ``1 + atol``; the measures clip their
    scores to [0, 1]). A float16 array gets ``atol`` of at least ``K`` half-precision ulps.
    With ``logits=True`` a stable softmax is applied first. The input is never modified; a
    float64 array passes through without a copy.

    >>> validate_probs([[0.2, 0.8]]).tolist()
    [[0.2, 0.8]]
    >>> validate_probs([[0.2, 0.7]])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    selector.errors.InvalidScoresError: p rows must sum to 1 within atol=0.0001; row [0] ...
    """
    if not (math.isfinite(atol) and atol >= 0.0):
        raise InvalidConfigError(f"atol must be a finite number >= 0; got {atol!r}")
    return _checked(p, "p", logits, atol, 2)


# --------------------------------------------------------------------------------------
# per-sample measures over (n, K)
# --------------------------------------------------------------------------------------


def _clip_unit(x: Float64Array) -> Float64Array:
    """Clip to [0, 1]: the slack ``atol`` allows in row sums must not leak into scores.

    Two plain ufuncs: on tiny arrays np.clip and ``out=`` with a Python scalar cost more.
    """
    clipped: Float64Array = np.minimum(np.maximum(x, 0.0), 1.0)
    return clipped


def _plogp_sum(p: Float64Array) -> Float64Array:
    """``sum_k p_k log p_k`` (minus the entropy, in nats) along the last axis; 0 log 0 = 0."""
    s: Float64Array = np.add.reduce(p * np.log(np.maximum(p, _TINY)), axis=-1)
    return s


def _entropy(p: Float64Array) -> Float64Array:
    return _clip_unit(_plogp_sum(p) * (-1.0 / math.log(p.shape[-1])))


def _least_confidence(p: Float64Array) -> Float64Array:
    k = p.shape[-1]
    return _clip_unit((1.0 - np.maximum.reduce(p, axis=-1)) * (k / (k - 1)))


def _top_two(p: Float64Array) -> tuple[Float64Array, Float64Array]:
    """Largest and second largest value of every row."""
    k = p.shape[-1]
    part = np.partition(p, k - 2, axis=-1)
    return part[..., k - 1], part[..., k - 2]


def _margin(p: Float64Array) -> Float64Array:
    p1, p2 = _top_two(p)
    s: Float64Array = 1.0 - (p1 - p2)
    return _clip_unit(s)


def _ratio(p: Float64Array) -> Float64Array:
    # p1 >= (1 - atol) / K > 0 for any validated row: no division by zero.
    p1, p2 = _top_two(p)
    s: Float64Array = p2 / p1
    return _clip_unit(s)


# Single-row fast path. One frame scored on the vehicle is a (1, K) array, and a dozen
# numpy calls on ten numbers cost far more than the arithmetic: the same checks and
# formulas on a Python list of floats are about four times faster. Anything unusual (a
# batch, many classes, a failed check, float16 rounding beyond 1e-4) takes the vectorised
# path, which also words every error; the two paths agree to rounding (tests: 1e-12).
_FAST_MAX_CLASSES: Final = 32


def _single_row(p: ArrayLike, logits: bool) -> list[float] | None:
    """The one row of a valid ``(1, K)`` input as probabilities, or None to go vectorised."""
    if isinstance(p, np.ndarray) and (p.ndim != 2 or p.shape[0] != 1):
        return None  # a batch: no conversion here, the vectorised path converts once
    try:
        a = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if a.ndim != 2 or a.shape[0] != 1 or not 2 <= a.shape[1] <= _FAST_MAX_CLASSES:
        return None
    return _row_probs(a.tolist()[0], logits)


def _row_probs(row: list[float], logits: bool) -> list[float] | None:
    """``row`` (one sample's floats) as valid probabilities, or None to go vectorised."""
    try:
        total = math.fsum(row)  # NaN and inf make the total non-finite (or raise)
    except (ValueError, OverflowError):
        return None
    if logits:
        if not math.isfinite(total):
            return None
        top = max(row)
        exps = [math.exp(x - top) for x in row]
        z = math.fsum(exps)  # >= 1: the top class contributes exp(0)
        return [e / z for e in exps]
    if not abs(total - 1.0) <= _DEFAULT_ATOL or min(row) < 0.0:
        return None
    return row


def _entropy_row(row: list[float]) -> float:
    log = math.log
    h = 0.0
    for x in row:
        if x > 0.0:
            h -= x * log(x)
    return min(max(h / math.log(len(row)), 0.0), 1.0)


def _least_confidence_row(row: list[float]) -> float:
    k = len(row)
    return min(max((1.0 - max(row)) * (k / (k - 1)), 0.0), 1.0)


def _margin_row(row: list[float]) -> float:
    p2, p1 = sorted(row)[-2:]
    return min(max(1.0 - (p1 - p2), 0.0), 1.0)


def _ratio_row(row: list[float]) -> float:
    p2, p1 = sorted(row)[-2:]
    return min(max(p2 / p1, 0.0), 1.0)


def _per_sample(method: str, p: ArrayLike, logits: bool, name: str = "p") -> Float64Array:
    """Score ``(n, K)`` input with a per-sample ``method`` (assumed valid)."""
    row = _single_row(p, logits)
    if row is not None:
        return np.array([_PER_SAMPLE_ROW[method](row)])
    return _PER_SAMPLE[method](_checked(p, name, logits, _DEFAULT_ATOL, 2, method))


def entropy(p: ArrayLike, *, logits: bool = False) -> Float64Array:
    """Shannon entropy of each row divided by ``log K``: 0 for one-hot, 1 for uniform.

    >>> entropy([[0.5, 0.5], [1.0, 0.0]]).tolist()  # log 2 / log 2, 0 log 0 = 0
    [1.0, 0.0]
    >>> entropy([[0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]).tolist()
    [0.0, 1.0]
    """
    return _per_sample("entropy", p, logits)


def least_confidence(p: ArrayLike, *, logits: bool = False) -> Float64Array:
    """``(1 - max_k p_k) * K / (K - 1)``: 0 when one class has all the mass, 1 for uniform.

    >>> least_confidence([[0.6, 0.3, 0.1]]).round(6).tolist()  # 0.4 * 3 / 2
    [0.6]
    """
    return _per_sample("least_confidence", p, logits)


def margin(p: ArrayLike, *, logits: bool = False) -> Float64Array:
    """``1 - (p1 - p2)`` with ``p1 >= p2`` the two largest probabilities of the row.

    >>> margin([[0.6, 0.3, 0.1]]).round(6).tolist()  # 1 - (0.6 - 0.3)
    [0.7]
    """
    return _per_sample("margin", p, logits)


def ratio(p: ArrayLike, *, logits: bool = False) -> Float64Array:
    """``p2 / p1``, the second largest probability over the largest: 1 at a tie.

    >>> ratio([[0.6, 0.3, 0.1]]).round(6).tolist()  # 0.3 / 0.6
    [0.5]
    """
    return _per_sample("ratio", p, logits)


# --------------------------------------------------------------------------------------
# committee measures over (T, n, K)
# --------------------------------------------------------------------------------------


def _checked_committee(p: ArrayLike, logits: bool, method: str = "") -> Float64Array:
    return _checked(p, "p", logits, _DEFAULT_ATOL, 3, method)


def _mutual_information(p: Float64Array) -> Float64Array:
    """H(mean_t p_t) - mean_t H(p_t) in nats, per sample; clipped at 0 against rounding."""
    mi: Float64Array = np.maximum(_plogp_sum(p).mean(axis=0) - _plogp_sum(p.mean(axis=0)), 0.0)
    return mi


def _bald(p: Float64Array) -> Float64Array:
    return _clip_unit(_mutual_information(p) * (1.0 / math.log(p.shape[-1])))


def _vote_entropy(p: Float64Array) -> Float64Array:
    t, _, k = p.shape
    is_top = p == np.max(p, axis=-1, keepdims=True)
    votes = is_top / np.sum(is_top, axis=-1, keepdims=True)  # a tie splits the vote
    share = votes.sum(axis=0) / t
    return _clip_unit(_plogp_sum(share) * (-1.0 / math.log(min(t, k))))


def _mean_kl(p: Float64Array) -> Float64Array:
    consensus = p.mean(axis=0)
    log_p = np.log(np.maximum(p, _TINY))
    log_c = np.log(np.maximum(consensus, _TINY))
    # Where p_t = 0 the term is 0 whatever log_c is (finite thanks to _TINY); where
    # p_t > 0 the consensus is >= p_t / T > 0, so the term is exact.
    kl = np.maximum(np.add.reduce(p * (log_p - log_c), axis=-1).mean(axis=0), 0.0)
    return _clip_unit(-np.expm1(-kl))  # 1 - exp(-kl), accurate for small kl


def bald(p: ArrayLike, *, logits: bool = False) -> Float64Array:
    """BALD: mutual information between prediction and model, divided by ``log K``.

    ``p`` has shape ``(T, n, K)``: T >= 2 ensemble members or MC-dropout passes. The score
    is ``H(mean_t p_t) - mean_t H(p_t)``: 0 when every member says the same thing (however
    unsure), 1 when confident members spread evenly over all K classes.

    >>> bald([[[1.0, 0.0]], [[0.0, 1.0]]]).tolist()  # H([.5, .5]) - 0 = log 2
    [1.0]
    >>> bald([[[0.5, 0.5]], [[0.5, 0.5]]]).tolist()  # members agree: no disagreement
    [0.0]
    """
    return _bald(_checked_committee(p, logits))


def vote_entropy(p: ArrayLike, *, logits: bool = False) -> Float64Array:
    """Entropy of the members' argmax votes, divided by ``log min(T, K)``.

    A member whose top probability is tied between classes splits its one vote equally
    between them, so the score does not depend on class order. With T votes over K classes
    the largest possible entropy is below ``log min(T, K)`` when T is not a multiple of
    ``min(T, K)`` (3 votes over 2 classes top out at ``H([2/3, 1/3]) / log 2 = 0.918``),
    and split votes can exceed it when T < K; scores are clipped to [0, 1].

    >>> vote_entropy([[[0.9, 0.1]], [[0.2, 0.8]]]).tolist()  # votes 0 and 1: H = log 2
    [1.0]
    >>> vote_entropy([[[0.9, 0.1]], [[0.6, 0.4]]]).tolist()  # both vote 0
    [0.0]
    """
    return _vote_entropy(_checked_committee(p, logits))


def mean_kl(p: ArrayLike, *, logits: bool = False) -> Float64Array:
    """Mean KL divergence of each member from the consensus, mapped by ``1 - exp(-kl)``.

    ``kl = mean_t KL(p_t || mean_t p_t)`` in nats (McCallum and Nigam's "KL to the mean")
    is unbounded above in general, so it is mapped monotonically to [0, 1) by
    ``1 - exp(-kl)``: 0 for full agreement, 0.5 at ``kl = log 2``. (Averaged over members
    it equals the mutual information of :func:`bald`, before normalisation.)

    >>> mean_kl([[[1.0, 0.0]], [[0.0, 1.0]]]).round(6).tolist()  # kl = log 2: 1 - 1/2
    [0.5]
    """
    return _mean_kl(_checked_committee(p, logits))


# --------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------

_PER_SAMPLE: Final[Mapping[str, Callable[[Float64Array], Float64Array]]] = MappingProxyType(
    {
        "entropy": _entropy,
        "least_confidence": _least_confidence,
        "margin": _margin,
        "ratio": _ratio,
    }
)
_PER_SAMPLE_ROW: Final[Mapping[str, Callable[[list[float]], float]]] = MappingProxyType(
    {
        "entropy": _entropy_row,
        "least_confidence": _least_confidence_row,
        "margin": _margin_row,
        "ratio": _ratio_row,
    }
)
_COMMITTEE: Final[Mapping[str, Callable[[Float64Array], Float64Array]]] = MappingProxyType(
    {"bald": _bald, "vote_entropy": _vote_entropy, "mean_kl": _mean_kl}
)


def check_method(method: str) -> None:
    """Raise :class:`InvalidConfigError` unless ``method`` names a known measure.

    >>> check_method("entropy")
    >>> check_method("entropie")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    selector.errors.InvalidConfigError: method must be one of 'entropy', ...; got 'entropie'
    """
    if method not in _PER_SAMPLE and method not in _COMMITTEE:
        valid = ", ".join(repr(m) for m in PER_SAMPLE_METHODS + COMMITTEE_METHODS)
        raise InvalidConfigError(f"method must be one of {valid}; got {method!r}")


def _score_rows(p: ArrayLike, method: str, logits: bool, name: str) -> Float64Array:
    """A per-sample ``method`` over ``(n, K)`` ``p``, with messages naming ``name``.

    For :mod:`selector.aggregate`; ``method`` is assumed checked.
    """
    return _per_sample(method, p, logits, name)


def uncertainty_scores(p: ArrayLike, method: str, *, logits: bool = False) -> Float64Array:
    """Score every sample with the measure named ``method``.

    Per-sample methods (:data:`PER_SAMPLE_METHODS`) take ``(n, K)``; committee methods
    (:data:`COMMITTEE_METHODS`) take ``(T, n, K)``. Returns ``(n,)`` float64 in [0, 1].

    >>> uncertainty_scores([[0.6, 0.3, 0.1]], "margin").round(6).tolist()
    [0.7]
    >>> uncertainty_scores([[[1.0, 0.0]], [[0.0, 1.0]]], "bald").tolist()
    [1.0]
    """
    check_method(method)
    if method in _PER_SAMPLE:
        return _per_sample(method, p, logits)
    return _COMMITTEE[method](_checked_committee(p, logits, method))


def score_one(p: ArrayLike, method: str, *, logits: bool = False) -> float:
    """The uncertainty of one sample: ``p`` is ``(K,)`` (``(T, K)`` for a committee method).

    The same value as ``uncertainty_scores`` on a batch of one, without the batch: a 1-D
    float array of a per-sample method is scored on a Python list (no numpy calls on ten
    numbers); anything else goes through :func:`uncertainty_scores`, which words every error.

    >>> round(score_one(np.array([0.6, 0.3, 0.1]), "margin"), 6)
    0.7
    >>> score_one(np.array([0.6, 0.3, 0.1]), "entropy") == float(entropy([[0.6, 0.3, 0.1]])[0])
    True
    """
    if (
        type(p) is np.ndarray
        and p.ndim == 1
        and p.dtype.char in "dfe"  # float64, float32, float16: exact as Python floats
        and 2 <= p.shape[0] <= _FAST_MAX_CLASSES
    ):
        score_row = _PER_SAMPLE_ROW.get(method)
        if score_row is not None:
            row = _row_probs(p.tolist(), logits)
            if row is not None:
                return score_row(row)
    check_method(method)
    a = np.asarray(p)  # the dtype kept: the vectorised checks allow for float16 rounding
    batch = a[None, ...] if method in _PER_SAMPLE else a[:, None, ...]
    return float(uncertainty_scores(batch, method, logits=logits)[0])
