"""Fusing scores: camera with LiDAR, and uncertainty with novelty.

Every score here is a float in [0, 1] (as :mod:`selector.uncertainty` and the diversity
memory produce them), and so is every result. Rules and weights are checked first and
raise :class:`~selector.errors.InvalidConfigError`; scores out of range raise
:class:`~selector.errors.InvalidScoresError`.

>>> fuse_sensors(0.2, 0.6, "max")
0.6
>>> fuse_sensors(None, 0.6, "product")  # no camera score: the LiDAR score stands
0.6
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from selector.errors import InvalidConfigError, InvalidScoresError

__all__ = [
    "COMBINE_RULES",
    "FUSION_RULES",
    "combine_uncertainty_novelty",
    "combine_uncertainty_novelty_many",
    "fuse_sensors",
]

FUSION_RULES: Final = ("max", "weighted_mean", "product")
COMBINE_RULES: Final = ("uncertainty", "novelty", "weighted", "product", "geometric")


def _check_name(value: str, name: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        options = ", ".join(repr(v) for v in valid)
        raise InvalidConfigError(f"{name} must be one of {options}; got {value!r}")


def _check_weight(value: float, name: str) -> float:
    try:
        w = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidConfigError(f"{name} must be a number in [0, 1]; got {value!r}") from exc
    if isinstance(value, bool) or not 0.0 <= w <= 1.0:  # NaN fails the comparison
        raise InvalidConfigError(f"{name} must be a number in [0, 1]; got {value!r}")
    return w


def _check_score(value: float, name: str) -> float:
    try:
        s = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidScoresError(f"{name} must be a score in [0, 1]; got {value!r}") from exc
    if isinstance(value, bool) or not 0.0 <= s <= 1.0:  # NaN fails the comparison
        raise InvalidScoresError(f"{name} must be a finite score in [0, 1]; got {value!r}")
    return s


def fuse_sensors(
    camera: float | None,
    lidar: float | None,
    rule: str,
    *,
    camera_weight: float = 0.5,
) -> float:
    """One frame score from a camera score and a LiDAR score.

    Rules (:data:`FUSION_RULES`): ``"max"`` (either sensor being unsure is enough),
    ``"weighted_mean"`` (``camera_weight * camera + (1 - camera_weight) * lidar``) and
    ``"product"`` (both must be unsure). When one sensor has no score (``None``: no model,
    a dropped sweep), the other's score is returned unchanged, whatever the rule; both
    ``None`` raises :class:`InvalidScoresError`.

    >>> fuse_sensors(0.5, 0.25, "weighted_mean", camera_weight=0.75)  # 0.375 + 0.0625
    0.4375
    >>> fuse_sensors(0.5, 0.6, "product")
    0.3
    """
    _check_name(rule, "rule", FUSION_RULES)
    w = _check_weight(camera_weight, "camera_weight")
    if camera is None:
        if lidar is None:
            raise InvalidScoresError(
                "camera and lidar are both None: at least one sensor score is needed"
            )
        return _check_score(lidar, "lidar")
    c = _check_score(camera, "camera")
    if lidar is None:
        return c
    li = _check_score(lidar, "lidar")
    if rule == "max":
        return max(c, li)
    if rule == "weighted_mean":
        return min(w * c + (1.0 - w) * li, 1.0)
    return c * li


def combine_uncertainty_novelty(
    uncertainty: float,
    novelty: float,
    rule: str,
    *,
    alpha: float = 0.5,
) -> float:
    """One frame score from its uncertainty ``u`` and its novelty ``n`` (diversity).

    Rules (:data:`COMBINE_RULES`): ``"uncertainty"`` (``u``, novelty ignored),
    ``"novelty"`` (``n``), ``"weighted"`` (``alpha * u + (1 - alpha) * n``), ``"product"``
    (``u * n``) and ``"geometric"`` (``u ** alpha * n ** (1 - alpha)``; 0 as soon as either
    is 0 with a non-zero exponent). ``alpha`` in [0, 1] is used by ``"weighted"`` and
    ``"geometric"`` only.

    >>> combine_uncertainty_novelty(0.5, 0.25, "weighted", alpha=0.75)  # 0.375 + 0.0625
    0.4375
    >>> combine_uncertainty_novelty(0.64, 0.25, "geometric")  # sqrt(0.64 * 0.25)
    0.4
    """
    _check_name(rule, "rule", COMBINE_RULES)
    a = _check_weight(alpha, "alpha")
    u = _check_score(uncertainty, "uncertainty")
    n = _check_score(novelty, "novelty")
    if rule == "uncertainty":
        return u
    if rule == "novelty":
        return n
    if rule == "weighted":
        return min(a * u + (1.0 - a) * n, 1.0)
    if rule == "product":
        return u * n
    # geometric; math.pow(0.0, 0.0) == 1.0, so alpha in {0, 1} selects one score exactly.
    return math.pow(u, a) * math.pow(n, 1.0 - a)


def _unit_array(x: ArrayLike, name: str) -> NDArray[np.float64]:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidScoresError(f"{name} must be an array of scores in [0, 1]: {exc}") from exc
    if a.size and not (
        np.minimum.reduce(a, axis=None) >= 0.0 and np.maximum.reduce(a, axis=None) <= 1.0
    ):
        flat = a.ravel()
        i = int(np.argmax(~((flat >= 0.0) & (flat <= 1.0))))
        raise InvalidScoresError(
            f"{name} must hold finite scores in [0, 1]; item {i} (flat index) is {float(flat[i])!r}"
        )
    return a


def combine_uncertainty_novelty_many(
    uncertainty: ArrayLike,
    novelty: ArrayLike,
    rule: str,
    *,
    alpha: float = 0.5,
) -> NDArray[np.float64]:
    """:func:`combine_uncertainty_novelty` over arrays of equal shape, vectorised.

    >>> combine_uncertainty_novelty_many([0.5, 0.0], [0.5, 1.0], "product").tolist()
    [0.25, 0.0]
    """
    _check_name(rule, "rule", COMBINE_RULES)
    a = _check_weight(alpha, "alpha")
    u = _unit_array(uncertainty, "uncertainty")
    n = _unit_array(novelty, "novelty")
    if u.shape != n.shape:
        raise InvalidScoresError(
            f"uncertainty and novelty must have the same shape; got {u.shape} and {n.shape}"
        )
    if rule == "uncertainty":
        return u.copy()
    if rule == "novelty":
        return n.copy()
    out: NDArray[np.float64]
    if rule == "weighted":
        out = np.minimum(a * u + (1.0 - a) * n, 1.0)
    elif rule == "product":
        out = u * n
    else:  # geometric; np.power(0.0, 0.0) == 1.0 as with math.pow
        out = np.power(u, a) * np.power(n, 1.0 - a)
    return out
