"""The model the closed loop retrains: a protocol and two learners.

* ``logreg``: multinomial logistic regression (scikit-learn), refit from scratch on every
  labeled set it is given (the loop owns the set);
* ``torch``: a small convolutional network (torch) on the stream's images, **fine-tuned**: each
  ``fit`` continues from the current weights for a few epochs on the whole labeled set, as
  the centre's trainer fine-tunes the fleet's model; on features that are not square images
  (PCA) the same network without its convolutions (an MLP).

Both return probabilities over all ``classes`` columns, also for classes they have not seen
yet (0 for ``logreg``; the network's softmax, which never saw them as targets, for ``torch``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["LEARNERS", "Learner", "LogisticRegressionLearner", "TorchLearner", "make_learner"]

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


class TorchLearner:
    """A small CNN (two 3x3 conv layers, 16 and 32 channels, max-pooling, a linear head),
    fine-tuned with Adam (lr 1e-3) for ``epochs`` passes of mini-batches of 32 at every fit.

    Deterministic for a seed on one thread (``torch.manual_seed``, the batch order from a
    seeded generator). Features of size ``s * s`` are taken as one ``s x s`` image; any other
    size goes to a two-layer MLP. The vehicle never runs this: it is centre-side like the
    trainer it stands for.
    """

    def __init__(self, classes: int, *, epochs: int = 8, seed: int = 0) -> None:
        if classes < 2:
            raise ValueError(f"classes must be >= 2, got {classes}")
        self.classes = classes
        self.epochs = epochs
        self.seed = seed
        self.fits = 0
        self._net: Any = None
        self._side = 0

    def _build(self, dim: int) -> Any:
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        side = round(dim**0.5)
        if side * side == dim and side >= 8:
            self._side = side
            pooled = side // 4
            return nn.Sequential(
                nn.Unflatten(1, (1, side, side)),
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * pooled * pooled, self.classes),
            )
        self._side = 0
        return nn.Sequential(nn.Linear(dim, 128), nn.ReLU(), nn.Linear(128, self.classes))

    def fit(self, features: NDArray[np.floating[Any]], labels: NDArray[np.int64]) -> None:
        """Fine-tune on ``features`` ``(n, d)`` and ``labels`` ``(n,)`` (the first call builds
        the network, seeded)."""
        import torch

        y = np.asarray(labels, dtype=np.int64)
        if y.ndim != 1 or y.shape[0] != features.shape[0] or y.shape[0] == 0:
            raise ValueError("fit needs as many labels as feature rows, at least one")
        if y.min() < 0 or y.max() >= self.classes:
            raise ValueError(f"labels must be in [0, {self.classes}), got {y.min()}..{y.max()}")
        if self._net is None:
            self._net = self._build(features.shape[1])
            self._opt = torch.optim.Adam(self._net.parameters(), lr=1e-3)
        self.fits += 1
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        t = torch.from_numpy(y)
        order = np.random.default_rng((self.seed, self.fits))
        loss_fn = torch.nn.CrossEntropyLoss()
        self._net.train()
        for _ in range(self.epochs):
            perm = torch.from_numpy(order.permutation(x.shape[0]))
            for start in range(0, x.shape[0], 32):
                idx = perm[start : start + 32]
                self._opt.zero_grad()
                loss = loss_fn(self._net(x[idx]), t[idx])
                loss.backward()
                self._opt.step()

    def predict_proba(self, features: NDArray[np.floating[Any]]) -> F64:
        """``(n, classes)`` softmax probabilities."""
        import torch

        if self._net is None:
            raise RuntimeError("predict_proba before fit")
        self._net.eval()
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
            out = torch.softmax(self._net(x), dim=1).numpy().astype(np.float64)
        return out


LearnerFactory = Callable[[int, int], Learner]
"""``factory(classes, seed) -> Learner``."""

LEARNERS: dict[str, LearnerFactory] = {
    "logreg": lambda classes, seed: LogisticRegressionLearner(classes, seed=seed),
    "torch": lambda classes, seed: TorchLearner(classes, seed=seed),
}


def make_learner(name: str, classes: int, seed: int) -> Learner:
    """A fresh learner by name (see :data:`LEARNERS`)."""
    try:
        factory = LEARNERS[name]
    except KeyError:
        raise ValueError(f"learner must be one of {sorted(LEARNERS)}, got {name!r}") from None
    return factory(classes, seed)
