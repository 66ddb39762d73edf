"""Selection strategies behind one interface: one frame in, selected or not (committed).

* ``random``: :class:`selector.baseline.RandomSelector`, the product's baseline (always run);
* ``ours``: :class:`selector.stream.StreamSelector` with the default :class:`SelectorConfig`
  (margin, no cold start, the score window refreshed at every refit, a diversity memory sized
  to the stream's features) -- the very code and configuration the vehicle runs, fed
  ``predict_proba`` of the current model and told of every refit;
* ``ours-nodiv``: the same without a diversity memory;
* ``ours-entropy`` / ``ours-keep`` / ``ours-previous``: the default with entropy instead of
  margin / with the score window kept across model swaps / the default before the closed-loop
  work (entropy, 500-frame cold start, window kept), for the record of what lost;
* ``skactiveml-random``: ``StreamRandomSampling``;
* ``skactiveml-varunc`` / ``skactiveml-split``: the budget managers of scikit-activeml's
  ``VariableUncertainty`` / ``Split`` fed their utility ``1 - max p`` (what those query
  strategies compute from ``predict_proba`` before calling their budget manager);
* ``skactiveml-biqf``: ``BalancedIncrementalQuantileFilter`` fed our utility (normalised
  entropy, :func:`selector.uncertainty.entropy`).

Each is built by a factory ``(budget, seed, dim) -> Strategy``, registered in
:data:`STRATEGIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from selector.baseline import RandomSelector
from selector.budget import BudgetConfig
from selector.stream import DiversityConfig, FrameScores, SelectorConfig, StreamSelector
from selector.uncertainty import score_one

__all__ = ["STRATEGIES", "Frame", "Strategy", "make_strategy"]


@dataclass(frozen=True, slots=True)
class Frame:
    """What a strategy sees of one frame."""

    probs: NDArray[np.float64]  # (K,), the current model's predict_proba
    features: NDArray[np.float32]  # (d,)
    timestamp_s: float
    position: tuple[float, float]


class Strategy(Protocol):
    """Decide one frame and commit the decision; ``True`` means take its label."""

    name: str

    def select(self, frame: Frame) -> bool: ...

    def model_changed(self) -> None:
        """The loop swapped the model (a refit): what follows is scored by the new one."""


class OurSelector:
    """:class:`StreamSelector` or :class:`RandomSelector`, decided and committed per frame."""

    def __init__(self, name: str, selector: StreamSelector | RandomSelector) -> None:
        self.name = name
        self.selector = selector

    def select(self, frame: Frame) -> bool:
        scores = FrameScores(
            timestamp_s=frame.timestamp_s,
            camera_probs=frame.probs,
            position=frame.position,
            embedding=frame.features,
        )
        decision = self.selector.decide(scores)
        self.selector.update(decision, scores)
        return decision.selected

    def model_changed(self) -> None:
        """Tell the selector, as the agent does at a model swap."""
        # The loop's features are the stream's own, not the model's: the embedding space stays.
        self.selector.model_changed(embedding_changed=False)


class SkactivemlRandom:
    """scikit-activeml's ``StreamRandomSampling`` (query, then update, per frame)."""

    def __init__(self, budget: float, seed: int) -> None:
        from skactiveml.stream import StreamRandomSampling

        self.name = "skactiveml-random"
        self._qs = StreamRandomSampling(budget=budget, random_state=seed)

    def select(self, frame: Frame) -> bool:
        candidates = frame.features[None, :]
        queried = self._qs.query(candidates)
        self._qs.update(candidates, queried)
        return bool(len(queried))

    def model_changed(self) -> None:
        """Random sampling does not look at the model."""


class SkactivemlBudgetManager:
    """A scikit-activeml budget manager fed ``utility(probs)``, one frame at a time."""

    def __init__(
        self,
        name: str,
        manager: Any,
        utility: Callable[[NDArray[np.float64]], float],
        *,
        pass_utilities: bool = False,
    ) -> None:
        self.name = name
        self._manager = manager
        self._utility = utility
        self._pass_utilities = pass_utilities

    def select(self, frame: Frame) -> bool:
        utilities = np.array([self._utility(frame.probs)])
        queried = self._manager.query_by_utility(utilities)
        candidates = frame.features[None, :]
        if self._pass_utilities:
            self._manager.update(candidates, queried, utilities=utilities)
        else:
            self._manager.update(candidates, queried)
        return bool(len(queried))

    def model_changed(self) -> None:
        """scikit-activeml's budget managers have no notion of a model swap."""


def least_confidence(probs: NDArray[np.float64]) -> float:
    """``1 - max p``: the utility of scikit-activeml's Žliobaitė strategies."""
    return 1.0 - float(probs.max())


def our_utility(probs: NDArray[np.float64]) -> float:
    """Our default utility, the normalised entropy (the selector's own scoring)."""
    return score_one(probs, "entropy")


def _ours(budget: float, seed: int, dim: int) -> Strategy:
    config = SelectorConfig(budget=BudgetConfig(target_rate=budget))  # the vehicle's default
    return OurSelector("ours", StreamSelector(config, seed=seed))


def _ours_previous(budget: float, seed: int, dim: int) -> Strategy:
    """The default before the closed-loop work: entropy, a 500-frame random cold start, the
    score window kept across model swaps (what the issue measured)."""
    config = SelectorConfig(
        budget=BudgetConfig(target_rate=budget, cold_start_frames=500, model_change="keep"),
        uncertainty_method="entropy",
        diversity=DiversityConfig(dim=dim),
    )
    return OurSelector("ours-previous", StreamSelector(config, seed=seed))


def _ours_entropy(budget: float, seed: int, dim: int) -> Strategy:
    config = SelectorConfig(budget=BudgetConfig(target_rate=budget), uncertainty_method="entropy")
    return OurSelector("ours-entropy", StreamSelector(config, seed=seed))


def _ours_keep(budget: float, seed: int, dim: int) -> Strategy:
    config = SelectorConfig(budget=BudgetConfig(target_rate=budget, model_change="keep"))
    return OurSelector("ours-keep", StreamSelector(config, seed=seed))


def _ours_nodiv(budget: float, seed: int, dim: int) -> Strategy:
    config = SelectorConfig(budget=BudgetConfig(target_rate=budget), diversity=None)
    return OurSelector("ours-nodiv", StreamSelector(config, seed=seed))


def _random(budget: float, seed: int, dim: int) -> Strategy:
    return OurSelector("random", RandomSelector(BudgetConfig(target_rate=budget), seed=seed))


def _sk_random(budget: float, seed: int, dim: int) -> Strategy:
    return SkactivemlRandom(budget, seed)


def _sk_varunc(budget: float, seed: int, dim: int) -> Strategy:
    from skactiveml.stream.budgetmanager import VariableUncertaintyBudgetManager

    manager = VariableUncertaintyBudgetManager(budget=budget)
    return SkactivemlBudgetManager("skactiveml-varunc", manager, least_confidence)


def _sk_split(budget: float, seed: int, dim: int) -> Strategy:
    from skactiveml.stream.budgetmanager import SplitBudgetManager

    manager = SplitBudgetManager(budget=budget, random_state=seed)
    return SkactivemlBudgetManager("skactiveml-split", manager, least_confidence)


def _sk_biqf(budget: float, seed: int, dim: int) -> Strategy:
    from skactiveml.stream.budgetmanager import BalancedIncrementalQuantileFilter

    manager = BalancedIncrementalQuantileFilter(budget=budget)
    return SkactivemlBudgetManager("skactiveml-biqf", manager, our_utility, pass_utilities=True)


StrategyFactory = Callable[[float, int, int], Strategy]
"""``factory(budget, seed, dim) -> Strategy``."""

STRATEGIES: dict[str, StrategyFactory] = {
    "random": _random,
    "ours": _ours,
    "ours-nodiv": _ours_nodiv,
    "ours-entropy": _ours_entropy,
    "ours-keep": _ours_keep,
    "ours-previous": _ours_previous,
    "skactiveml-random": _sk_random,
    "skactiveml-varunc": _sk_varunc,
    "skactiveml-split": _sk_split,
    "skactiveml-biqf": _sk_biqf,
}


def make_strategy(name: str, budget: float, seed: int, dim: int) -> Strategy:
    """A fresh strategy by name (see :data:`STRATEGIES`)."""
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}, got {name!r}") from None
    return factory(budget, seed, dim)
