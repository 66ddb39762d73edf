"""The selection rules that were tried for the default selector, in the same closed loop.

Run from the repository root, one stream per call (about 20 s per strategy and seed)::

    .venv/bin/python -m bench.evaluation_variants --stream iid --seeds 5 \\
        --strategies random,hard-margin,hard-entropy,hard-lc,soft-margin-4,soft-margin-32

Not part of ``make bench``: these are the prototypes behind the "what lost" table of
docs/evaluation.md, kept so that every figure there can be rerun. Each prototype is a plain
Python rule over the current model's ``predict_proba`` (not the vehicle's code, which is
``ours`` in :mod:`ingest_service.evaluation.strategies`); all hold the budget with the same
integral correction as :class:`selector.budget.BudgetController` (deficit clamped to
[-20, +80] selections, time constant 20 / rate frames) and rank each frame's utility in the
last 1,000 utilities:

* ``hard-<u>``: select when the utility's rank is in the top ``r_eff`` (the product's rule),
  utility ``u`` = ``margin`` (1 - (p1 - p2)), ``entropy`` (normalised) or ``lc`` (1 - p1);
  ``-keep`` keeps the window across refits, otherwise it restarts at every refit;
* ``soft-margin-<g>``: probabilistic, P(select) = r_eff * (g + 1) q^g / c (q the rank as a
  share, c the exact normaliser for the window's size): g = 0 is random, large g the hard rule;
* ``soft-margin-4-explore20``: the same with 20 % of the weight uniform (an exploration share);
* ``hard-margin-cold20``: the first 20 selections at random (a cold start in selections);
* ``novelty-<p>``: ``p`` % of the budget on feature novelty (the smallest cosine distance
  to every frame selected so far, in the stream's features), the rest on the hard margin rule.

Every other name is a strategy of the harness (``random``, ``ours``, ``skactiveml-split``, ...).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from bisect import bisect_left, bisect_right, insort

import numpy as np
from numpy.typing import NDArray

from ingest_service.evaluation.learners import make_learner
from ingest_service.evaluation.loop import LoopConfig, RunResult, run_loop
from ingest_service.evaluation.metrics import MeanSd, summarize
from ingest_service.evaluation.strategies import STRATEGIES, Frame, Strategy, make_strategy
from ingest_service.evaluation.streams import STREAM_KINDS, StreamSpec, build_stream

WINDOW = 1000
BOUND = 20.0


def utility(p: NDArray[np.float64], kind: str) -> float:
    """Uncertainty of one probability vector: ``margin``, ``entropy`` or ``lc``."""
    if kind == "entropy":
        q = p[p > 0]
        return float(-(q * np.log(q)).sum() / math.log(len(p)))
    s = np.sort(p)
    if kind == "margin":
        return float(1.0 - (s[-1] - s[-2]))
    if kind == "lc":
        return float(1.0 - s[-1])
    raise ValueError(f"utility must be margin, entropy or lc, got {kind!r}")


class RankWindow:
    """The last ``WINDOW`` values, sorted; the rank of a new value as a share in (0, 1)."""

    def __init__(self) -> None:
        self.ring: list[float] = []
        self.sorted: list[float] = []

    def share(self, v: float) -> float:
        lo, hi = bisect_left(self.sorted, v), bisect_right(self.sorted, v)
        return (lo + (hi - lo) / 2 + 0.5) / (len(self.sorted) + 1)

    def push(self, v: float) -> None:
        self.ring.append(v)
        insort(self.sorted, v)
        if len(self.ring) > WINDOW:
            del self.sorted[bisect_left(self.sorted, self.ring.pop(0))]

    def clear(self) -> None:
        self.ring, self.sorted = [], []


class Prototype:
    """One of the rules of the module docstring."""

    def __init__(
        self,
        name: str,
        rate: float,
        seed: int,
        *,
        kind: str = "margin",
        gamma: float | None = None,
        explore: float = 0.0,
        keep: bool = False,
        cold: int = 0,
        novelty_share: float = 0.0,
    ) -> None:
        self.name = name
        self.rate = rate
        self.kind, self.gamma, self.explore, self.keep, self.cold = kind, gamma, explore, keep, cold
        self.novelty_share = novelty_share
        self.rng = np.random.default_rng(seed + 999)
        self.window = RankWindow()
        self.novelty = RankWindow()
        self.memory: list[NDArray[np.float64]] = []
        self.seen = 0
        self.selected = 0
        self._norm: dict[int, float] = {}

    def model_changed(self) -> None:
        if not self.keep:
            self.window.clear()

    def _weight(self, q: float | NDArray[np.float64]) -> float | NDArray[np.float64]:
        g = self.gamma if self.gamma is not None else 0.0
        return self.explore + (1.0 - self.explore) * (g + 1.0) * np.power(q, g)

    def _normaliser(self, m: int) -> float:
        if m not in self._norm:
            self._norm[m] = float(np.mean(self._weight((np.arange(m + 1) + 0.5) / (m + 1))))
        return self._norm[m]

    def select(self, frame: Frame) -> bool:
        u = utility(frame.probs, self.kind)
        owed = min(4 * BOUND, max(-BOUND, self.rate * self.seen - self.selected))
        r = min(1.0, max(0.0, self.rate + owed * self.rate / BOUND))
        q = self.window.share(u)
        e = frame.features.astype(np.float64)
        e = e / (np.linalg.norm(e) + 1e-12)
        take: bool
        if self.selected < self.cold:
            take = bool(self.rng.random() < r)
        elif self.novelty_share:
            nov = float(((1 - np.asarray(self.memory) @ e) / 2).min()) if self.memory else 1.0
            take = q > 1 - (1 - self.novelty_share) * r
            take = take or self.novelty.share(nov) > 1 - self.novelty_share * r
            self.novelty.push(nov)
        elif self.gamma is None:
            take = q > 1 - r
        else:
            p = r * float(self._weight(q)) / self._normaliser(len(self.window.sorted))
            take = bool(self.rng.random() < p)
        self.window.push(u)
        if take and self.novelty_share:
            self.memory.append(e)
        self.seen += 1
        self.selected += take
        return take


def prototype(name: str, rate: float, seed: int) -> Strategy | None:
    """The prototype called ``name``, or ``None`` if it is not one."""
    parts = name.split("-")
    if parts[0] == "hard" and len(parts) >= 2:
        return Prototype(
            name,
            rate,
            seed,
            kind=parts[1],
            keep="keep" in parts,
            cold=20 if "cold20" in parts else 0,
        )
    if parts[0] == "soft" and len(parts) >= 3:
        explore = 0.2 if "explore20" in parts else 0.0
        return Prototype(name, rate, seed, kind=parts[1], gamma=float(parts[2]), explore=explore)
    if parts[0] == "novelty" and len(parts) == 2:
        return Prototype(name, rate, seed, novelty_share=float(parts[1]) / 100)
    return None


def run(kind: str, names: list[str], seeds: int, learner: str) -> list[RunResult]:
    spec = StreamSpec(source="fashion-mnist", kind=kind, frames=5000, holdout=2000, initial=10)
    runs = []
    for seed in range(seeds):
        stream = build_stream(spec, seed)
        for name in names:
            strategy = prototype(name, 0.05, seed)
            if strategy is None:
                strategy = make_strategy(name, 0.05, seed, stream.dim)
            model = make_learner(learner, stream.classes, seed)
            runs.append(run_loop(stream, strategy, model, LoopConfig(), seed=seed, budget=0.05))
    return runs


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.evaluation_variants", description=__doc__)
    p.add_argument("--stream", choices=STREAM_KINDS, default="iid")
    p.add_argument("--strategies", default="random,hard-margin,hard-entropy,ours")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--learner", default="logreg")
    args = p.parse_args(argv)
    names = ["random", *(n for n in args.strategies.split(",") if n and n != "random")]
    for n in names:
        if n not in STRATEGIES and prototype(n, 0.05, 0) is None:
            print(f"unknown strategy {n!r}", file=sys.stderr)
            return 2
    import sklearn.linear_model  # noqa: F401  (load its pools before limiting them)
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    start = time.perf_counter()
    with threadpool_limits(limits=1):
        runs = run(args.stream, names, args.seeds, args.learner)
    metric = "macro_f1" if args.stream == "rare_late" else "accuracy"
    table = summarize(runs, metric=metric)
    print(f"# fashion-mnist/{args.stream}, {args.seeds} seeds, {time.perf_counter() - start:.0f} s")
    print("| strategy | labels | final acc | final macro-F1 | mean acc | AULC | at 50 % | rare |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, row in table.items():

        def f(key: str, row: dict[str, MeanSd] = row) -> str:
            mean = row[key].mean
            return "-" if mean is None else f"{mean:.3f}"

        print(
            f"| {name} | {f('labels_used')[:-2]} | {f('final_accuracy')} | {f('final_macro_f1')} "
            f"| {f('stream_mean_accuracy')} | {f('aulc')} | {f('at_50')} | {f('rare_labels')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
