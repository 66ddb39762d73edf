"""From many per-item scores (boxes, pixels, points) to one score per frame.

:func:`aggregate` reduces a 1-D array of scores by a named rule; :func:`detection_score`
scores the class probabilities of every detected box and aggregates them;
:func:`dense_score` does the same for per-pixel (segmentation) or per-point (LiDAR)
probabilities of any leading shape.

>>> aggregate([0.2, 0.9, 0.4], "max")
0.9
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from selector.errors import InvalidConfigError, InvalidScoresError
from selector.uncertainty import PER_SAMPLE_METHODS, _score_rows, check_method

__all__ = ["AGGREGATION_RULES", "aggregate", "dense_score", "detection_score"]

AGGREGATION_RULES: Final = ("max", "mean", "sum", "topk_mean", "weighted_mean")


def _check_rule(rule: str) -> None:
    if rule not in AGGREGATION_RULES:
        valid = ", ".join(repr(r) for r in AGGREGATION_RULES)
        raise InvalidConfigError(f"rule must be one of {valid}; got {rule!r}")


def _topk_count(k: object, n: int) -> int:
    """How many of ``n`` items ``topk_mean`` averages.

    An int ``k >= 1`` is a count (all ``n`` items when ``k >= n``); a float in (0, 1] is
    a fraction of the items, rounded up, at least one.
    """
    if isinstance(k, bool) or not isinstance(k, int | float | np.integer | np.floating):
        raise InvalidConfigError(
            f"k must be an int count >= 1 or a float fraction in (0, 1]; got {k!r}"
        )
    if isinstance(k, int | np.integer):
        if k < 1:
            raise InvalidConfigError(f"k must be an int count >= 1; got {k!r}")
        return min(int(k), n)
    frac = float(k)
    if not (0.0 < frac <= 1.0):
        raise InvalidConfigError(
            f"k as a float is a fraction of the items and must be in (0, 1]; got {k!r}"
            " (pass an int for a count)"
        )
    return min(max(1, math.ceil(frac * n)), n)


def _check_unit(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidConfigError(f"{name} must be a number in [0, 1]; got {value!r}") from exc
    if isinstance(value, bool) or not (0.0 <= v <= 1.0):  # False for NaN too
        raise InvalidConfigError(f"{name} must be a number in [0, 1]; got {value!r}")
    return v


def _as_vector(x: ArrayLike, name: str) -> NDArray[np.float64]:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidScoresError(f"{name} must be an array of real numbers: {exc}") from exc
    if a.ndim != 1:
        raise InvalidScoresError(f"{name} must be 1-D; got shape {a.shape}")
    if a.size and not np.isfinite(np.add.reduce(a)):
        i = int(np.argmin(np.isfinite(a)))
        if np.isfinite(a[i]):  # every item finite, only their sum overflows
            raise InvalidScoresError(f"{name} is too large to aggregate: its sum overflows")
        raise InvalidScoresError(f"{name} must be finite; item {i} is {float(a[i])!r}")
    return a


def _check_weights(weights: ArrayLike, n: int) -> NDArray[np.float64]:
    w = _as_vector(weights, "weights")
    if w.size != n:
        raise InvalidScoresError(
            f"weights must have the same length as values; got {w.size} weights for {n} values"
        )
    if n and np.minimum.reduce(w) < 0.0:
        raise InvalidScoresError(f"weights must be >= 0; item {int(np.argmin(w))} is negative")
    return w


def _within(mean: float, items: NDArray[np.float64]) -> float:
    """Clamp a mean of ``items`` to their range: rounding must not lift a mean of scores in
    [0, 1] to 1.0000000000000002, which a later range check would reject."""
    return min(max(mean, float(np.minimum.reduce(items))), float(np.maximum.reduce(items)))


def aggregate(
    values: ArrayLike,
    rule: str,
    *,
    k: int | float = 3,
    weights: ArrayLike | None = None,
) -> float:
    """Reduce 1-D per-item scores to one float by ``rule``.

    Rules (:data:`AGGREGATION_RULES`): ``"max"``, ``"mean"``, ``"sum"``, ``"topk_mean"``
    (mean of the ``k`` largest; ``k`` an int count, or a float fraction of the items in
    (0, 1]; all items when there are fewer than ``k``) and ``"weighted_mean"`` (needs
    ``weights`` >= 0 of the same length, e.g. detection confidences; when they are all 0
    every item counts equally). ``weights`` is ignored by the other rules. An empty
    ``values`` raises :class:`InvalidScoresError`: decide what an empty frame scores
    before calling (as :func:`detection_score` does).

    >>> aggregate([0.2, 0.9, 0.4], "topk_mean", k=2)  # (0.9 + 0.4) / 2
    0.65
    >>> aggregate([0.25, 0.75], "weighted_mean", weights=[3.0, 1.0])  # (0.75 + 0.75) / 4
    0.375
    """
    _check_rule(rule)
    if rule == "topk_mean":
        _topk_count(k, 1)  # configuration errors before data errors
    if rule == "weighted_mean" and weights is None:
        raise InvalidConfigError("rule 'weighted_mean' needs weights; got weights=None")
    a = _as_vector(values, "values")
    n = a.size
    w = None if weights is None or rule != "weighted_mean" else _check_weights(weights, n)
    if n == 0:
        raise InvalidScoresError(
            "values is empty: there is nothing to aggregate (decide the score of an empty"
            " frame before calling)"
        )
    if rule == "max":
        return float(np.maximum.reduce(a))
    if rule == "sum":
        return float(np.add.reduce(a))
    if rule == "mean":
        return _within(float(np.add.reduce(a)) / n, a)
    if rule == "topk_mean":
        count = _topk_count(k, n)
        top = a if count >= n else np.partition(a, n - count)[n - count :]
        return _within(float(np.add.reduce(top)) / count, top)
    if w is None:  # cannot happen: rule is 'weighted_mean', whose weights are checked above
        raise InvalidConfigError("rule 'weighted_mean' needs weights; got weights=None")
    total = float(np.add.reduce(w))
    if total == 0.0:
        return _within(float(np.add.reduce(a)) / n, a)
    return _within(float(np.dot(a, w)) / total, a)


def detection_score(
    class_probs: ArrayLike,
    box_conf: ArrayLike,
    *,
    method: str = "entropy",
    rule: str = "max",
    k: int | float = 3,
    empty_score: float = 0.0,
    logits: bool = False,
) -> float:
    """Score a frame from its detections: per-box uncertainty, aggregated by ``rule``.

    ``class_probs`` is ``(m, K)`` (one row per box; logits with ``logits=True``) and
    ``box_conf`` ``(m,)`` the detector's confidence per box, in [0, 1]; rule
    ``"weighted_mean"`` weighs each box's uncertainty by it. ``method`` is one of
    :data:`~selector.uncertainty.PER_SAMPLE_METHODS`.

    A frame with no detection (``m == 0``; ``class_probs`` of shape ``(0, K)`` or ``(0,)``)
    scores ``empty_score``. The default 0.0 says that seeing nothing is not by itself
    uncertain; pass e.g. 1.0 when empty frames should be sent for labelling (a detector
    that misses everything is worth a look).

    >>> probs = [[0.5, 0.5], [0.9, 0.1]]
    >>> detection_score(probs, [0.3, 0.9], method="margin", rule="max")  # 1 - 0, 1 - 0.8
    1.0
    >>> detection_score(probs, [0.3, 0.9], method="margin", rule="weighted_mean")
    0.4
    >>> detection_score([], [])
    0.0
    """
    check_method(method)
    if method not in PER_SAMPLE_METHODS:
        valid = ", ".join(repr(m) for m in PER_SAMPLE_METHODS)
        raise InvalidConfigError(
            f"method for detections must be one of {valid} (one probability row per box);"
            f" got {method!r}"
        )
    _check_rule(rule)
    empty = _check_unit(empty_score, "empty_score")
    if rule == "topk_mean":
        _topk_count(k, 1)
    conf = _as_vector(box_conf, "box_conf")
    if conf.size and not (np.minimum.reduce(conf) >= 0.0 and np.maximum.reduce(conf) <= 1.0):
        i = int(np.argmax((conf < 0.0) | (conf > 1.0)))
        raise InvalidScoresError(f"box_conf must be in [0, 1]; box {i} has {float(conf[i])!r}")
    try:
        # No dtype: float16 outputs keep their dtype, and with it their tolerance.
        probs = np.asarray(class_probs)
    except (TypeError, ValueError) as exc:
        raise InvalidScoresError(f"class_probs must be an array of real numbers: {exc}") from exc
    if probs.ndim == 1 and probs.size == 0:
        m = 0  # np.asarray([]): no detection
    elif probs.ndim == 2:
        m = probs.shape[0]
    else:
        hint = " (wrap a single box as class_probs[None, :])" if probs.ndim == 1 else ""
        raise InvalidScoresError(
            "class_probs must be 2-D with shape (n_boxes, n_classes);"
            f" got shape {probs.shape}{hint}"
        )
    if m != conf.size:
        raise InvalidScoresError(
            f"box_conf must have one confidence per box: class_probs has shape {probs.shape},"
            f" box_conf has {conf.size} values"
        )
    if m == 0:
        return empty
    scores = _score_rows(probs, method, logits, "class_probs")
    return aggregate(scores, rule, k=k, weights=conf if rule == "weighted_mean" else None)


def dense_score(
    probs: ArrayLike,
    *,
    method: str = "entropy",
    rule: str = "mean",
    k: int | float = 0.01,
    class_axis: int = -1,
    logits: bool = False,
) -> float:
    """Score a frame from per-pixel or per-point class probabilities.

    ``probs`` has any leading shape with the classes on ``class_axis`` (default last:
    ``(H, W, K)`` for an image, ``(N, K)`` for a sweep; ``class_axis=0`` for a
    channels-first ``(K, H, W)`` map). It is flattened to ``(N, K)`` (a view when the
    classes are last and the array contiguous), scored by ``method`` in one vectorised pass
    and reduced by ``rule`` (not ``"weighted_mean"``). For ``"topk_mean"``, ``k`` is an int
    count of items or a float fraction of them (default 0.01: the most uncertain 1 %).

    >>> p = [[[0.5, 0.5], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]]  # a 2 x 2 image
    >>> dense_score(p)  # entropies 1, 0, 0, 0
    0.25
    >>> dense_score(p, rule="topk_mean", k=2)
    0.5
    """
    check_method(method)
    if method not in PER_SAMPLE_METHODS:
        valid = ", ".join(repr(m) for m in PER_SAMPLE_METHODS)
        raise InvalidConfigError(f"method for dense outputs must be one of {valid}; got {method!r}")
    _check_rule(rule)
    if rule == "weighted_mean":
        raise InvalidConfigError(
            "rule 'weighted_mean' needs per-item weights, which dense_score does not take;"
            " use one of 'max', 'mean', 'sum', 'topk_mean'"
        )
    if rule == "topk_mean":
        _topk_count(k, 1)
    try:
        a = np.asarray(probs)  # float64 conversion happens once, in the validation pass
    except (TypeError, ValueError) as exc:
        raise InvalidScoresError(f"probs must be an array of real numbers: {exc}") from exc
    if a.ndim < 2:
        raise InvalidScoresError(
            "probs must have shape (..., n_classes) with at least one leading axis;"
            f" got shape {a.shape}"
        )
    if not -a.ndim <= class_axis < a.ndim:
        raise InvalidConfigError(
            f"class_axis must be in [{-a.ndim}, {a.ndim - 1}] for probs of shape {a.shape};"
            f" got {class_axis}"
        )
    if class_axis not in (-1, a.ndim - 1):
        a = np.moveaxis(a, class_axis, -1)
    flat = a.reshape(-1, a.shape[-1])
    if flat.shape[0] == 0:
        raise InvalidScoresError(f"probs holds no pixel or point to score; got shape {a.shape}")
    # Rows are numbered in the flattened (N, K) view in error messages.
    scores = _score_rows(flat, method, logits, "probs")
    return aggregate(scores, rule, k=k)
