"""Every selection strategy by name, built from one :class:`SelectorConfig`.

The evaluation harness and the conformance suite iterate over :data:`STRATEGIES`; a new
strategy is registered here and must pass that suite.

>>> sorted(STRATEGIES)
['random', 'stream']
>>> from selector.budget import BudgetConfig
>>> cfg = SelectorConfig(budget=BudgetConfig(target_rate=0.1), diversity=None)
>>> sel = STRATEGIES["random"].build(cfg, 0)
>>> type(STRATEGIES["random"].restore(cfg, sel.state_bytes())).__name__
'RandomSelector'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from selector.baseline import RandomSelector
from selector.stream import Selector, SelectorConfig, StreamSelector

__all__ = ["STRATEGIES", "Strategy"]


@dataclass(frozen=True, slots=True)
class Strategy:
    """How to build a strategy from a config and a seed, and how to restore it."""

    build: Callable[[SelectorConfig, int], Selector]
    restore: Callable[[SelectorConfig, bytes], Selector]


def _random(config: SelectorConfig, seed: int) -> Selector:
    return RandomSelector(config.budget, seed)


def _random_restore(config: SelectorConfig, data: bytes) -> Selector:
    return RandomSelector.from_state(config.budget, data)


STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        "stream": Strategy(StreamSelector, StreamSelector.from_state),
        "random": Strategy(_random, _random_restore),
    }
)
