"""The model the closed loop refits: a protocol, and a scikit-learn learner on features.

A learner is refit from scratch on every labeled set it is given (the loop owns the set) and
returns probabilities over all ``classes`` columns, also for classes it has not seen yet (0).

Extension point: a torch learner (the reference camera model fine-tuned on the labeled driving
frames) implements the same :class:`Learner` protocol and registers a factory in
:data:`LEARNERS`; the loop and the strategies need no change. It is not built yet.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["LEARNERS", "Learner", "LogisticRegressionLearner", "make_learner"]

F64 = NDArray[np.float64]


class Learner(Protocol):
    """A classifier the loop refits; ``predict_proba`` has one column per class."""

    classes: int

    def fit(self, features: NDArray[np.floating[Any]], labels: NDArray[np.int64]) -> None: ...

    def predict_proba(self, features: NDArray[np.floating[Any]]) -> F64: ...


class LogisticRegressionLearner:
    """Multinomial logistic regression (lbfgs), refit from scratch on each call to ``fit``.

    With one class seen so far it predicts that class with certainty. Fits that stop at
    ``max_iter`` are counted in ``not_converged`` (the warning is not raised: the loop refits
    again a few labels later).
    """

    def __init__(self, classes: int, *, c: float = 1.0, max_iter: int = 500, seed: int = 0) -> None:
        if classes < 2:
            raise ValueError(f"classes must be >= 2, got {classes}")
        self.classes = classes
        self.c = c
        self.max_iter = max_iter
        self.seed = seed
        self.fits = 0
        self.not_converged = 0
        self._model: Any = None
        self._seen: NDArray[np.int64] = np.empty(0, dtype=np.int64)

    def fit(self, features: NDArray[np.floating[Any]], labels: NDArray[np.int64]) -> None:
        """Fit on ``features`` ``(n, d)`` and ``labels`` ``(n,)`` in ``[0, classes)``."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(labels, dtype=np.int64)
        if y.ndim != 1 or y.shape[0] != features.shape[0] or y.shape[0] == 0:
            raise ValueError("fit needs as many labels as feature rows, at least one")
        if y.min() < 0 or y.max() >= self.classes:
            raise ValueError(f"labels must be in [0, {self.classes}), got {y.min()}..{y.max()}")
        self.fits += 1
        self._seen = np.unique(y)
        if self._seen.shape[0] == 1:
            self._model = None
            return
        model = LogisticRegression(C=self.c, max_iter=self.max_iter, random_state=self.seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(features, y)
        self.not_converged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        self._model = model

    def predict_proba(self, features: NDArray[np.floating[Any]]) -> F64:
        """``(n, classes)`` probabilities; 0 for classes not seen in the last fit."""
        if self._seen.shape[0] == 0:
            raise RuntimeError("predict_proba before fit")
        out = np.zeros((features.shape[0], self.classes), dtype=np.float64)
        if self._model is None:
            out[:, int(self._seen[0])] = 1.0
            return out
        out[:, self._model.classes_.astype(np.int64)] = self._model.predict_proba(features)
        return out


LearnerFactory = Callable[[int, int], Learner]
"""``factory(classes, seed) -> Learner``."""

LEARNERS: dict[str, LearnerFactory] = {
    "logreg": lambda classes, seed: LogisticRegressionLearner(classes, seed=seed),
}


def make_learner(name: str, classes: int, seed: int) -> Learner:
    """A fresh learner by name (see :data:`LEARNERS`)."""
    try:
        factory = LEARNERS[name]
    except KeyError:
        raise ValueError(f"learner must be one of {sorted(LEARNERS)}, got {name!r}") from None
    return factory(classes, seed)
